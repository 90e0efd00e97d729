"""Calibrating a predictor (`locate.build.fit_predictor`): its bandwidth, familiarity and radius are measured on photos
its embeddings never learnt from."""

import numpy as np
import pytest

from geoloc_core.config import FinetuneConfig, PredictorConfig
from geoloc_core.learn import finetune as ft
from geoloc_core.locate import build, calibration
from geoloc_core.locate.build import build_predictor
from geoloc_core.locate.calibration import CALIBRATION_FOLDS
from geoloc_core.runs.folders import Run

CFG = FinetuneConfig(graph="dt", rounds=1, epochs=2, unfrozen_blocks=1, batch_size=8, device="cpu")


@pytest.fixture
def tuned_run(tiny_run):
    list(ft.finetune_rounds(tiny_run, CFG))
    return tiny_run


def _photos_of(queries: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """The run's photo whose (unit) embedding each query row is."""
    best = np.argmax(queries @ emb.T, axis=1)
    assert np.allclose(np.einsum("qd,qd->q", queries, emb[best]), 1.0, atol=1e-5)
    return best


@pytest.mark.parametrize("database", ["all", "train"])
def test_a_fine_tuned_predictor_is_calibrated_only_on_photos_its_backbone_never_saw(tuned_run, database, monkeypatch):
    run = Run(tuned_run)
    trained = ~run.read_split()[1]  # the fine-tuning trains on the run's training photos
    emb = np.load(run.finetune_round("dt", 1).embeddings(1))
    searched, located = [], []  # the familiarity's and bandwidth's queries, and the radius's
    real_search, real_locate = calibration.search, build.locate
    monkeypatch.setattr(calibration, "search", lambda index, q, k: searched.append(q) or real_search(index, q, k))
    monkeypatch.setattr(build, "locate", lambda p, desc, e, *a: located.append(e) or real_locate(p, desc, e, *a))
    predictor = build_predictor(tuned_run, PredictorConfig(k=5, ft_round=1), database)
    [familiar], [radius] = searched, located
    for queries in (familiar, radius):
        photos = _photos_of(queries, emb)
        assert not trained[photos].any(), f"calibrated on {trained[photos].sum()} of the backbone's training photos"
    assert set(_photos_of(radius, emb)) == set(np.flatnonzero(~trained))  # every photo it never saw
    assert len(predictor.calibration_errors_km) == (~trained).sum() and np.isfinite(predictor.radius_km)
    assert len(predictor.familiar_sims) == (~trained).sum()


def test_pretrained_embeddings_are_calibrated_on_every_database_place_held_out_of_a_calibrator(tiny_run, monkeypatch):
    """Cross-fitting: each calibration predictor leaves out one fold of places, every place is left out once, and each
    photo's calibration error comes from the calibrator that never saw its place."""
    located = []
    real_locate = build.locate
    monkeypatch.setattr(build, "locate", lambda p, desc, e, *a: located.append(p) or real_locate(p, desc, e, *a))
    predictor = build_predictor(tiny_run, PredictorConfig(k=5))
    assert len(located) == CALIBRATION_FOLDS
    places = predictor.db["group"]
    left_out = [set(places) - set(c.db["group"]) for c in located]
    assert all(left_out) and set().union(*left_out) == set(places)
    assert sum(len(s) for s in left_out) == places.nunique()  # each place left out exactly once
    assert (len(predictor.calibration_errors_km) == len(predictor.db) and np.isfinite(predictor.calibration_errors_km)
            .all())
    assert len(predictor.familiar_sims) == len(predictor.db)  # every database photo, its own location left out


def test_a_holdout_column_makes_each_calibrator_leave_out_whole_units(tiny_run, monkeypatch):
    """Under `--block-km` a database carries `holdout` (its blocks): every calibrator leaves out whole blocks, never a
    place whose block-mates it keeps; the places stay the verifier's groups."""
    located = []
    real_locate = build.locate
    monkeypatch.setattr(build, "locate", lambda p, desc, e, *a: located.append(p) or real_locate(p, desc, e, *a))
    run = Run(tiny_run)
    table, (emb, _) = run.photo_table(), run.read_embeddings()
    frame = table.frame.assign(lat_deg=table.lat_deg, lon_deg=table.lon_deg, region=-1, path=table.frame["path"])
    db = frame[["lat_deg", "lon_deg", "group", "region", "path"]].assign(
        holdout=[f"block {int(g[1:]) // 2}" for g in frame["group"]])  # 10 blocks of 2 places
    predictor = build.fit_predictor(db, emb, None, PredictorConfig(k=5))
    blocks = dict(zip(db["group"], db["holdout"]))
    for calibrator in located:
        left_out = set(db["group"]) - set(calibrator.db["group"])
        assert left_out and {b for g, b in blocks.items() if g in left_out}.isdisjoint(calibrator.db["holdout"])
    assert np.isfinite(predictor.radius_km) and predictor.db["group"].nunique() == 20
