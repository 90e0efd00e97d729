"""Photos -> places: the unit every split, fold, calibration hold-out and bootstrap keeps on one side.

A phone gives every photo its own GPS fix, so the photos of one spot (a burst, a re-take a minute
later) differ by a few metres: grouped by exact coordinate, each would be its own "location", and a
held-out photo would meet its near-twin in the database. Here photos whose fixes lie within a radius
of each other are linked (pairs from a k-d tree, never all pairs) and the connected components are
the places. Chaining can link a whole campus or a street: a component wider than a cap is re-cut by
complete linkage, which keeps every place's diameter under the cap. The same picture saved twice
(re-compressed, resized) is found by a perceptual hash and always joins its original's place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.fft import dctn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, QhullError, cKDTree

from geoloc_core.base.geo import LocalProjection

_HASH_SIDE = 32  # the photo shrunk to 32 x 32 grey before the DCT: pHash's usual size
_HASH_LOW = 8  # the 8 x 8 lowest frequencies (DC left out of the median) make the 64 bits
_LINKAGE_MAX = 2000  # distinct coordinates complete linkage takes at once ((n^2 / 2) distances); more are halved first


@dataclass(frozen=True)
class PlaceSummary:
    """What the grouping made: recorded in the run's ingest summary and shown on the Data page."""

    n_photos: int
    n_places: int
    largest_place: int  # photos in the largest place
    largest_diameter_m: float  # the widest place, end to end
    radius_m: float
    max_diameter_m: float
    n_near_duplicates: int


def place_labels(lat_deg: np.ndarray, lon_deg: np.ndarray, radius_m: float, max_diameter_m: float) -> np.ndarray:
    """(N,) coordinates -> (N,) int64 place of each photo, numbered in order of first appearance.

    Args:
        lat_deg, lon_deg: (N,) photo coordinates.
        radius_m: photos this close (or closer) are one place; 0 groups by exact coordinate only.
        max_diameter_m: a place linked wider than this is re-cut into places no wider (complete linkage).
    """
    n = len(lat_deg)
    if n == 0:
        return np.zeros(0, np.int64)
    xy_m = LocalProjection.centred_on(lat_deg, lon_deg).to_xy_m(lat_deg, lon_deg)
    sites, site_of_photo = np.unique(np.round(xy_m, 3), axis=0, return_inverse=True)  # millimetres: one fix, one site
    site_of_photo = site_of_photo.ravel()
    links = cKDTree(sites).query_pairs(radius_m, output_type="ndarray") if radius_m > 0 else np.empty((0, 2), np.int64)
    component = _components(len(sites), links)
    place_of_site = np.empty(len(sites), np.int64)
    next_label = 0
    for members in _members(component):
        cut = _cut(sites[members], max_diameter_m)
        place_of_site[members] = cut + next_label
        next_label += int(cut.max()) + 1
    return _first_seen_order(place_of_site[site_of_photo])


def merge_groups(labels: np.ndarray, pairs: np.ndarray | None) -> np.ndarray:
    """(N,) int group labels (0 .. G-1) -> (N,) labels with the groups of each pair (P, 2) of photos merged into one."""
    labels = np.asarray(labels, np.int64)
    if pairs is None or not len(pairs):
        return labels
    return _components(int(labels.max()) + 1, labels[np.asarray(pairs, np.int64)])[labels]


def summarise_places(labels: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray, radius_m: float,
                     max_diameter_m: float, n_near_duplicates: int = 0) -> PlaceSummary:
    """The grouping's counts, its largest place and its widest one (metres, end to end)."""
    counts = np.bincount(labels) if len(labels) else np.zeros(1, np.int64)
    widest = 0.0
    if len(labels):
        xy_m = LocalProjection.centred_on(lat_deg, lon_deg).to_xy_m(lat_deg, lon_deg)
        for members in _members(labels):
            if len(members) > 1:
                widest = max(widest, _diameter_m(xy_m[members]))
    n_places = int(labels.max()) + 1 if len(labels) else 0
    return PlaceSummary(int(len(labels)), n_places, int(counts.max()), round(widest, 1),
                        float(radius_m), float(max_diameter_m), int(n_near_duplicates))


