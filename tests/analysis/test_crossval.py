"""The cross-validation engine that compare, experiment and levers share, on small hand-made answers."""

import numpy as np
import pandas as pd
import pytest

from geoloc_core.analysis.crossval import Folds, collect, informative, measures, paired_rows, summary, write_tables
from geoloc_core.runs.folders import Run


def answers_of(folds: Folds, error_km: np.ndarray, **columns: np.ndarray) -> list[pd.DataFrame]:
    """Per-fold answer tables, each in its held-out photos' order."""
    return [pd.DataFrame({"photo": np.flatnonzero(is_test), "error_km": error_km[is_test],
                          **{k: v[is_test] for k, v in columns.items()}}) for _, is_test in folds]


def test_folds_over_given_units_keep_each_unit_whole_and_resample_units():
    places = np.repeat(np.arange(24), 2)  # 48 photos, 2 per place
    blocks = places // 4  # 6 spatial blocks of 4 places: the unit a caller may pass instead of the place
    folds = Folds.over(blocks, 3, seed=2)
    for b in np.unique(blocks):
        assert len(set(folds.fold[blocks == b])) == 1  # a block never straddles two folds
    assert sorted(folds.order) == list(range(48)) and folds.k == 3
    assert [f for f, _ in folds] == [0, 1, 2]
    assert folds.resamples().draws.shape == (2000, 6)  # the bootstrap draws blocks, not photos
    assert not np.array_equal(Folds.over(blocks, 3, seed=3).fold, folds.fold)  # the seed decides


def test_collected_answers_are_every_photo_once_fold_by_fold():
    folds = Folds.over(np.repeat(np.arange(10), 3), 2)
    error = np.arange(30, dtype=float)
    collected = collect(answers_of(folds, error), folds)
    assert (np.array_equal(collected["photo"], folds.order)
            and np.array_equal(collected["fold"], folds.fold[folds.order]))
    other = Folds.over(np.repeat(np.arange(10), 3), 2, seed=1)
    with pytest.raises(RuntimeError, match="not this cross-validation's photos"):
        collect(answers_of(other, error), folds)  # answers of another split are refused, never graded


def test_an_answer_table_gives_accuracy_km_figures_and_its_per_photo_shares():
    rng = np.random.default_rng(0)
    folds = Folds.over(np.repeat(np.arange(20), 2), 4)
    error = rng.uniform(0, 50, size=40)
    region, pred, hit = rng.integers(0, 3, 40), rng.integers(0, 3, 40), rng.random(40) < 0.3
    answers = collect(answers_of(folds, error, region=region, pred=pred, **{"R@1": hit}), folds)
    figures = measures(answers)
    assert list(figures)[:2] == ["acc", "median_km"] and list(figures)[-1] == "R@1"
    row = summary(answers, folds.resamples())
    assert row["acc"] == pytest.approx(np.mean(region == pred)) and row["median_km"] == pytest.approx(np.median(error))
    assert row["R@1"] == pytest.approx(hit.mean()) and row["acc@25km"] == pytest.approx(np.mean(error <= 25))
    assert row["median_km_lo"] <= row["median_km"] <= row["median_km_hi"]


def test_paired_rows_compare_the_informative_figures_on_the_same_resampled_places():
    folds = Folds.over(np.repeat(np.arange(40), 2), 2)
    # 25 % within 0.1 km, 50 % within 0.5 km, 75 % within 1 km, all within 25
    near = np.tile([0.05, 0.3, 0.8, 20.0], 20)
    far = near + 100.0
    ours, theirs = (measures(collect(answers_of(folds, e), folds)) for e in (near, far))
    metrics = informative(ours)
    assert metrics == [("median_km", False), ("acc@0.1km", True), ("acc@0.5km", True), ("acc@1km", True)]
    rows = paired_rows("near vs far", ours, theirs, metrics, folds.resamples())
    assert [r["metric"] for r in rows] == [m for m, _ in metrics]
    assert all(r["verdict"] == "better" and r["comparison"] == "near vs far" for r in rows)


def test_tables_are_written_and_a_stale_one_removed(tmp_path):
    stale = tmp_path / "verdicts.csv"
    stale.write_text("old")
    write_tables({tmp_path / "table.csv": pd.DataFrame({"method": ["a"], "acc": [0.5]}),
                  tmp_path / "table.md": "| a |\n", stale: None})
    assert pd.read_csv(tmp_path / "table.csv").to_dict("records") == [{"method": "a", "acc": 0.5}]
    assert (tmp_path / "table.md").read_text() == "| a |\n" and not stale.exists()


def test_a_fold_asked_for_another_graph_keeps_the_graphs_it_had(tiny_run, tmp_path):
    """A resumed cross-validation that adds a graph keeps the fold's earlier graph, its regions current (and so its
    finished fine-tuning): run_graph drops every graph it is not asked for."""
    from geoloc_core.analysis.crossval import prepare_fold

    parent, fold = Run(tiny_run), Run(tmp_path / "fold0")
    is_test = np.arange(len(parent.photo_table())) % 3 == 0
    prepare_fold(parent, fold, is_test, ("dt",))
    dt_labels = fold.regions("dt").labels()
    prepare_fold(parent, fold, is_test, ("gg",))
    assert fold.graphs() == ["dt", "gg"] and fold.is_current("regions:dt") and fold.is_current("regions:gg")
    assert fold.regions("dt").labels().equals(dt_labels)
