"""Feature-weighted proximity graph -> Louvain regions, their summaries and polygons.

The graph's nodes are sites (distinct photo locations), its edges a proximity graph over them, each
weighted by the cosine similarity of the two sites' image features (the mean of their photos'
unit embeddings). Louvain cuts it into regions whose photos look alike and lie together.

Negative similarities: modularity is defined for non-negative weights (a negative degree breaks
Louvain's gain), so `negative="clip"` (default) sets them to 0, which keeps an edge between two
dissimilar sites from pulling them together while leaving the contrast among the positive ones
intact; `negative="shift"` maps cosine to (1 + cos) / 2 instead, keeping every edge but flattening
that contrast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import shapely
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from geoloc_core.base.geo import LocalProjection, spherical_mean

if TYPE_CHECKING:
    from geoloc_core.regions.boundaries import ClipArea

NEGATIVE_MODES = ("clip", "shift")


def site_embeddings(emb: np.ndarray, site_of_photo: np.ndarray, n_sites: int, chunk: int = 100_000) -> np.ndarray:
    """(N, D) unit photo embeddings (memory-mapped is fine) -> (S, D) unit site embeddings (normalised mean per site).

    A sparse (S, N) membership matrix times the embeddings: one pass, float32, no (S, D) float64 copy.
    """
    members = sparse.csc_matrix((np.ones(len(site_of_photo), np.float32),
                                 (site_of_photo, np.arange(len(site_of_photo)))),
                                shape=(n_sites, len(site_of_photo)))
    sums = np.zeros((n_sites, emb.shape[1]), np.float32)
    for s in range(0, len(site_of_photo), chunk):  # a memory-mapped float16 file is read a slice at a time
        part = members[:, s:s + chunk].tocsr()
        touched = np.flatnonzero(np.diff(part.indptr))  # only the sites this slice's photos belong to
        sums[touched] += part[touched] @ np.asarray(emb[s:s + chunk], np.float32)
    # in place: (S, D) is large
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), np.finfo(np.float32).tiny)
    return sums


def edge_weights(node_emb: np.ndarray, edges: np.ndarray, negative: str = "clip", chunk: int = 16_384) -> np.ndarray:
    """(E,) float64 weights from the cosine similarity of each edge's two unit node embeddings."""
    cos = np.empty(len(edges), np.float64)
    for s in range(0, len(edges), chunk):  # two (E, D) gathers at once would be gigabytes at 10^6 sites
        a, b = node_emb[edges[s:s + chunk, 0]].astype(np.float64), node_emb[edges[s:s + chunk, 1]].astype(np.float64)
        cos[s:s + chunk] = np.einsum("ij,ij->i", a, b)
    if negative == "clip":
        return np.clip(cos, 0.0, None)
    if negative == "shift":
        return (1.0 + cos) / 2.0
    raise ValueError(f"negative={negative!r}; choose from {NEGATIVE_MODES}")


@dataclass(frozen=True)
class Partition:
    """Louvain's result: `labels` (n_nodes,) int64 in 0..K-1, largest region first.

    `modularity` is the standard Q (resolution 1) whatever resolution Louvain ran at, so figures
    stay comparable across resolutions.
    """

    labels: np.ndarray
    modularity: float

    @property
    def n_regions(self) -> int:
        """Number of regions (K)."""
        return int(self.labels.max()) + 1 if len(self.labels) else 0


NETWORKX_MAX_NODES = 20_000  # past this, igraph's compiled multilevel Louvain does the work (~20x faster)


def louvain_regions(n_nodes: int, edges: np.ndarray, weights: np.ndarray, resolution: float = 1.0, seed: int = 0,
                    backend: str = "auto") -> Partition:
    """Louvain communities of the weighted graph, labelled by size so the numbering is stable.

    backend: "networkx" (the reference), "igraph" (the same algorithm compiled, for large graphs), or
    "auto" (networkx up to NETWORKX_MAX_NODES nodes). Modularity is computed the same way for both.
    """
    if backend == "auto":
        backend = "networkx" if n_nodes <= NETWORKX_MAX_NODES else "igraph"
    if backend == "networkx":
        graph = nx.Graph()
        graph.add_nodes_from(range(n_nodes))
        graph.add_weighted_edges_from(zip(edges[:, 0].tolist(), edges[:, 1].tolist(), weights.tolist()))
        communities = nx.community.louvain_communities(graph, weight="weight", resolution=resolution, seed=seed)
        labels = np.empty(n_nodes, np.int64)
        for k, members in enumerate(communities):
            labels[list(members)] = k
    elif backend == "igraph":
        labels = _igraph_louvain(n_nodes, edges, weights, resolution, seed)
    else:
        raise ValueError(f"unknown Louvain backend {backend!r}; choose auto, networkx or igraph")
    labels = _by_size(labels)
    return Partition(labels=labels, modularity=modularity(n_nodes, edges, weights, labels))


