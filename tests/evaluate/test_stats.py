"""Folds over locations, the bootstrap over locations and paired verdicts, against what they must be."""

import numpy as np
import pytest

from geoloc_core.evaluate.stats import (
    estimate,
    location_folds,
    paired,
    resample_places,
    verdict,
    weighted_mean,
    weighted_median,
)


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
    once = resample_places(np.arange(101)).once()  # every place drawn once
    assert weighted_mean(x, once)[0] == pytest.approx(x.mean())
    assert weighted_median(x, once)[0] == np.median(x)
    twice = np.concatenate([x, x])  # every value twice: the same statistics
    assert weighted_median(twice, resample_places(np.arange(202)).once())[0] == np.median(x)
    even = resample_places(np.arange(100)).once()
    assert weighted_median(x[:100], even)[0] == pytest.approx(np.median(x[:100]))  # even: the middle two averaged


def test_statistics_over_resampled_places_equal_those_over_each_photo_s_weight():
    """The draws stay per place; the slow reference spreads them to a (B, N) weight per photo."""
    rng = np.random.default_rng(4)
    places = rng.integers(0, 30, size=200).astype(str)
    values = rng.normal(size=200)
    resamples = resample_places(places, n_boot=300, seed=5)
    weights = resamples.draws[:, resamples.place].astype(np.float64)  # (B, N): how often each photo's place was drawn
    assert np.allclose(weighted_mean(values, resamples), weights @ values / weights.sum(axis=1))
    medians = [np.median(np.repeat(values, w.astype(int))) for w in weights]
    assert np.allclose(weighted_median(values, resamples, chunk=7), medians)  # chunks of resamples: the same answer


def test_the_interval_counts_locations_not_photos():
    """Ten photos of one place are one draw: copying photos must not narrow the interval."""
    values = np.random.default_rng(2).normal(size=40)
    groups = np.arange(40)
    one = estimate(values, resample_places(groups, seed=0), weighted_mean)
    tenfold = estimate(np.repeat(values, 10), resample_places(np.repeat(groups, 10), seed=0), weighted_mean)
    assert tenfold == pytest.approx(one)
    lo, hi = one[1:]
    assert lo < 0 < hi  # the true mean, 0, is inside
    assert 0.4 < hi - lo < 0.9  # about 2 x 1.96 / sqrt(40)


def test_paired_verdicts():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(60), 4)
    resamples = resample_places(groups, seed=0)
    base = rng.normal(size=240)
    assert paired(base + 1.0, base, resamples, weighted_mean, higher_is_better=True)["verdict"] == "better"
    assert paired(base + 1.0, base, resamples, weighted_mean, higher_is_better=False)["verdict"] == "worse"
    same = paired(base + rng.normal(scale=0.01, size=240), base, resamples, weighted_mean, higher_is_better=True)
    assert same["verdict"] == "no detectable difference" and same["lo"] < 0 < same["hi"]
    assert verdict(-2.0, -1.0, higher_is_better=False) == "better"
