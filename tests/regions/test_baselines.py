import numpy as np
import pandas as pd
import pytest

from conftest import TINY
from geoloc_core.analysis.experiment import cross_validate, run_experiment
from geoloc_core.cli import main
from geoloc_core.config import CrossValConfig, FinetuneConfig, RegionConfig
from geoloc_core.evaluate.metrics import chance_metrics
from geoloc_core.regions.baselines import cell_combos, combine_log_probs, cplanet_partitions, mesh_labels
from geoloc_core.runs.folders import Run


def world(seed=0, n=300):
    rng = np.random.default_rng(seed)
    lat, lon = 45 + rng.random(n), 15 + 2 * rng.random(n)
    xy = np.column_stack([(lon - 16) * 78_000, (lat - 45.5) * 111_000])
    return lat, lon, xy, rng.random(n) < 0.8


def test_mesh_matches_the_target_count_and_cells_are_squareish():
    lat, lon, xy, train = world()
    for target in (4, 9, 25):
        labels, cell_deg = mesh_labels(lat, lon, xy, train, target)
        assert abs(labels[train].max() + 1 - target) <= max(1, target // 5)
        assert set(labels[~train]) <= set(labels[train])  # held-out photos fall in trained cells
    same_cell = labels[:, None] == labels[None]
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    assert d[same_cell].max() < 2 * cell_deg * 111_000 * 1.5  # no cell wider than ~its diagonal


def test_cplanet_cells_are_intersections_and_combination_picks_the_agreed_cell():
    lat, lon, xy, train = world(1)
    parts, cells = cplanet_partitions(xy, train, target=12)
    assert len(parts) == 3
    combos = cell_combos(parts, cells, train)
    keys = np.stack(parts, axis=1)
    assert (combos[cells[train]] == keys[train]).all()
    assert len(np.unique(keys[train], axis=0)) == cells.max() + 1
    # heads that each put all mass on one cell's regions must pick that cell
    target_cell = 3
    log_probs = [np.log(np.where(np.arange(p.max() + 1) == combos[target_cell, i], 0.97, 0.03 / p.max()))[None]
                 for i, p in enumerate(parts)]
    assert combine_log_probs(log_probs, combos).tolist() == [target_cell]


def test_experiment_table_has_every_row(tiny_run, tmp_path):
    cfg = FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")
    table = run_experiment(tiny_run, cfg, out_dir=tmp_path / "exp")
    methods = list(zip(table["graph"], table["method"]))
    per_graph = ["w/o", "w/o (cosine head)", "FT1"]
    assert methods == [(g, m) for g in ("dt", "gg", "rng") for m in per_graph] + [("", "Mesh"), ("", "CPlaNet")]
    assert table[["acc", "chance_acc", "majority_acc", "macro_f1", "median_km", "n_regions"]].notna().all().all()
    assert table["chance_acc"].between(0, 1).all() and table["majority_acc"].between(0, 1).all()
    assert pd.read_csv(tmp_path / "exp" / "table.csv").shape[0] == 11
    md = (tmp_path / "exp" / "table.md").read_text()
    assert md.startswith("| graph | method | acc | chance_acc |") and "CPlaNet" in md


def test_a_run_without_dt_gets_its_baseline_rows_too(manifest_folder, tiny_checkpoint, isolated_cache, tmp_path):
    """The baselines were built over the config's own graph (DT) and failed, after all the fine-tuning, on a run (or a
    fold) that has none."""
    run = tmp_path / "run"
    assert main(["run", str(manifest_folder), "--run", str(run), "--test-frac", "0.25", "--model", TINY.name,
                 "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--graphs", "gg"]) == 0
    cfg = FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")
    table = run_experiment(run, cfg, graphs=("gg",), out_dir=tmp_path / "exp")
    assert list(zip(table["graph"], table["method"])) == [("gg", "w/o"), ("gg", "w/o (cosine head)"), ("gg", "FT1"),
                                                          ("", "Mesh"), ("", "CPlaNet")]
    assert table.loc[table["method"].isin(["Mesh", "CPlaNet"]), ["acc", "median_km"]].notna().all().all()


def test_the_like_for_like_row_trains_ft1s_head_on_the_frozen_backbone(tiny_run, tmp_path, monkeypatch):
    """w/o (cosine head) learns FT1's classes with FT1's head and schedule, only the backbone held still."""
    import geoloc_core.analysis.experiment as experiment

    trained = []
    real = experiment.train_fixed

    def spy(ctx, cfg, label_sets, epochs, backbone=True, r=0):
        trained.append((backbone, r, epochs, [labels.copy() for labels in label_sets]))
        return real(ctx, cfg, label_sets, epochs, backbone, r)

    monkeypatch.setattr(experiment, "train_fixed", spy)
    cfg = FinetuneConfig(rounds=1, epochs=2, unfrozen_blocks=1, batch_size=8, device="cpu")
    run_experiment(tiny_run, cfg, graphs=("dt",), out_dir=tmp_path / "exp")
    [(backbone, r, epochs, [labels])] = [t for t in trained if not t[0]]
    assert (backbone, r, epochs) == (False, 1, 2)
    ft1_classes = pd.read_csv(tmp_path / "exp" / "finetune_dt" / "regions_r0.csv")["region"].to_numpy()
    assert (labels == ft1_classes).all()


def test_chance_reference_by_hand():
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 2])
    is_test = np.array([False, False, False, False, True, True, True, True])  # train: 3/4 region 0, 1/4 region 1
    assert chance_metrics(labels,
                          is_test) == pytest.approx({"chance_acc": 0.75 * 0.25 + 0.25 * 0.5, "majority_acc": 0.25})