def _igraph_louvain(n_nodes: int, edges: np.ndarray, weights: np.ndarray, resolution: float, seed: int) -> np.ndarray:
    import random

    import igraph

    igraph.set_random_number_generator(random.Random(seed))
    try:
        graph = igraph.Graph(n=n_nodes, edges=edges.tolist())
        return np.asarray(graph.community_multilevel(weights=weights.tolist(), resolution=resolution).membership,
                          np.int64)
    finally:
        igraph.set_random_number_generator(random)


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel 0..K-1, largest region first (ties: the one holding the lowest node)."""
    _, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse.ravel()]


def modularity(n_nodes: int, edges: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> float:
    """Newman's Q at resolution 1 of a labelling of a weighted undirected graph (no self-loops)."""
    total = float(weights.sum())
    if total == 0:
        return 0.0
    strength = np.bincount(edges[:, 0], weights, n_nodes) + np.bincount(edges[:, 1], weights, n_nodes)
    same = labels[edges[:, 0]] == labels[edges[:, 1]]
    inside = np.bincount(labels[edges[same, 0]], weights[same], labels.max() + 1)
    degree = np.bincount(labels, strength, labels.max() + 1)
    return float((inside / total - (degree / (2 * total)) ** 2).sum())


@dataclass(frozen=True)
class SiteGraph:
    """A proximity graph over the training sites, and how every photo maps onto it.

    Attributes:
        site_of_photo: (N,) site index of each photo.
        site_xy_m: (S, 2) site positions in the local metric plane.
        train_sites: (S_train,) indices of the sites with at least one training photo.
        edges: (E, 2) graph edges between training sites, in global site indices.
        is_test: (N,) True for held-out photos.
    """

    site_of_photo: np.ndarray
    site_xy_m: np.ndarray
    train_sites: np.ndarray
    edges: np.ndarray
    is_test: np.ndarray

    def partition(self, emb: np.ndarray, negative: str = "clip", resolution: float = 1.0,
                  seed: int = 0) -> tuple[np.ndarray, Partition]:
        """(N, D) photo embeddings -> ((N,) region of every photo, Louvain partition of the training sites).

        Only training photos shape the site features; a held-out photo takes the region of its
        nearest training site (the Voronoi cell it lies in).
        """
        local_edges, weights = self.weighted_edges(emb, negative)
        partition = louvain_regions(len(self.train_sites), local_edges, weights, resolution, seed)
        return self.photo_labels(partition.labels), partition

    def weighted_edges(self, emb: np.ndarray, negative: str = "clip") -> tuple[np.ndarray, np.ndarray]:
        """(N, D) photo embeddings -> the graph Louvain cuts: (E, 2) edges in training-site numbering (0..S_train-1),
        (E,) weights.

        Only training photos shape the site features."""
        train = ~self.is_test
        node_emb = site_embeddings(emb[train], self.site_of_photo[train], len(self.site_xy_m))[self.train_sites]
        local = np.full(len(self.site_xy_m), -1)
        local[self.train_sites] = np.arange(len(self.train_sites))
        local_edges = local[self.edges]
        return local_edges, edge_weights(node_emb, local_edges, negative)

    def photo_labels(self, train_site_labels: np.ndarray) -> np.ndarray:
        """(S_train,) region of each training site -> (N,) region of every photo
        (a held-out one: its nearest training site's)."""
        nearest = cKDTree(self.site_xy_m[self.train_sites]).query(self.site_xy_m)[1]
        return train_site_labels[nearest][self.site_of_photo]


