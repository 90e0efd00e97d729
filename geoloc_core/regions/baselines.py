"""The paper's baselines as label sets: a fixed mesh grid and CPlaNet-style combinatorial partitions.

Both are purely geographic (they never look at the photos), and both are sized to match a target
region count, so a comparison with the proximity-graph regions is at equal granularity. Held-out
photos take the class of their nearest training photo, as they do for the graph regions.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from sklearn.cluster import KMeans


def mesh_labels(lat_deg: np.ndarray, lon_deg: np.ndarray, xy_m: np.ndarray, train: np.ndarray, target: int,
                iters: int = 60) -> tuple[np.ndarray, float]:
    """A regular lat/lon grid (cells ~square on the ground) whose non-empty training cells number ~`target`.

    Returns (N,) labels 0..K-1 and the cell height in degrees. The cell size is found by bisection
    on its logarithm; the grid is anchored at the training photos' south-west corner.
    """
    lat0, lon0 = lat_deg[train].min(), lon_deg[train].min()
    aspect = 1.0 / max(np.cos(np.radians(np.mean(lat_deg[train]))), 1e-6)  # degrees of longitude per degree of latitude

    def cells(size: float) -> np.ndarray:
        return np.stack([np.floor((lat_deg - lat0) / size), np.floor((lon_deg - lon0) / (size * aspect))],
                        axis=1).astype(np.int64)

    def count(size: float) -> int:
        return len(np.unique(cells(size)[train], axis=0))

    lo, hi = 1e-7, 360.0  # log-bisection: count(lo) >= target >= count(hi)
    for _ in range(iters):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if count(mid) > target else (lo, mid)
    size = min((lo, hi), key=lambda s: (abs(count(s) - target), -s))
    return _labels_from_keys(cells(size), xy_m, train), float(size)


def kmeans_partitions(xy_m: np.ndarray, train: np.ndarray, n_clusters: int, n_partitions: int,
                      seed: int = 0) -> list[np.ndarray]:
    """`n_partitions` k-means partitions of the training locations, each with its own seed: (N,) labels each."""
    unique_xy = np.unique(xy_m[train], axis=0)
    k = min(n_clusters, len(unique_xy))
    out = []
    for p in range(n_partitions):
        km = KMeans(n_clusters=k, n_init=1, random_state=seed + p).fit(unique_xy)  # one init each: diverse partitions
        out.append(_labels_from_keys(km.predict(xy_m)[:, None], xy_m, train))
    return out


def cplanet_partitions(xy_m: np.ndarray, train: np.ndarray, target: int, n_partitions: int = 3,
                       seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Coarse partitions whose intersection cells number ~`target`: (partitions, (N,) cell labels).

    Each partition has k clusters, k chosen so the number of intersections is closest to the target. A
    held-out photo's cell is its nearest training photo's, so every cell it can fall in was trained.
    """
    candidates = []
    for k in range(2, max(3, target + 1)):
        parts = kmeans_partitions(xy_m, train, k, n_partitions, seed)
        cells = _labels_from_keys(np.stack(parts, axis=1), xy_m, train)
        candidates.append((abs(int(cells.max()) + 1 - target), k, parts, cells))
        if cells.max() + 1 >= target:
            break
    _, _, parts, cells = min(candidates, key=lambda c: (c[0], c[1]))
    return parts, cells


def cell_combos(partitions: list[np.ndarray], cells: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(C, P): for each intersection cell, its region in each partition."""
    combos = np.zeros((cells[train].max() + 1, len(partitions)), np.int64)
    for p, labels in enumerate(partitions):
        combos[cells[train], p] = labels[train]
    return combos


def combine_log_probs(log_probs: list[np.ndarray], combos: np.ndarray) -> np.ndarray:
    """CPlaNet's inference: a cell's score is the sum of its partitions' log-probabilities; (M,) best cells."""
    score = sum(lp[:, combos[:, p]] for p, lp in enumerate(log_probs))
    return score.argmax(axis=1)


def _labels_from_keys(keys: np.ndarray, xy_m: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Training photos: their key's class 0..K-1; held-out photos: the class of the nearest training photo."""
    _, inverse = np.unique(keys[train], axis=0, return_inverse=True)
    labels = np.empty(len(keys), np.int64)
    labels[train] = inverse.ravel()
    nearest = cKDTree(xy_m[train]).query(xy_m[~train])[1]
    labels[~train] = labels[train][nearest]
    return labels
