"""Proximity graphs over points in a metric plane: Delaunay (DT), Gabriel (GG), relative neighbourhood (RNG).

All three are returned as (E, 2) int64 arrays of undirected edges with i < j, sorted. RNG ⊆ GG ⊆ DT,
and all three come from one pass over Qhull's triangles:
- DT: each triangle's sides, a side shared by two triangles kept by the one with the lower index
  (Qhull's neighbour table says which), so no edge list is ever deduplicated.
- GG: a DT edge pq is Gabriel iff no point lies in the closed disc with diameter pq. For a Delaunay
  edge it suffices to test the vertices opposite pq in its (one or two) triangles: the edge is
  Gabriel iff both opposite angles are acute (Matula & Sokal 1980).
- RNG: pq is kept iff no third point r has max(|pr|, |qr|) < |pq| (the open lune is empty). A side
  strictly longest in one of its triangles fails at once (the third vertex is in its lune: the
  Urquhart test); the rest are checked against every point of the disc of radius (√3/2)|pq| about
  the midpoint, which holds the lune (one vectorised k-d tree query; the rare disc holding more
  points is searched whole).

Points must be distinct: callers merge photos taken at one spot into one site first (see
`unique_sites`), which is also what keeps Qhull from silently dropping duplicates.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.spatial import Delaunay, QhullError, cKDTree

LUNE_CHUNK = 100_000  # edges per lune-test chunk


def unique_sites(xy: np.ndarray, decimals: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Merge points closer than ~10**-decimals (metres): (sites (S, 2), site_of_point (N,))."""
    keys = np.round(np.asarray(xy, np.float64), decimals)
    sites, inverse = np.unique(keys, axis=0, return_inverse=True)
    return sites, inverse.ravel()


def delaunay_edges(xy: np.ndarray) -> np.ndarray:
    """(N, 2) distinct points -> (E, 2) int64 Delaunay edges. Collinear input gives the path along the line."""
    return _triangle_edges(xy).dt


def gabriel_edges(xy: np.ndarray) -> np.ndarray:
    """(N, 2) distinct points -> (E, 2) int64 Gabriel edges."""
    return _triangle_edges(xy).gg


def rng_edges(xy: np.ndarray) -> np.ndarray:
    """(N, 2) distinct points -> (E, 2) int64 relative-neighbourhood edges."""
    return proximity_graphs(xy)["rng"]


def proximity_graphs(xy: np.ndarray) -> dict[str, np.ndarray]:
    """All three graphs from one triangulation: {"dt", "gg", "rng"} -> (E, 2) int64."""
    edges = _triangle_edges(xy)
    return {"dt": edges.dt, "gg": edges.gg, "rng": _rng_edges(xy, edges.gg[~edges.urquhart_blocked[edges.gabriel]])}


@dataclass(frozen=True)
class _TriangleEdges:
    """Every Delaunay edge once, sorted, with what its one or two triangles say about it."""

    dt: np.ndarray  # (E, 2)
    gabriel: np.ndarray  # (E,) bool: both opposite angles acute
    # (E,) bool: strictly the longest side of a triangle, so its third vertex is in the lune
    urquhart_blocked: np.ndarray

    @property
    def gg(self) -> np.ndarray:
        return self.dt[self.gabriel]


def _triangle_edges(xy: np.ndarray) -> _TriangleEdges:
    """Edges straight from Qhull's triangles and their neighbour table: each edge is kept by the triangle
    with the lower index (or its only one, on the hull), so there is nothing to deduplicate."""
    xy = np.asarray(xy, np.float64)
    tri = _triangulate(xy)
    if tri is None:
        path = _collinear_path(xy)
        # on a line every edge is Gabriel
        return _TriangleEdges(path, np.ones(len(path), bool), np.zeros(len(path), bool))
    simplices, neighbours = tri.simplices.astype(np.int64), tri.neighbors.astype(np.int64)
    corners = xy[simplices]  # (T, 3, 2); side i is opposite vertex i
    nxt, prv = corners[:, [1, 2, 0]], corners[:, [2, 0, 1]]
    obtuse = np.einsum("tic,tic->ti", nxt - corners, prv - corners) <= 0  # angle at vertex i >= 90°
    side = np.einsum("tic,tic->ti", nxt - prv, nxt - prv)  # squared length of side i
    longest = (side > side[:, [1, 2, 0]]) & (side > side[:, [2, 0, 1]])
    t, i = np.nonzero((neighbours == -1) | (neighbours > np.arange(len(simplices))[:, None]))
    u = neighbours[t, i]
    inner = u >= 0
    j = np.argmax(neighbours[np.where(inner, u, 0)] == t[:, None], axis=1)  # the same side, seen from triangle u
    blocked_gg = obtuse[t, i] | (inner & obtuse[np.where(inner, u, 0), j])
    blocked_urq = longest[t, i] | (inner & longest[np.where(inner, u, 0), j])
    ends = np.sort(np.column_stack([simplices[t, (i + 1) % 3], simplices[t, (i + 2) % 3]]), axis=1)
    order = np.argsort(_edge_keys(ends, len(xy)))
    return _TriangleEdges(ends[order], ~blocked_gg[order], blocked_urq[order])


