import json

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import shapely
from pyproj import Geod

from geoloc_core.base.geo import LocalProjection
from geoloc_core.regions.graphs import delaunay_edges
from geoloc_core.regions.partition import (
    edge_weights,
    louvain_regions,
    region_areas_km2,
    region_polygons,
    region_table,
    site_embeddings,
)


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


# (lat, lon): Croatian towns on the Adriatic and inland; Natural Earth's 1:110m land leaves Zadar (coast) and Vis
# (island) at sea
COAST = {
    "Rijeka": (45.327, 14.442), "Zadar": (44.119, 15.231), "Sibenik": (43.735, 15.890), "Split": (43.508, 16.440),
    "Dubrovnik": (42.650, 18.094), "Zagreb": (45.815, 15.982), "Karlovac": (45.487, 15.548), "Gospic": (44.546, 15.375),
    "Knin": (44.041, 16.199), "Osijek": (45.555, 18.695), "Vis": (43.062, 16.183),
}


def test_land_clip_takes_the_sea_out_of_coastal_regions_and_keeps_a_disc_around_a_site_at_sea():
    from geoloc_core.config import RegionConfig
    from geoloc_core.regions.boundaries import clip_area

    lat, lon = np.array(list(COAST.values())).T
    proj = LocalProjection.centred_on(lat, lon)
    xy = proj.to_xy_m(lat, lon)
    labels = np.array([0, 1, 1, 1, 2, 0, 0, 1, 1, 2, 1])
    hull = region_polygons(xy, labels, proj)
    land = clip_area(RegionConfig(clip="land"), lat, lon)
    assert land.outside(lat, lon).tolist() == [name in ("Zadar", "Vis") for name in COAST]
    clipped = region_polygons(xy, labels, proj, clip=land)
    country = region_polygons(xy, labels, proj, clip=clip_area(RegionConfig(clip="country"), lat, lon))
    # the Adriatic, then Bosnia, go
    assert country["area_km2"].sum() < clipped["area_km2"].sum() < 0.95 * hull["area_km2"].sum()
    for k, geom in zip(clipped["region"], clipped.geometry):  # every site, Vis included, still lies in its own region
        assert shapely.contains_xy(geom, lon[labels == k], lat[labels == k]).all()
    vis = shapely.Point(COAST["Vis"][::-1])
    disc_km2 = np.pi * 5.0**2
    region_of_vis = clipped.geometry[clipped["region"] == 1].iloc[0]
    near_vis = gpd.GeoDataFrame(geometry=[region_of_vis.intersection(vis.buffer(0.15))], crs=4326)
    assert 0.98 * disc_km2 < region_areas_km2(near_vis)[0] < 1.01 * disc_km2  # the disc, and no sea beyond it


def test_a_boundary_clips_the_regions_reports_photos_outside_and_leaves_the_labels_alone(tiny_run, tmp_path):
    import pandas as pd

    from geoloc_core.cli import main
    from geoloc_core.runs.folders import Run

    run = Run(tiny_run)
    before, area_before = run.regions("dt").labels(), run.regions("dt").read_summary()["area_km2"].sum()
    photos = run.photo_table().frame
    boundary = shapely.box(14.9, 44.9, 16.2, 46.1)  # the western photos' side only
    path = tmp_path / "municipality.gpkg"
    gpd.GeoDataFrame({"id": [1]}, geometry=[boundary], crs=4326).to_file(path, driver="GPKG")
    assert main(["regions", "--run", str(tiny_run), "--graphs", "dt", "--boundary", str(path)]) == 0
    after = run.regions("dt").labels()
    assert (after["region"] == before["region"]).all()  # clipping draws polygons; the regions themselves are Louvain's
    assert after["outside"].tolist() == (photos["lon_deg"] > 16.2).tolist() and after["outside"].any()
    summary = run.regions("dt").read_summary()
    polygons = run.regions("dt").geodataframe()
    assert all(boundary.buffer(1e-9).contains(g) for g in polygons.geometry if g is not None and not g.is_empty)
    assert summary["area_km2"].sum() < area_before
    record = [r for r in run.read_metrics() if r.get("stage") == "regions"][-1]
    assert record["n_outside"] == int(after["outside"].sum())
    assert run.pipeline_config().regions.boundary == str(path)
    assert pd.read_csv(run.regions("dt").csv)["outside"].sum() == record["n_outside"]


def test_a_cross_validation_fold_survives_a_change_of_clip_but_not_of_resolution(tiny_run):
    """Clipping draws polygons only: a fold's regions (what the experiment grades) are not cut again for it."""
    from geoloc_core.analysis.crossval import prepare_fold
    from geoloc_core.cli import main
    from geoloc_core.runs.folders import Run

    run = Run(tiny_run)
    fold, is_test = run.cross_validation(2, 0).fold(0), run.read_split()[1]
    prepare_fold(run, fold, is_test, ("dt",))
    key, cut = fold.read_config()["fold"]["key"], fold.regions("dt").csv.stat().st_mtime_ns
    assert main(["regions", "--run", str(tiny_run), "--clip", "hull"]) == 0
    prepare_fold(run, fold, is_test, ("dt",))
    assert fold.read_config()["fold"]["key"] == key and fold.regions("dt").csv.stat().st_mtime_ns == cut
    assert main(["regions", "--run", str(tiny_run), "--resolution", "2.0"]) == 0
    prepare_fold(run, fold, is_test, ("dt",))
    assert fold.read_config()["fold"]["key"] != key
