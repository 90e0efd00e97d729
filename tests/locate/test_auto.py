"""`--method auto`: the database's own inner folds choose the predictor's settings, recorded; nested in compare."""

import numpy as np
import pytest

from geoloc_core.analysis.compare import AUTO_ROW, compare_methods
from geoloc_core.config import CompareConfig, CrossValConfig, PredictConfig, PredictorConfig
from geoloc_core.evaluate.splits import fold_units
from geoloc_core.evaluate.stats import location_folds
from geoloc_core.locate.auto import auto_grid, evidence_table
from geoloc_core.locate.store import open_predictor, predictor_store
from geoloc_core.runs.folders import Run


def test_auto_grid_is_small_distinct_and_starts_with_the_given_settings():
    grid = auto_grid(PredictorConfig(method="auto"))
    assert 2 <= len(grid) <= 6 and len(set(grid.values())) == len(grid)
    # method fixed: a chosen setting never recurses
    assert list(grid)[0] == "given" and grid["given"] == PredictorConfig()
    assert grid["regression"].sources == ("regression",) and "regression" in grid["verified + regression"].sources
    assert not grid["kNN vote"].verify
    assert "no region prior" not in auto_grid(PredictorConfig(region_weight=0.0))  # the same as the given: dropped


def test_auto_records_its_choice_in_the_saved_predictor(tiny_run):
    cfg = PredictConfig(predictor=PredictorConfig(k=5, method="auto"), device="cpu")
    predictor = open_predictor(tiny_run, cfg)
    choice = predictor.choice
    grid = auto_grid(cfg.predictor)
    assert choice["chosen"] in grid and predictor.cfg == grid[choice["chosen"]]
    assert set(choice["median_km"]) == set(grid) and choice["inner_folds"] == 3 and choice["places"] == 20
    best = min(m for m, _, _ in choice["median_km"].values())
    assert choice["median_km"][choice["chosen"]][0] == best  # the lowest inner-fold median wins
    assert all(lo <= m <= hi for m, lo, hi in choice["median_km"].values())
    meta = predictor_store(tiny_run, cfg.predictor, "all", cfg.graph).read_meta()
    assert meta["auto"]["chosen"] == choice["chosen"] and meta["config"]["method"] == "fixed"
    assert open_predictor(tiny_run, cfg).choice == choice  # read back from the saved meta
    table = evidence_table(choice)
    assert table["chosen"].sum() == 1 and len(table) == len(grid)
    assert any(store.read_meta().get("auto") for store in Run(tiny_run).predictors())  # what the Evaluate page lists


@pytest.mark.slow  # every method, twice, and auto's inner folds inside each
def test_compare_over_blocks_reports_auto_nested_and_the_radius_coverage_per_fold(tiny_run, monkeypatch):
    from geoloc_core.analysis import compare

    databases = []  # every database a fold's predictors are fitted on: its groups are what calibration holds out
    for name in ("fit_predictor", "fit_auto"):
        real = getattr(compare, name)
        monkeypatch.setattr(compare, name, lambda db, *a, real=real, **k: databases.append(db) or real(db, *a, **k))
    cv = CrossValConfig(folds=2, block_km=30.0)  # 16 blocks: 8 to each fold's database, enough to calibrate a radius
    result = compare_methods(tiny_run, CompareConfig(descriptors=("cls",)), PredictorConfig(k=5, method="auto"), cv=cv)
    table = Run(tiny_run).photo_table()
    units = fold_units(table.frame["group"].to_numpy(), table.lat_deg, table.lon_deg, 30.0)
    fold = location_folds(units, 2, 0)
    assert 2 <= len(set(units)) < 20 and [f["n_photos"] for f in result.folds] == np.bincount(fold).tolist()
    # every database's inner hold-outs are blocks (calibration never holds out a place and keeps its block's other
    # places), while its places stay the verifier's and the probe's groups
    assert databases and all(db["holdout"].str.startswith("block ").all() for db in databases)
    assert all(not db["group"].str.startswith("block ").any() for db in databases)
    for f in result.folds:
        assert 0 <= f["within_radius_lo"] <= f["within_radius"] <= f["within_radius_hi"] <= 1
        assert f["auto_choice"] in auto_grid(PredictorConfig(k=5, method="auto"))
    rows = {r["method"]: r for r in result.rows}
    assert AUTO_ROW in rows and "verified: top1+clusters+gallery+regression" in rows and "verified: regression" in rows
    auto = [v for v in result.verdicts if v["comparison"].startswith(AUTO_ROW)]
    assert len(auto) == 1 and auto[0]["lo"] <= auto[0]["difference"] <= auto[0]["hi"]


def test_a_fold_without_a_calibrated_radius_reports_its_coverage_as_not_measured():
    from geoloc_core.analysis.compare import _within

    errors = np.array([0.5, 2.0, 9.0])
    assert _within(errors, 2.0).tolist() == [1.0, 1.0, 0.0]
    assert np.isnan(_within(errors, float("nan"))).all()  # too few blocks to calibrate: not "never within"
