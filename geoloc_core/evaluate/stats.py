"""Uncertainty of held-out figures: folds over locations, a bootstrap over locations, paired differences with a verdict.

The unit that is independent is the location, not the photo (the four headings of one Street View
stop are one draw). Every interval here resamples held-out locations with replacement and carries
all of a location's photos along; a paired difference resamples the same locations for both methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from geoloc_core.evaluate.metrics import THRESHOLDS_KM, threshold_key

N_BOOT = 2000
LEVEL = 0.95
Statistic = Callable[[np.ndarray, "Resamples"], np.ndarray]  # (values (N,), B resamples of the places) -> (B,)


def location_folds(units: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N,) fold of each photo, 0 .. k-1: every unit (a place, or a spatial block: `splits.fold_units`) in exactly one
    fold, folds of near-equal unit counts."""
    unique, inverse = np.unique(np.asarray(units).astype(str), return_inverse=True)
    if not 2 <= k <= len(unique):
        raise ValueError(f"{k} folds need 2 .. {len(unique)} (the number of locations or blocks)")
    fold_of_group = np.empty(len(unique), np.int64)
    fold_of_group[np.random.default_rng(seed).permutation(len(unique))] = np.arange(len(unique)) % k
    return fold_of_group[inverse.ravel()]


@dataclass(frozen=True)
class Resamples:
    """B resamples of the places with replacement, kept per place: a (B, P) count of draws rather than a (B, N) weight
    per photo, whose float64 would grow with the photos (2000 x 1e5 photos: 1.6 GB)."""

    draws: np.ndarray  # (B, P) how often each place was drawn in each resample
    place: np.ndarray  # (N,) int64: each photo's place, a column of `draws`

    def once(self) -> Resamples:
        """Every place drawn once: the statistics' value on all photos (the point estimate)."""
        return Resamples(np.ones((1, self.draws.shape[1]), np.int64), self.place)


def resample_places(places: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> Resamples:
    """B resamples of the places (`places`: (N,) each photo's place label), each drawing as many places as there are."""
    unique, inverse = np.unique(np.asarray(places).astype(str), return_inverse=True)
    draws = np.random.default_rng(seed).multinomial(len(unique), np.full(len(unique), 1 / len(unique)), size=n_boot)
    return Resamples(draws, inverse.ravel())


def weighted_mean(values: np.ndarray, resamples: Resamples) -> np.ndarray:
    """(B,) the mean of `values` (N,) over the photos of each resample (a place drawn twice counts twice)."""
    n_places = resamples.draws.shape[1]
    sums = np.bincount(resamples.place, weights=np.asarray(values, np.float64), minlength=n_places)
    return resamples.draws @ sums / (resamples.draws @ np.bincount(resamples.place, minlength=n_places))


def weighted_median(values: np.ndarray, resamples: Resamples, chunk: int = 256) -> np.ndarray:
    """(B,) the median of `values` (N,) over the photos of each resample: np.median's answer when every place is drawn
    once. Photo weights are spread out `chunk` resamples at a time, so memory stays (chunk, N)."""
    order = np.argsort(values, kind="stable")
    ranked, place = np.asarray(values, np.float64)[order], resamples.place[order]
    out = np.empty(len(resamples.draws))
    for s in range(0, len(out), chunk):
        cumulative = np.cumsum(resamples.draws[s:s + chunk][:, place], axis=1, dtype=np.float64)
        half = cumulative[:, -1:] / 2
        lower, upper = np.argmax(cumulative >= half, axis=1), np.argmax(cumulative > half, axis=1)
        out[s:s + chunk] = (ranked[lower] + ranked[upper]) / 2
    return out


def interval(boot: np.ndarray) -> tuple[float, float]:
    """The central LEVEL percentile interval of bootstrap draws."""
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def verdict(lo: float, hi: float, higher_is_better: bool) -> str:
    """better / worse when the interval of (method - reference) excludes 0, else no detectable difference."""
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == higher_is_better else "worse"
    return "no detectable difference"


def estimate(values: np.ndarray, resamples: Resamples, statistic: Statistic) -> tuple[float, float, float]:
    """(point estimate, lo, hi): the statistic on all photos and its bootstrap interval over the places."""
    point = float(statistic(values, resamples.once())[0])
    return (point, *interval(statistic(values, resamples)))


def distance_measures(error_km: np.ndarray) -> dict[str, tuple[np.ndarray, Statistic]]:
    """Per-photo km errors -> the field's distance figures as (per-photo values, statistic): median_km and acc@t km."""
    out = {"median_km": (error_km, weighted_median)}
    return out | {threshold_key(t): (error_km <= t, weighted_mean) for t in THRESHOLDS_KM}


def estimates(measures: dict[str, tuple[np.ndarray, Statistic]], resamples: Resamples) -> dict[str, float]:
    """Each figure as `name`, `name_lo`, `name_hi`: its value on all photos and its bootstrap
    interval over locations."""
    out = {}
    for name, (values, statistic) in measures.items():
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = estimate(np.asarray(values, np.float64), resamples, statistic)
    return out


def paired(a: np.ndarray, b: np.ndarray, resamples: Resamples, statistic: Statistic, higher_is_better: bool) -> dict:
    """statistic(a) - statistic(b) on the same photos, its interval over the same resampled places, and the verdict."""
    once = resamples.once()
    diff = float(statistic(a, once)[0] - statistic(b, once)[0])
    lo, hi = interval(statistic(a, resamples) - statistic(b, resamples))
    return {"difference": diff, "lo": lo, "hi": hi, "verdict": verdict(lo, hi, higher_is_better)}


def with_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """A table of estimates with `x_lo` / `x_hi` columns as one text column each: `118.9 [101.2, 135.0]`."""
    out = table[[c for c in table if not c.endswith(("_lo", "_hi"))]].copy()
    for c in out:
        if f"{c}_lo" in table:
            out[c] = ["" if np.isnan(v) else f"{v:.3g} [{lo:.3g}, {hi:.3g}]"
                      for v, lo, hi in zip(table[c], table[f"{c}_lo"], table[f"{c}_hi"])]
    return out
