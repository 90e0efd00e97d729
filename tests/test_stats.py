"""Folds over locations, the bootstrap over locations and paired verdicts, against what they must be."""

import numpy as np
import pytest

from geoloc_core.evaluate.stats import estimate, location_folds, location_weights, paired, verdict, weighted_mean, weighted_median


def test_every_location_is_held_out_exactly_once_with_all_its_photos():
    groups = np.repeat([f"L{i}" for i in range(23)], np.arange(23) % 4 + 1)
    fold = location_folds(groups, 5, seed=1)
    assert set(fold) == set(range(5))
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1  # a location never straddles two folds
    per_fold = [len(np.unique(groups[fold == f])) for f in range(5)]
    assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == 23
    with pytest.raises(ValueError):
        location_folds(groups, 24)


def test_weighted_statistics_equal_the_plain_ones_under_equal_weights():
    x = np.random.default_rng(0).normal(size=101)
    ones = np.ones((1, 101))
    assert weighted_mean(x, ones)[0] == pytest.approx(x.mean())
    assert weighted_median(x, ones)[0] == np.median(x)
    twice = np.concatenate([x, x])  # every value twice: the same statistics
    assert weighted_median(twice, np.ones((1, 202)))[0] == np.median(x)
    assert weighted_median(x[:100], np.ones((1, 100)))[0] == pytest.approx(np.median(x[:100]))  # even: the middle two averaged


def test_the_interval_counts_locations_not_photos():
    """Ten photos of one place are one draw: copying photos must not narrow the interval."""
    values = np.random.default_rng(2).normal(size=40)
    groups = np.arange(40)
    one = estimate(values, location_weights(groups, seed=0), weighted_mean)
    tenfold = estimate(np.repeat(values, 10), location_weights(np.repeat(groups, 10), seed=0), weighted_mean)
    assert tenfold == pytest.approx(one)
    lo, hi = one[1:]
    assert lo < 0 < hi  # the true mean, 0, is inside
    assert 0.4 < hi - lo < 0.9  # about 2 x 1.96 / sqrt(40)


def test_paired_verdicts():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(60), 4)
    weights = location_weights(groups, seed=0)
    base = rng.normal(size=240)
    assert paired(base + 1.0, base, weights, weighted_mean, higher_is_better=True)["verdict"] == "better"
    assert paired(base + 1.0, base, weights, weighted_mean, higher_is_better=False)["verdict"] == "worse"
    same = paired(base + rng.normal(scale=0.01, size=240), base, weights, weighted_mean, higher_is_better=True)
    assert same["verdict"] == "no detectable difference" and same["lo"] < 0 < same["hi"]
    assert verdict(-2.0, -1.0, higher_is_better=False) == "better"
