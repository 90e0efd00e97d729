import json

import networkx as nx
import numpy as np
import pytest
import shapely
from pyproj import Geod

from geoloc_core.geo import LocalProjection
from geoloc_core.graphs import delaunay_edges
from geoloc_core.regions import edge_weights, louvain_regions, region_polygons, region_table, site_embeddings


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_site_embedding_is_the_normalised_mean_of_its_photos():
    emb = unit(np.array([[1.0, 0], [0, 1], [1, 0]]))
    sites = site_embeddings(emb.astype(np.float32), np.array([0, 0, 1]), 2)
    assert np.allclose(sites, [[0.70710677, 0.70710677], [1, 0]])


def test_negative_similarity_is_clipped_or_shifted():
    node = np.array([[1.0, 0], [-1, 0], [0.6, 0.8]])
    edges = np.array([[0, 1], [0, 2]])
    assert np.allclose(edge_weights(node, edges, "clip"), [0.0, 0.6])
    assert np.allclose(edge_weights(node, edges, "shift"), [0.0, 0.8])
    with pytest.raises(ValueError):
        edge_weights(node, edges, "abs")


def two_looks_world(seed=0):
    """Points on a plane, west half and east half with opposite features: Louvain must split them there."""
    rng = np.random.default_rng(seed)
    xy = rng.random((120, 2)) * [2000, 1000]
    east = xy[:, 0] > 1000
    emb = unit(np.where(east[:, None], [1.0, 0.1], [0.1, 1.0]) + rng.normal(0, 0.05, (120, 2)))
    return xy, emb, east


def test_louvain_follows_the_features_and_is_a_seeded_partition():
    xy, emb, east = two_looks_world()
    edges = delaunay_edges(xy)
    weights = edge_weights(emb, edges)
    part = louvain_regions(len(xy), edges, weights, resolution=0.5, seed=0)
    assert sorted(np.unique(part.labels)) == list(range(part.n_regions))  # a partition labelled 0..K-1
    # no region mixes the two halves
    for k in range(part.n_regions):
        assert len(set(east[part.labels == k])) == 1
    again = louvain_regions(len(xy), edges, weights, resolution=0.5, seed=0)
    assert (again.labels == part.labels).all() and again.modularity == part.modularity
    graph = nx.Graph()
    graph.add_weighted_edges_from(zip(edges[:, 0], edges[:, 1], weights))
    communities = [set(np.flatnonzero(part.labels == k)) for k in range(part.n_regions)]
    assert abs(nx.community.modularity(graph, communities) - part.modularity) < 1e-9
    finer = louvain_regions(len(xy), edges, weights, resolution=4.0, seed=0)
    assert finer.n_regions > part.n_regions


def test_region_table_counts_and_centroids():
    labels = np.array([0, 0, 1])
    t = region_table(labels, np.array([10.0, 20.0, -5.0]), np.array([0.0, 0.0, 3.0]))
    assert t["n_photos"].tolist() == [2, 1]
    assert abs(t["lat_deg"][0] - 15.0) < 0.05 and t["lat_deg"][1] == pytest.approx(-5.0)


def test_region_polygons_tile_the_area_and_contain_their_sites():
    rng = np.random.default_rng(2)
    lat, lon = 45 + rng.random(60), 15 + rng.random(60)
    proj = LocalProjection.centred_on(lat, lon)
    xy = proj.to_xy_m(lat, lon)
    labels = (xy[:, 0] > 0).astype(int) + 2 * (xy[:, 1] > 0)
    polys = region_polygons(xy, labels, proj)
    assert sorted(polys["region"]) == sorted(set(labels))
    assert polys.crs.to_epsg() == 4326
    for k, geom in zip(polys["region"], polys.geometry):
        inside = shapely.contains_xy(geom, lon[labels == k], lat[labels == k])
        assert inside.all()
    union = shapely.union_all(polys.geometry.to_numpy())
    assert abs(union.area - sum(g.area for g in polys.geometry)) < 1e-9  # no overlaps
    geodesic_km2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(union)[0]) / 1e6  # ~ 1 degree squared at 45 N
    assert polys["area_km2"].sum() == pytest.approx(geodesic_km2, rel=1e-3) and 8000 < geodesic_km2 < 12000
    assert json.loads(polys.to_json())["features"][0]["geometry"]["type"] in ("Polygon", "MultiPolygon")


def test_igraph_backend_matches_networkx_modularity_on_a_feature_weighted_delaunay_graph():
    rng = np.random.default_rng(5)
    xy = rng.random((3000, 2)) * 1e4
    emb = np.column_stack([np.sin(xy[:, 0] / 1500), np.cos(xy[:, 1] / 1500), rng.normal(scale=0.3, size=(3000, 6))])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    edges = delaunay_edges(xy)
    weights = edge_weights(emb, edges)
    reference = louvain_regions(len(xy), edges, weights, backend="networkx")
    fast = louvain_regions(len(xy), edges, weights, backend="igraph")
    assert fast.modularity == pytest.approx(reference.modularity, rel=0.01)
    graph = nx.Graph()
    graph.add_weighted_edges_from(zip(edges[:, 0], edges[:, 1], weights))
    communities = [set(np.flatnonzero(fast.labels == k)) for k in range(fast.n_regions)]
    assert fast.modularity == pytest.approx(nx.community.modularity(graph, communities), abs=1e-9)
    assert (louvain_regions(len(xy), edges, weights, backend="igraph").labels == fast.labels).all()  # seeded
    assert np.all(np.diff(np.bincount(fast.labels)) <= 0)  # largest region first
    with pytest.raises(ValueError, match="unknown Louvain backend"):
        louvain_regions(len(xy), edges, weights, backend="leiden-magic")
