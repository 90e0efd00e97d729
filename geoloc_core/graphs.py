"""Proximity graphs over points in a metric plane: Delaunay (DT), Gabriel (GG), relative neighbourhood (RNG).

All three are returned as (E, 2) int64 arrays of undirected edges with i < j, sorted. RNG ⊆ GG ⊆ DT,
so each is computed by filtering the one before:
- DT from scipy's Qhull, read straight from its vertex-neighbour CSR (no per-triangle dedup).
- GG: a DT edge pq is Gabriel iff no point lies in the closed disc with diameter pq. For a Delaunay
  edge it suffices to test the vertices opposite pq in its (one or two) triangles: the edge is
  Gabriel iff both opposite angles are acute (Matula & Sokal 1980).
- RNG: pq is kept iff no third point r has max(|pr|, |qr|) < |pq| (the open lune is empty). The lune
  lies inside the disc of radius (√3/2)|pq| about the midpoint, so a k-d tree finds every candidate.

Points must be distinct: callers merge photos taken at one spot into one site first (see
`unique_sites`), which is also what keeps Qhull from silently dropping duplicates.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial import Delaunay, QhullError, cKDTree


def unique_sites(xy: np.ndarray, decimals: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Merge points closer than ~10**-decimals (metres): (sites (S, 2), site_of_point (N,))."""
    keys = np.round(np.asarray(xy, np.float64), decimals)
    sites, inverse = np.unique(keys, axis=0, return_inverse=True)
    return sites, inverse.ravel()


def delaunay_edges(xy: np.ndarray) -> np.ndarray:
    """(N, 2) distinct points -> (E, 2) int64 Delaunay edges. Collinear input gives the path along the line."""
    return _dt_edges(xy, _triangulate(xy))


def gabriel_edges(xy: np.ndarray) -> np.ndarray:
    """(N, 2) distinct points -> (E, 2) int64 Gabriel edges."""
    tri = _triangulate(xy)
    return _gg_edges(xy, tri, _dt_edges(xy, tri))


def rng_edges(xy: np.ndarray) -> np.ndarray:
    """(N, 2) distinct points -> (E, 2) int64 relative-neighbourhood edges."""
    return _rng_edges(xy, gabriel_edges(xy))


def proximity_graphs(xy: np.ndarray) -> dict[str, np.ndarray]:
    """All three graphs from one triangulation: {"dt", "gg", "rng"} -> (E, 2) int64."""
    tri = _triangulate(xy)
    dt = _dt_edges(xy, tri)
    gg = _gg_edges(xy, tri, dt)
    return {"dt": dt, "gg": gg, "rng": _rng_edges(xy, gg)}


def _triangulate(xy: np.ndarray) -> Delaunay | None:
    """Qhull's triangulation, or None when there is none (fewer than 3 points, or all collinear)."""
    if len(xy) < 3:
        return None
    try:
        return Delaunay(np.asarray(xy, np.float64))
    except (QhullError, ValueError):
        return None


def _dt_edges(xy: np.ndarray, tri: Delaunay | None) -> np.ndarray:
    if tri is None:
        return _collinear_path(np.asarray(xy, np.float64))
    indptr, indices = tri.vertex_neighbor_vertices
    src = np.repeat(np.arange(len(xy), dtype=np.int64), np.diff(indptr))
    edges = np.column_stack([src, indices.astype(np.int64)])
    return _canonical(edges[edges[:, 0] < edges[:, 1]])


def _gg_edges(xy: np.ndarray, tri: Delaunay | None, dt_edges: np.ndarray) -> np.ndarray:
    if tri is None:
        return dt_edges  # a path along a line: every edge is Gabriel
    xy = np.asarray(xy, np.float64)
    simplices = tri.simplices.astype(np.int64)
    # each triangle (a, b, c) contributes edge (b, c) opposite a, (c, a) opposite b, (a, b) opposite c
    opp = simplices.reshape(-1)
    ends = simplices[:, [1, 2, 2, 0, 0, 1]].reshape(-1, 2)
    cos_num = np.einsum("ij,ij->i", xy[ends[:, 0]] - xy[opp], xy[ends[:, 1]] - xy[opp])
    blocked = ends[cos_num <= 0]  # angle at the opposite vertex >= 90°: that vertex is in the closed disc
    keep = ~np.isin(_edge_keys(dt_edges, len(xy)), _edge_keys(np.sort(blocked, axis=1), len(xy)))
    return dt_edges[keep]


def _rng_edges(xy: np.ndarray, gg_edges: np.ndarray) -> np.ndarray:
    if len(gg_edges) == 0:
        return gg_edges
    xy = np.asarray(xy, np.float64)
    p, q = xy[gg_edges[:, 0]], xy[gg_edges[:, 1]]
    length = np.linalg.norm(p - q, axis=1)
    hits = cKDTree(xy).query_ball_point((p + q) / 2, r=length * (np.sqrt(3) / 2) * (1 + 1e-9), return_sorted=False)
    counts = np.fromiter((len(h) for h in hits), np.int64, len(hits))
    edge_of = np.repeat(np.arange(len(gg_edges)), counts)
    r = np.fromiter((i for h in hits for i in h), np.int64, counts.sum())
    in_lune = np.maximum(np.linalg.norm(xy[r] - p[edge_of], axis=1), np.linalg.norm(xy[r] - q[edge_of], axis=1)) < length[edge_of]
    blocked = np.zeros(len(gg_edges), bool)
    blocked[edge_of[in_lune]] = True
    return gg_edges[~blocked]


GRAPH_BUILDERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "dt": delaunay_edges,
    "gg": gabriel_edges,
    "rng": rng_edges,
}


def build_graph(kind: str, xy: np.ndarray) -> np.ndarray:
    """One graph by name ("dt", "gg" or "rng") over (N, 2) distinct points in metres."""
    try:
        return GRAPH_BUILDERS[kind](xy)
    except KeyError:
        raise ValueError(f"unknown graph kind {kind!r}; choose from {sorted(GRAPH_BUILDERS)}") from None


def _collinear_path(xy: np.ndarray) -> np.ndarray:
    centred = xy - xy.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    order = np.argsort(centred @ direction, kind="stable")
    return _canonical(np.column_stack([order[:-1], order[1:]]).astype(np.int64))


def _canonical(edges: np.ndarray) -> np.ndarray:
    edges = np.sort(edges, axis=1)
    return edges[np.lexsort((edges[:, 1], edges[:, 0]))]


def _edge_keys(edges: np.ndarray, n: int) -> np.ndarray:
    return edges[:, 0].astype(np.int64) * n + edges[:, 1]
