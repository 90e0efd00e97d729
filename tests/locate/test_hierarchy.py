"""The hierarchy: classify the region first (a linear probe on the database), then retrieve and verify
within the top regions."""

import numpy as np
import pytest

from geoloc_core.config import SOURCES, PredictConfig, PredictorConfig
from geoloc_core.evaluate.linear_probe import as_linear, fit_linear_probe
from geoloc_core.locate.build import build_predictor
from geoloc_core.locate.predictor import candidates, locate, search_within, top_region_mask
from geoloc_core.locate.store import load_predictor, save_predictor
from geoloc_core.runs.folders import PredictorStore, Run


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_probe_as_one_weight_matrix_gives_the_pipeline_s_probabilities(n_classes):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(80, 6)) * rng.uniform(0.1, 5, 6) + rng.normal(size=6)
    labels = np.repeat(np.arange(n_classes) * 3, 80 // n_classes)  # labels need not be 0..R-1
    emb[:, 0] += labels
    pipeline = fit_linear_probe(emb, labels, np.arange(80) // 2)
    linear = as_linear(pipeline)
    assert np.array_equal(linear.classes, np.unique(labels))
    assert np.allclose(linear.log_proba(emb), pipeline.predict_log_proba(emb), atol=1e-8)


def test_answers_keep_to_the_top_regions_and_a_heavy_prior_picks_the_likeliest_region(tiny_run):
    emb = Run(tiny_run).read_embeddings()[0]
    # region centroids among the candidates: every region has some
    cfg = PredictorConfig(k=5, sources=SOURCES, top_regions=1)
    hier = build_predictor(tiny_run, cfg)
    assert hier.region_probe is not None and len(hier.region_probe.classes) >= 2
    top = top_region_mask(hier.region_probe.log_proba(emb), 1)
    _, ids = search_within(hier, emb, top)
    assert np.take_along_axis(top, hier._db_region_class[ids], 1).all()  # retrieval kept to each photo's top region
    lat, lon, _, _ = locate(hier, emb, emb)
    # so did the answer
    assert (hier.region_class_at(lat, lon) >= 0).all() and top[np.arange(len(emb)),
                                                               hier.region_class_at(lat, lon)].all()
    flat = build_predictor(tiny_run, PredictorConfig(k=5, sources=SOURCES, region_weight=0.0))
    f_lat, f_lon, _, _ = locate(flat, emb, emb)
    # without it, some answers lie elsewhere
    assert not top[np.arange(len(emb)), hier.region_class_at(f_lat, f_lon)].all()

    heavy = build_predictor(tiny_run, PredictorConfig(k=5, sources=SOURCES, region_weight=1e6))
    sims, ids = heavy.index.search(emb, 5)
    c_lat, c_lon = candidates(heavy, emb, sims, ids)
    log_p = heavy.region_probe.log_proba(emb)
    best_p = np.take_along_axis(log_p, heavy.region_class_at(c_lat, c_lon), 1).max(1)
    lat, lon, _, _ = locate(heavy, emb, emb)
    assert np.allclose(log_p[np.arange(len(emb)), heavy.region_class_at(lat, lon)], best_p)


def test_a_saved_hierarchical_predictor_answers_as_it_did_before_saving(tiny_run, tmp_path):
    built = build_predictor(tiny_run, PredictorConfig(k=5, top_regions=1, region_weight=1.0))
    store = PredictorStore(tmp_path / "store")
    save_predictor(built, store)
    loaded = load_predictor(store, tiny_run, PredictConfig(device="cpu", region_from="nearest"))
    assert np.array_equal(loaded.region_probe.weights, built.region_probe.weights)
    emb = Run(tiny_run).read_embeddings()[0]
    for a, b in zip(locate(built, emb, emb), locate(loaded, emb, emb)):
        assert np.array_equal(a, b)
    # no hierarchy: no probe left behind
    save_predictor(build_predictor(tiny_run, PredictorConfig(k=5, region_weight=0.0)), store)
    assert (not store.region_probe.exists() and load_predictor(store, tiny_run, PredictConfig(device="cpu"))
            .region_probe is None)
