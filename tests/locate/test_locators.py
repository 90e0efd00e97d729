import numpy as np
import pytest

from geoloc_core.base.geo import haversine_km
from geoloc_core.locate.locators import (
    LocatorConfig,
    fit_regressor,
    fit_verifier,
    load_locator,
    locator_meta,
    save_locator,
)

FAST = LocatorConfig(epochs=60, batch_size=64)


def _photos(n_sites: int = 30, per_site: int = 4, noise: float = 0.05, seed: int = 0):
    """Sites scattered over ~1 degree; each photo's embedding is a fixed smooth function of its site, plus noise."""
    rng = np.random.default_rng(0)
    site_lat, site_lon = 45 + rng.random(n_sites), 16 + rng.random(n_sites)
    w = rng.normal(size=(6, 32))
    feats = np.column_stack([np.sin(3 * site_lat), np.cos(3 * site_lat), np.sin(3 * site_lon), np.cos(3 * site_lon),
                             site_lat - 45.5, site_lon - 16.5])
    site = np.repeat(np.arange(n_sites), per_site)
    emb = feats[site] @ w + np.random.default_rng(seed).normal(scale=noise * 3, size=(len(site), 32))
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), site_lat, site_lon, site


def test_verifier_picks_the_true_site_among_all_candidates():
    emb, site_lat, site_lon, site = _photos()
    verifier = fit_verifier(emb, site_lat[site], site_lon[site], site, FAST)
    query, _, _, q_site = _photos(seed=1)  # new photos of the same sites
    scores = verifier.scores(query, np.tile(site_lat, (len(query), 1)), np.tile(site_lon, (len(query), 1)))
    assert scores.shape == (len(query), 30) and np.abs(scores).max() <= 1 + 1e-5
    assert (scores.argmax(1) == q_site).mean() > 0.6  # chance is 1/30


def test_regressor_beats_answering_the_centre(tmp_path):
    emb, site_lat, site_lon, site = _photos()
    regressor = fit_regressor(emb, site_lat[site], site_lon[site], FAST)
    query, _, _, q_site = _photos(seed=1)
    err = haversine_km(*regressor.predict(query), site_lat[q_site], site_lon[q_site])
    centre = haversine_km(site_lat.mean(), site_lon.mean(), site_lat[q_site], site_lon[q_site])
    assert np.median(err) < 0.5 * np.median(centre)
    save_locator(regressor, tmp_path / "r.safetensors",
                 locator_meta("regressor", FAST, 32, extent_rad=regressor.extent_rad))
    assert np.allclose(load_locator(tmp_path / "r.safetensors").predict(query), regressor.predict(query))


def test_verifier_round_trips_through_safetensors(tmp_path):
    emb, site_lat, site_lon, site = _photos(n_sites=8)
    verifier = fit_verifier(emb, site_lat[site], site_lon[site], site, LocatorConfig(epochs=2))
    save_locator(verifier, tmp_path / "v.safetensors",
                 locator_meta("verifier", verifier.cfg, 32, extent_rad=verifier.extent_rad))
    loaded = load_locator(tmp_path / "v.safetensors")
    assert np.allclose(loaded.gps_codes(site_lat, site_lon), verifier.gps_codes(site_lat, site_lon), atol=1e-6)
    (tmp_path / "v.json").write_text('{"kind": "pickle"}')
    with pytest.raises(ValueError, match="unknown locator kind"):
        load_locator(tmp_path / "v.safetensors")


def test_saving_a_locator_writes_each_file_through_a_temp_file_of_its_own(tmp_path, monkeypatch):
    """Two writers of one locator (the CLI and the app building one store) must not share a temp file: the weights'
    used to go through a fixed-name `v.tmp`, which another writer's rename could move into place half written."""
    from geoloc_core.base import storage

    emb, site_lat, site_lon, site = _photos(n_sites=8)
    verifier = fit_verifier(emb, site_lat[site], site_lon[site], site, LocatorConfig(epochs=2))
    another = tmp_path / "v.tmp"
    another.write_bytes(b"another writer's weights, half written")
    written = []
    real = storage.atomic_write
    monkeypatch.setattr(storage, "atomic_write",
                        lambda path, write, *mode: written.append(path.name) or real(path, write, *mode))
    meta = locator_meta("verifier", verifier.cfg, 32, extent_rad=verifier.extent_rad)
    save_locator(verifier, tmp_path / "v.safetensors", meta)
    assert another.read_bytes() == b"another writer's weights, half written"  # not taken over, not renamed away
    assert sorted(written) == ["v.json", "v.safetensors"]  # fsynced, then renamed: whole or not there
    loaded = load_locator(tmp_path / "v.safetensors")
    assert np.allclose(loaded.gps_codes(site_lat, site_lon), verifier.gps_codes(site_lat, site_lon), atol=1e-6)