def _triangulate(xy: np.ndarray) -> Delaunay | None:
    """Qhull's triangulation, or None when there is none (fewer than 3 points, or all collinear)."""
    if len(xy) < 3:
        return None
    try:
        return Delaunay(np.asarray(xy, np.float64))
    except (QhullError, ValueError):
        return None


def _rng_edges(xy: np.ndarray, gg_edges: np.ndarray, k: int = 8) -> np.ndarray:
    """The candidate edges whose lune is empty. Each is tested against the k points nearest its midpoint,
    and against its whole bounding disc where that holds more than k points."""
    if len(gg_edges) == 0:
        return gg_edges
    xy = np.asarray(xy, np.float64)
    p, q = xy[gg_edges[:, 0]], xy[gg_edges[:, 1]]
    length2 = np.einsum("ec,ec->e", q - p, q - p)  # computed as _in_lune does, so p and q never test inside
    mid, radius = (p + q) / 2, np.sqrt(length2) * (np.sqrt(3) / 2) * (1 + 1e-9)
    tree = cKDTree(xy)
    k = min(k, len(xy))
    dist, near = tree.query(mid, k=k, workers=-1 if len(mid) > LUNE_CHUNK else 1)
    near, inside = near.reshape(len(mid), k), dist.reshape(len(mid), k) <= radius[:, None]
    chunks = [slice(s, s + LUNE_CHUNK) for s in range(0, len(p), LUNE_CHUNK)]
    test = lambda c: _in_lune(xy, near[c], inside[c], p[c], q[c], length2[c])  # noqa: E731
    if len(chunks) == 1:
        blocked = test(chunks[0])
    else:
        with ThreadPoolExecutor(os.cpu_count()) as pool:  # numpy releases the GIL; cache-sized chunks also run faster
            blocked = np.concatenate(list(pool.map(test, chunks)))
    overflow = np.flatnonzero(inside[:, -1])  # the disc may hold more than k points: test all of them
    if len(overflow):
        hits = tree.query_ball_point(mid[overflow], r=radius[overflow], return_sorted=False, workers=-1)
        width = max(len(h) for h in hits)
        more = np.zeros((len(overflow), width), np.int64)
        valid = np.zeros((len(overflow), width), bool)
        for row, h in enumerate(hits):
            more[row, :len(h)], valid[row, :len(h)] = h, True
        blocked[overflow] = _in_lune(xy, more, valid, p[overflow], q[overflow], length2[overflow])
    return gg_edges[~blocked]


def _in_lune(xy: np.ndarray, cand: np.ndarray, valid: np.ndarray, p: np.ndarray, q: np.ndarray,
             length2: np.ndarray) -> np.ndarray:
    """(E,) whether any valid candidate r of each edge has max(|pr|², |qr|²) < |pq|² (p and q themselves never do)."""
    r = xy[np.where(valid, cand, 0)]
    dp, dq = r - p[:, None], r - q[:, None]
    far2 = np.maximum(np.einsum("ekc,ekc->ek", dp, dp), np.einsum("ekc,ekc->ek", dq, dq))
    return (valid & (far2 < length2[:, None])).any(axis=1)


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
    """Rows (i, j) with i < j, sorted: one int64 key sort instead of a two-column lexsort."""
    n = int(edges.max()) + 1 if len(edges) else 1
    keys = np.sort(_edge_keys(np.sort(edges, axis=1), n))
    return np.column_stack([keys // n, keys % n])


def _edge_keys(edges: np.ndarray, n: int) -> np.ndarray:
    return edges[:, 0].astype(np.int64) * n + edges[:, 1]
