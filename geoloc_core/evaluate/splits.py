"""Train/test splits that keep every location on one side.

Photos of one place (the four headings of a Street View stop, a burst of phone shots at one GPS
fix) are near-duplicates: split them across train and test and a classifier is graded on photos it
has as good as seen. Splits are therefore drawn over groups (`PhotoTable.frame["group"]`). Spatial blocks
(`block_labels`, `fold_units`) are the coarser unit: whole squares of the map held out together.
"""

from __future__ import annotations

import math

import numpy as np

from geoloc_core.base.errors import UserError
from geoloc_core.base.geo import LocalProjection


def grouped_split(groups: np.ndarray, test_frac: float = 0.2, seed: int = 0) -> np.ndarray:
    """(N,) group keys -> (N,) bool, True for test photos; ~test_frac of the groups, at least one each side."""
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    unique, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    if len(unique) < 2:
        raise UserError(f"need at least 2 distinct locations to split, found {len(unique)}",
                        "Add photos taken at other places (a run learns regions from dozens of them)")
    n_test = min(max(1, math.ceil(test_frac * len(unique))), len(unique) - 1)
    test_groups = np.random.default_rng(seed).permutation(len(unique))[:n_test]
    is_test_group = np.zeros(len(unique), bool)
    is_test_group[test_groups] = True
    return is_test_group[inverse.ravel()]


def block_labels(xy_m: np.ndarray, block_km: float) -> np.ndarray:
    """(N, 2) projected metres -> (N,) int64 label of the square block of `block_km` each point lies in.

    Blocks are aligned on the points' south-west corner, so the labels depend only on the points and the size;
    label = column + row * (columns), row-major from the south-west. Spatial cross-validation (blockCV, Roberts et
    al. 2017) holds whole blocks out, so a test photo has no training photo in its own neighbourhood.
    """
    if not block_km > 0:
        raise ValueError(f"block_km must be > 0, got {block_km}")
    xy = np.asarray(xy_m, np.float64).reshape(-1, 2)
    cell = np.floor((xy - xy.min(axis=0)) / (block_km * 1000)).astype(np.int64)
    return cell[:, 0] + cell[:, 1] * (int(cell[:, 0].max()) + 1 if len(cell) else 1)


def fold_units(groups: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray, block_km: float = 0.0) -> np.ndarray:
    """(N,) the unit each photo is held out with: its place (`groups`), or with `block_km` > 0 the block of its place's
    centre, so a place on a block's edge stays whole. Coordinates are projected on the photos' own centre (metres)."""
    if not block_km:
        return np.asarray(groups)
    groups = np.asarray(groups).astype(str)
    xy = LocalProjection.centred_on(lat_deg, lon_deg).to_xy_m(lat_deg, lon_deg)
    place, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse.ravel())[:, None]
    centre = np.column_stack([np.bincount(inverse.ravel(), xy[:, i]) for i in (0, 1)]) / counts
    return np.char.add("block ", block_labels(centre, block_km).astype(str))[inverse.ravel()]
