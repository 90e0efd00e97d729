import numpy as np
import pytest

from geoloc_core.evaluate.linear_probe import fit_linear_probe
from geoloc_core.evaluate.metrics import classification_metrics, distance_metrics
from geoloc_core.evaluate.splits import grouped_split


def test_distance_thresholds_are_inclusive():
    # 1 degree of latitude is 111.195 km: one prediction exactly 0 km, one ~111 km off
    m = distance_metrics([0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], thresholds_km=(0.0, 111.0, 111.2))
    assert m["acc@0km"] == 0.5 and m["acc@111km"] == 0.5 and m["acc@111.2km"] == 1.0
    assert m["median_km"] == pytest.approx(111.195 / 2, rel=1e-3)


def test_default_keys_include_campus_and_world_scales():
    m = distance_metrics([45.0], [16.0], [45.0], [16.001])
    assert {"acc@0.1km", "acc@0.5km", "acc@1km", "acc@25km", "acc@200km", "acc@750km", "acc@2500km",
            "median_km"} <= set(m)
    assert m["acc@0.1km"] == 1.0  # 0.079 km


def test_classification_metrics_by_hand():
    m = classification_metrics(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]))
    assert m["acc"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # F1 per class: 2/3, 1/2, 0


def test_grouped_split_never_cuts_a_location():
    groups = np.repeat(np.arange(50), 4).astype(str)
    is_test = grouped_split(groups, 0.2, seed=3)
    assert set(groups[is_test]).isdisjoint(groups[~is_test])
    assert len(set(groups[is_test])) == 10
    assert (grouped_split(groups, 0.2, seed=3) == is_test).all()
    assert not (grouped_split(groups, 0.2, seed=4) == is_test).all()
    with pytest.raises(ValueError):
        grouped_split(np.array(["a", "a"]), 0.2)


def test_confusion_counts_every_held_out_answer_and_its_diagonal_is_the_accuracy(tiny_run):
    import pandas as pd

    from geoloc_core.evaluate.metrics import confused_pairs, confusion, region_accuracy
    from geoloc_core.runs.folders import Run

    run = Run(tiny_run)
    answers = pd.read_csv(run.held_out("dt"))
    n = len(run.regions("dt").read_summary())
    matrix = confusion(answers, n)
    assert matrix.sum() == len(answers) == int(run.read_split()[1].sum())
    recorded = next(r for r in run.read_metrics() if r.get("stage") == "evaluate" and r["graph"] == "dt")
    assert np.trace(matrix) / matrix.sum() == pytest.approx(recorded["acc"])
    acc = region_accuracy(matrix)
    assert np.isnan(acc[matrix.sum(axis=1) == 0]).all()
    pairs = confused_pairs(matrix)
    assert pairs["count"].sum() == matrix.sum() - np.trace(matrix) and (pairs["region"] != pairs["pred"]).all()


def test_confused_pairs_by_hand():
    from geoloc_core.evaluate.metrics import confused_pairs, region_accuracy

    matrix = np.array([[3, 1, 0], [2, 0, 0], [0, 0, 0]])
    pairs = confused_pairs(matrix)
    assert pairs[["region", "pred", "count"]].values.tolist() == [[1, 0, 2], [0, 1, 1]]
    assert pairs["share"].tolist() == [1.0, 0.25]
    assert region_accuracy(matrix)[:2].tolist() == [0.75, 0.0] and np.isnan(region_accuracy(matrix)[2])


def test_the_eval_seed_shuffles_the_places_into_the_folds_that_choose_the_probe_s_strength():
    """`--eval-seed` did nothing (lbfgs draws nothing, GroupKFold does not shuffle); it now decides which places share a
    fold of the search for C, and every fold still holds whole places."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 2)
    emb, labels = rng.normal(size=(60, 8)), rng.integers(0, 3, size=60)  # noise: the best C depends on the folds
    chosen = {seed: fit_linear_probe(emb, labels, groups, seed=seed)[-1].C for seed in range(6)}
    assert len(set(chosen.values())) > 1
    again, twice = (fit_linear_probe(emb, labels, groups, seed=3)[-1] for _ in range(2))
    assert again.C == chosen[3] and np.array_equal(again.coef_, twice.coef_)  # the same seed, the same probe
