import numpy as np
import pytest

from geoloc_core.config import LocatorConfig, PredictConfig, PredictorConfig
from geoloc_core.locate.build import build_predictor
from geoloc_core.locate.locators import fit_verifier
from geoloc_core.locate.predict import predict
from geoloc_core.locate.predictor import locate
from geoloc_core.locate.retrieval import propagate_over_sites, retrieval_vectors
from geoloc_core.locate.store import load_predictor, save_predictor
from geoloc_core.runs.folders import PredictorStore, Run

CPU = PredictConfig(device="cpu")


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _index_vectors(predictor) -> np.ndarray:
    return predictor.index.reconstruct_n(0, predictor.index.ntotal)


def test_propagation_replaces_a_photo_by_its_neighbour_sites_and_leaves_an_isolated_site_alone():
    rng = np.random.default_rng(0)
    vectors = _unit(rng.normal(size=(3, 8))).astype(np.float32)
    alone = propagate_over_sites(vectors, np.full(3, 45.0), np.full(3, 16.0), 1.0)
    assert np.allclose(alone, vectors, atol=1e-6)  # one site: no neighbour, nothing to mix in
    lat, lon = np.array([45.0, 45.0, 45.1]), np.array([16.0, 16.0, 16.1])  # two photos at site A, one at site B
    full = propagate_over_sites(vectors, lat, lon, 1.0)
    assert np.allclose(full[:2], vectors[2], atol=1e-6)  # A's photos take B's vector, not their own site's
    assert np.allclose(full[2], _unit(vectors[0] + vectors[1]), atol=1e-6)  # B takes A's unit mean
    half = propagate_over_sites(vectors, lat, lon, 0.5)
    assert np.allclose(half[0], _unit(0.5 * vectors[0] + 0.5 * vectors[2]), atol=1e-6)
    assert propagate_over_sites(vectors, lat, lon, 0.0) is vectors


def test_geo_retrieval_ranks_the_database_by_the_cosine_of_the_verifier_s_image_codes(tiny_run):
    emb = Run(tiny_run).read_embeddings()[0]
    predictor = build_predictor(tiny_run, PredictorConfig(k=5, retrieval="geo"))
    codes = predictor.verifier.image_codes_np(emb)
    assert np.allclose(_index_vectors(predictor), codes, atol=1e-5)  # the index holds codes, not CLS embeddings
    queries = emb[:6] + 0.05 * np.random.default_rng(1).normal(size=(6, emb.shape[1])).astype(np.float32)
    _, _, sims, ids = locate(predictor, queries, queries)
    by_code = np.argsort(-(predictor.verifier.image_codes_np(queries) @ codes.T), axis=1)[:, :5]
    assert np.array_equal(ids, by_code)
    assert not np.array_equal(ids, np.argsort(-(queries @ emb.T), axis=1)[:, :5])  # another ranking than the CLS one


def test_both_retrieval_averages_the_descriptor_and_code_cosines(tiny_run):
    emb = Run(tiny_run).read_embeddings()[0]
    predictor = build_predictor(tiny_run, PredictorConfig(k=3, retrieval="both"))
    codes = predictor.verifier.image_codes_np(emb)
    assert np.allclose(_index_vectors(predictor), np.concatenate([emb, codes], axis=1) / np.sqrt(2), atol=1e-5)
    _, _, sims, ids = locate(predictor, emb[:4], emb[:4])
    expected = (np.sum(emb[:4] * emb[ids[:, 0]], 1) + np.sum(codes[:4] * codes[ids[:, 0]], 1)) / 2
    assert np.allclose(sims[:, 0], expected, atol=1e-5)


def test_a_propagated_database_is_indexed_propagated_and_queried_plain(tiny_run):
    run = Run(tiny_run)
    emb, table = run.read_embeddings()[0], run.photo_table()
    predictor = build_predictor(tiny_run, PredictorConfig(k=3, propagate=1.0))
    expected = propagate_over_sites(emb, table.lat_deg, table.lon_deg, 1.0)
    assert np.allclose(_index_vectors(predictor), expected, atol=1e-5) and not np.allclose(expected, emb, atol=1e-3)
    _, _, sims, ids = locate(predictor, emb[:4], emb[:4])
    assert np.allclose(sims[:, 0], np.sum(emb[:4] * expected[ids[:, 0]], 1), atol=1e-5)


def test_a_saved_geo_propagated_predictor_answers_as_the_fitted_one_through_predict(tiny_run, tmp_path):
    cfg = PredictorConfig(k=4, retrieval="geo", propagate=0.5)
    fitted = build_predictor(tiny_run, cfg)
    store = PredictorStore(tmp_path / "pred")
    save_predictor(fitted, store)
    loaded = load_predictor(store, tiny_run, CPU)
    assert loaded.cfg == cfg
    emb = Run(tiny_run).read_embeddings()[0][:8]
    for a, b in zip(locate(fitted, emb, emb), locate(loaded, emb, emb)):
        assert np.allclose(a, b, atol=1e-5)
    path = loaded.db["path"].iat[0]
    [pred], _ = predict([path], loaded)
    lat, lon, sims, ids = locate(fitted, Run(tiny_run).read_embeddings()[0][:1], Run(tiny_run).read_embeddings()[0][:1])
    # predict queries the same space
    assert [n.path for n in pred.neighbours] == list(loaded.db["path"].to_numpy()[ids[0]])
    assert np.isclose(pred.lat_deg, lat[0]) and np.isclose(pred.lon_deg, lon[0])


def test_geo_retrieval_needs_the_verifier(tiny_run):
    with pytest.raises(ValueError, match="verifier"):
        build_predictor(tiny_run, PredictorConfig(retrieval="geo", verify=False))
    with pytest.raises(ValueError, match="unknown retrieval"):
        retrieval_vectors("text", np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32), None)


def test_haversine_smoothing_of_the_verifier_softens_only_its_positives(tiny_run):
    run = Run(tiny_run)
    emb, table = run.read_embeddings()[0], run.photo_table()
    groups = table.frame["group"].to_numpy()

    def weights(smooth: float) -> np.ndarray:
        cfg = LocatorConfig(epochs=3, smooth=smooth)
        return fit_verifier(emb, table.lat_deg, table.lon_deg, groups, cfg).image[0].weight.detach().numpy()

    plain = weights(0.0)
    assert np.array_equal(weights(1e-9), plain)  # vanishing smoothing: only a photo's own location is positive
    assert not np.allclose(weights(0.5), plain)
