"""Uncertainty of held-out figures: folds over locations, a bootstrap over locations, paired differences with a verdict.

The unit that is independent is the location, not the photo (the four headings of one Street View
stop are one draw). Every interval here resamples held-out locations with replacement and carries
all of a location's photos along; a paired difference resamples the same locations for both methods.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from geoloc_core.evaluate.metrics import THRESHOLDS_KM, threshold_key

N_BOOT = 2000
LEVEL = 0.95
Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (values (N,), weights (B, N)) -> (B,)


def location_folds(units: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N,) fold of each photo, 0 .. k-1: every unit (a place, or a spatial block: `splits.fold_units`) in exactly one
    fold, folds of near-equal unit counts."""
    unique, inverse = np.unique(np.asarray(units).astype(str), return_inverse=True)
    if not 2 <= k <= len(unique):
        raise ValueError(f"{k} folds need 2 .. {len(unique)} (the number of locations or blocks)")
    fold_of_group = np.empty(len(unique), np.int64)
    fold_of_group[np.random.default_rng(seed).permutation(len(unique))] = np.arange(len(unique)) % k
    return fold_of_group[inverse.ravel()]


def location_weights(groups: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(B, N) bootstrap weights: how often each photo's location was drawn in each of B resamples of the locations."""
    unique, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    draws = np.random.default_rng(seed).multinomial(len(unique), np.full(len(unique), 1 / len(unique)), size=n_boot)
    return draws[:, inverse.ravel()].astype(np.float64)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return weights @ np.asarray(values, np.float64) / weights.sum(axis=1)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) the weighted median of `values` under each row of weights: np.median's answer for equal weights."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[:, order], axis=1)
    half = cumulative[:, -1:] / 2
    ranked = np.asarray(values, np.float64)[order]
    return (ranked[np.argmax(cumulative >= half, axis=1)] + ranked[np.argmax(cumulative > half, axis=1)]) / 2


def interval(boot: np.ndarray) -> tuple[float, float]:
    """The central LEVEL percentile interval of bootstrap draws."""
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def verdict(lo: float, hi: float, higher_is_better: bool) -> str:
    """better / worse when the interval of (method - reference) excludes 0, else no detectable difference."""
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == higher_is_better else "worse"
    return "no detectable difference"


def estimate(values: np.ndarray, weights: np.ndarray, statistic: Statistic) -> tuple[float, float, float]:
    """(point estimate, lo, hi): the statistic on all photos and its bootstrap interval over locations."""
    point = float(statistic(values, np.ones((1, len(values))))[0])
    return (point, *interval(statistic(values, weights)))


def distance_measures(error_km: np.ndarray) -> dict[str, tuple[np.ndarray, Statistic]]:
    """Per-photo km errors -> the field's distance figures as (per-photo values, statistic): median_km and acc@t km."""
    out = {"median_km": (error_km, weighted_median)}
    return out | {threshold_key(t): (error_km <= t, weighted_mean) for t in THRESHOLDS_KM}


def estimates(measures: dict[str, tuple[np.ndarray, Statistic]], weights: np.ndarray) -> dict[str, float]:
    """Each figure as `name`, `name_lo`, `name_hi`: its value on all photos and its bootstrap interval over locations."""
    out = {}
    for name, (values, statistic) in measures.items():
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = estimate(np.asarray(values, np.float64), weights, statistic)
    return out


def paired(a: np.ndarray, b: np.ndarray, weights: np.ndarray, statistic: Statistic, higher_is_better: bool) -> dict:
    """statistic(a) - statistic(b) on the same photos, its interval over the same resampled locations, and the verdict."""
    ones = np.ones((1, len(a)))
    diff = float(statistic(a, ones)[0] - statistic(b, ones)[0])
    lo, hi = interval(statistic(a, weights) - statistic(b, weights))
    return {"difference": diff, "lo": lo, "hi": hi, "verdict": verdict(lo, hi, higher_is_better)}


def with_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """A table of estimates with `x_lo` / `x_hi` columns as one text column each: `118.9 [101.2, 135.0]`."""
    out = table[[c for c in table if not c.endswith(("_lo", "_hi"))]].copy()
    for c in out:
        if f"{c}_lo" in table:
            out[c] = ["" if np.isnan(v) else f"{v:.3g} [{lo:.3g}, {hi:.3g}]" for v, lo, hi in zip(table[c], table[f"{c}_lo"], table[f"{c}_hi"])]
    return out
