"""Train/test splits that keep every location on one side.

Photos of one place (the four headings of a Street View stop, a burst of phone shots at one GPS
fix) are near-duplicates: split them across train and test and a classifier is graded on photos it
has as good as seen. Splits are therefore drawn over groups (`PhotoTable.frame["group"]`).
"""

from __future__ import annotations

import math

import numpy as np

from geoloc_core.base.errors import UserError


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