def perceptual_hash(image: Image.Image) -> int:
    """A photo's 64-bit DCT perceptual hash (pHash): which of its 8 x 8 lowest frequencies lie above their median.

    Re-compressing, resizing or lightly re-toning a picture keeps nearly all 64 bits; another picture flips about half.
    """
    grey = np.asarray(image.convert("L").resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.LANCZOS), np.float64)
    low = dctn(grey, norm="ortho")[:_HASH_LOW, :_HASH_LOW].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def near_duplicate_pairs(hashes: np.ndarray, max_bits: int) -> np.ndarray:
    """(N,) uint64 perceptual hashes -> (P, 2) index pairs (i < j) at most `max_bits` apart, sorted.

    Pigeonhole (multi-index hashing): split the 64 bits into max_bits + 1 bands; two hashes within max_bits agree
    exactly on at least one band, so only photos that share a band's value are compared.
    """
    hashes = np.asarray(hashes, np.uint64)
    if max_bits < 0 or len(hashes) < 2:
        return np.empty((0, 2), np.int64)
    edges = np.linspace(0, 64, min(max_bits + 1, 64) + 1).astype(int)
    found: set[tuple[int, int]] = set()
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(band, kind="stable")
        starts = np.flatnonzero(np.r_[True, band[order][1:] != band[order][:-1]])
        for members in np.split(order, starts[1:]):
            if len(members) < 2:
                continue
            i, j = np.triu_indices(len(members), 1)
            close = np.bitwise_count(hashes[members[i]] ^ hashes[members[j]]) <= max_bits
            found.update(zip(members[i][close].tolist(), members[j][close].tolist()))
    pairs = np.array(sorted((min(a, b), max(a, b)) for a, b in found), np.int64)
    return pairs.reshape(-1, 2)


def _components(n: int, links: np.ndarray) -> np.ndarray:
    """(n,) connected component of each node of the graph with edges `links` (E, 2)."""
    if not len(links):
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _members(labels: np.ndarray) -> list[np.ndarray]:
    """The indices of each label, labels in increasing order."""
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(labels[order])) + 1)


def _cut(xy_m: np.ndarray, max_diameter_m: float) -> np.ndarray:
    """(S, 2) linked sites -> (S,) sub-place labels from 0, each sub-place at most `max_diameter_m` end to end.

    Complete linkage merges two groups only while every pair across them stays within the cap; beyond a few thousand
    sites its (S^2 / 2) distances are too many, so the sites are first halved across their wider axis.
    """
    if len(xy_m) < 2 or _extent_m(xy_m) <= max_diameter_m:
        return np.zeros(len(xy_m), np.int64)
    if len(xy_m) > _LINKAGE_MAX:
        axis = int(np.argmax(np.ptp(xy_m, axis=0)))
        lower = xy_m[:, axis] <= np.median(xy_m[:, axis])
        if lower.all():  # most sites at one value: split off the rest
            lower = xy_m[:, axis] < xy_m[:, axis].max()
        labels = np.empty(len(xy_m), np.int64)
        labels[lower] = _cut(xy_m[lower], max_diameter_m)
        labels[~lower] = _cut(xy_m[~lower], max_diameter_m) + labels[lower].max() + 1
        return labels
    return fcluster(linkage(xy_m, method="complete"), t=max_diameter_m, criterion="distance").astype(np.int64) - 1


def _extent_m(xy_m: np.ndarray) -> float:
    """The diagonal of the sites' bounding box: an upper bound of their diameter, cheap to compute."""
    return float(np.hypot(*np.ptp(xy_m, axis=0)))


def _diameter_m(xy_m: np.ndarray) -> float:
    """The largest distance between two of the points (on their convex hull's vertices when there are many)."""
    points = np.unique(np.round(xy_m, 3), axis=0)
    if len(points) > 200:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # all on a line: its two ends along the wider axis
            axis = int(np.argmax(np.ptp(points, axis=0)))
            points = points[[np.argmin(points[:, axis]), np.argmax(points[:, axis])]]
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff ** 2).sum(-1)).max())


def _first_seen_order(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0, 1, ... in order of their first photo: a place's number does not depend on the algorithm."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]