@pytest.mark.slow  # K experiments
def test_cross_validated_experiment_holds_out_every_location_once_with_intervals_and_verdicts(tiny_run, tmp_path):
    cfg = FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")
    out = tmp_path / "cv"
    table, verdicts = cross_validate(tiny_run, cfg, ("dt",), CrossValConfig(folds=3), out)
    photos = Run(tiny_run).photo_table().frame
    folds = [Run(out / f"fold{i}") for i in range(3)]
    held = np.array([f.read_split()[1] for f in folds])
    assert (held.sum(axis=0) == 1).all()  # each photo held out in exactly one fold
    for f, is_test in zip(folds, held):
        graph = f.site_graph("dt")
        held_sites = set(graph.site_of_photo[is_test])
        assert held_sites.isdisjoint(graph.edges.ravel())  # a fold's graph never touches its held-out locations
        assert set(photos["group"][is_test]).isdisjoint(photos["group"][~is_test])
    assert list(zip(table["graph"], table["method"])) == [("dt", "w/o"), ("dt", "w/o (cosine head)"), ("dt", "FT1"),
                                                          ("", "Mesh"), ("", "CPlaNet")]
    assert ((table["acc_lo"] <= table["acc"]) & (table["acc"] <= table["acc_hi"])).all() and (table["folds"] == 3).all()
    comparisons = set(zip(verdicts["comparison"], verdicts["metric"]))
    assert {("dt FT1 vs dt w/o (cosine head)", "acc"), ("dt FT1 vs dt w/o", "acc"),
            ("dt FT1 vs Mesh", "median_km")} <= comparisons
    # other partitions: accuracy is no like-for-like comparison there
    assert ("dt FT1 vs Mesh", "acc") not in comparisons
    tables = [f.experiment.table_csv for f in folds]
    written = [t.stat().st_mtime_ns for t in tables]
    again, _ = cross_validate(tiny_run, cfg, ("dt",), CrossValConfig(folds=3), out)  # resumes: no fold trained again
    assert [t.stat().st_mtime_ns for t in tables] == written
    pd.testing.assert_frame_equal(again, table)
    dt_epochs = [len(f.experiment.finetune("dt").read_metrics()) for f in folds]
    # the same folds, one more graph
    wider, _ = cross_validate(tiny_run, cfg, ("dt", "gg"), CrossValConfig(folds=3), out)
    # DT's fine-tuning kept, not redone
    assert [len(f.experiment.finetune("dt").read_metrics()) for f in folds] == dt_epochs
    assert ("gg", "FT1") in set(zip(wider["graph"], wider["method"]))
    cross_validate(tiny_run, cfg, ("dt",), CrossValConfig(folds=3), out)
    written = [t.stat().st_mtime_ns for t in tables]
    # the run's regions re-cut with another setting
    Run(tiny_run).record_config("regions", RegionConfig(resolution=3.0))
    cross_validate(tiny_run, cfg, ("dt",), CrossValConfig(folds=3), out)
    assert all(t.stat().st_mtime_ns != w for t, w in zip(tables, written))  # every fold cut again with it, not reused
    assert Run(out / "fold0").pipeline_config().regions.resolution == 3.0
    # another split, same folder
    other, _ = cross_validate(tiny_run, cfg, ("dt",), CrossValConfig(folds=3, fold_seed=1), out)
    assert [Run(out / f"fold{i}").read_split()[1].tolist() for i in range(3)] != held.tolist()  # cut again, not reused
    assert sorted(pd.read_csv(Run(out / "fold0").experiment.finetune("dt").held_out(1))["photo"]) == sorted(
        np.flatnonzero(Run(out / "fold0").read_split()[1]))  # its fine-tuning is the new split's
