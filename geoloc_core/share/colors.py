"""Colours shared by the maps, the GIS exports and the app's figures: one per region, stable for a label."""

from __future__ import annotations

import colorsys

import numpy as np


def palette(n: int) -> list[list[int]]:
    """n well-separated RGB colours (golden-angle hues), stable for a given label."""
    return [[int(255 * c) for c in colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.65, 0.95)] for k in range(max(n, 1))]


def viridis(t: np.ndarray) -> np.ndarray:
    """(n,) values in [0, 1] -> (n, 3) uint8 colours, dark blue (0) through teal and green to
    yellow (1), like viridis."""
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], float)
    x = np.clip(np.asarray(t, float), 0, 1) * (len(stops) - 1)
    lo = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - lo)[:, None]
    return (stops[lo] * (1 - f) + stops[lo + 1] * f).astype(np.uint8)