def match_labels(reference: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Renumbering of `labels` onto `reference`'s numbers: (labels.max() + 1,) new number per label.

    Two partitions of the same photos (two iterations) number their regions independently. Matching
    each region to the one it shares most photos with (Hungarian, one to one) lets both maps use
    one colour per region and makes `mapping[labels] != reference` the photos that changed region.
    A region with no counterpart gets a number `reference` does not use.
    """
    overlap = np.zeros((reference.max() + 1, labels.max() + 1), np.int64)
    np.add.at(overlap, (reference, labels), 1)
    rows, cols = linear_sum_assignment(-overlap)
    shared = overlap[rows, cols] > 0
    mapping = np.full(labels.max() + 1, -1)
    mapping[cols[shared]] = rows[shared]
    unmatched = mapping < 0
    mapping[unmatched] = reference.max() + 1 + np.arange(unmatched.sum())
    return mapping


def region_table(labels: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray) -> pd.DataFrame:
    """Per region: photo count and centroid (spherical mean of its photos), one row per label 0..K-1."""
    rows = []
    for k in range(int(labels.max()) + 1 if len(labels) else 0):
        m = labels == k
        lat, lon = spherical_mean(lat_deg[m], lon_deg[m]) if m.any() else (np.nan, np.nan)
        rows.append({"region": k, "n_photos": int(m.sum()), "lat_deg": lat, "lon_deg": lon})
    return pd.DataFrame(rows, columns=["region", "n_photos", "lat_deg", "lon_deg"])


def region_polygons(site_xy_m: np.ndarray, site_labels: np.ndarray, projection: LocalProjection,
                    margin: float = 0.05, clip: ClipArea | None = None) -> gpd.GeoDataFrame:
    """Regions as polygons in EPSG:4326: each site's Voronoi cell, merged by region, with its area in km².

    Without `clip` the cells are clipped to the sites' convex hull grown by `margin` of its extent, so
    the polygons tile the area the photos cover and a test location falls in the region of its
    nearest site. With a land `clip` they are clipped to the hull on land (a site the land leaves at
    sea keeps a disc of `clip.buffer_km` around it); with a boundary (`clip.tile`) the cells are
    extended over the boundary and clipped to it, so the regions tile it. Areas are measured after
    clipping. A region can come out empty (all its sites outside a boundary): its geometry is then empty.
    """
    points = shapely.multipoints(site_xy_m)
    extent = float(np.ptp(site_xy_m, axis=0).max()) if len(site_xy_m) > 1 else 1.0
    area = shapely.convex_hull(points).buffer(max(extent * margin, 1.0))
    if clip is not None:
        area = _clip_in_plane(area, site_xy_m, projection, clip)
    envelope = shapely.envelope(shapely.union(area, points))
    if len(site_xy_m) >= 3 and np.linalg.matrix_rank(site_xy_m - site_xy_m.mean(axis=0)) == 2:
        cells = shapely.get_parts(shapely.voronoi_polygons(points, extend_to=envelope, ordered=True))
    else:  # one or two sites, or a line of them: no Voronoi diagram worth the name
        reach = max(extent, 1.0) + float(np.ptp(shapely.get_coordinates(envelope), axis=0).max())
        cells = shapely.buffer(shapely.points(site_xy_m), reach)
    cells = np.array([_polygonal(c) for c in shapely.intersection(cells, area)], dtype=object)
    frame = gpd.GeoDataFrame({"region": site_labels, "geometry": cells}, crs=projection.crs)
    merged = frame.dissolve(by="region", as_index=False).to_crs("EPSG:4326")
    # a straight edge of the plane bends in lon/lat: cut once more where the boundary is drawn
    if clip is not None and clip.tile:
        merged["geometry"] = [_polygonal(g) for g in shapely.intersection(merged.geometry.to_numpy(), clip.geometry)]
    return merged.assign(area_km2=region_areas_km2(merged))


def _clip_in_plane(hull: shapely.Geometry, site_xy_m: np.ndarray, projection: LocalProjection,
                   clip: ClipArea) -> shapely.Geometry:
    """The area the cells may cover, in the metric plane: the boundary, or the hull on land
    (plus discs around sites at sea)."""
    geometry = clip.geometry
    if not clip.tile:  # only the land near the sites: projecting the whole world into a local plane folds it over
        lat, lon = projection.to_latlon(shapely.get_coordinates(hull))
        pad = 1.0 + 0.1 * max(np.ptp(lat), np.ptp(lon))
        geometry = shapely.clip_by_rect(geometry, lon.min() - pad, max(lat.min() - pad, -90), lon.max() + pad,
                                        min(lat.max() + pad, 90))
    # edges of at most 0.01 degrees, so they stay where they are once projected
    geometry = shapely.segmentize(geometry, 0.01)
    plane = gpd.GeoSeries([geometry], crs="EPSG:4326").to_crs(projection.crs).iloc[0]
    plane = shapely.make_valid(plane) if not plane.is_valid else plane
    if clip.tile:
        return plane
    lat, lon = projection.to_latlon(site_xy_m)
    at_sea = clip.outside(lat, lon)
    if at_sea.any() and clip.buffer_km > 0:
        plane = shapely.union(plane, shapely.buffer(shapely.multipoints(site_xy_m[at_sea]), clip.buffer_km * 1000))
    return shapely.intersection(hull, plane)


def _polygonal(geometry: shapely.Geometry) -> shapely.Geometry:
    """The polygons of a clipped cell (a cut along a coast can leave slivers of lines or points beside them)."""
    if geometry is None:  # a region whose cells all fell outside a boundary
        return shapely.Polygon()
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    parts = [p for p in shapely.get_parts(geometry) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def region_areas_km2(polygons: gpd.GeoDataFrame) -> np.ndarray:
    """Each polygon's area in km², measured in a Lambert azimuthal equal-area plane (areas true everywhere)."""
    lon0, lat0 = np.asarray(polygons.total_bounds).reshape(2, 2).mean(axis=0)
    return (polygons.to_crs(f"+proj=laea +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m +no_defs")
            .area / 1e6).to_numpy()
