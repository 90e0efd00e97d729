"""GIS exports: every format written, read back with geopandas, equal in geometry and attributes."""

import json

import numpy as np
import pandas as pd
import pytest
import shapely

from geoloc_core.cli import main
from geoloc_core.config import GIS_FORMATS
from geoloc_core.locate.predict import read_predictions
from geoloc_core.regions.boundaries import boundary_area
from geoloc_core.runs.folders import Run
from geoloc_core.share.gis import (
    FIELDS,
    SUFFIX,
    layer_name,
    prediction_layers,
    read_layers,
    region_layers,
    write_layers,
)


def assert_same_layers(written: dict, read: dict, fmt: str) -> None:
    assert list(read) == list(written) if fmt != "shp" else sorted(read) == sorted(written)
    for name, frame in written.items():
        back = read[name]
        assert back.crs.to_epsg() == 4326, (fmt, name)
        assert len(back) == len(frame)
        for column in frame.columns.drop("geometry"):
            a, b = frame[column].to_numpy(), back[column].to_numpy()
            if FIELDS[column] == "float":
                assert np.allclose(a.astype(float), b.astype(float), equal_nan=True, rtol=1e-9,
                                   atol=1e-9), (fmt, name, column)
            else:
                assert [str(v) for v in a] == [str(v) for v in b], (fmt, name, column)
        # a Shapefile reads a one-part MultiPolygon back as a Polygon: same shape
        for g, h in zip(frame.geometry, back.geometry):
            assert ((g.is_empty and (h is None or h.is_empty)) or shapely.hausdorff_distance(shapely.force_2d(h), g)
                    < 1e-6), (fmt, name)


@pytest.mark.parametrize("fmt", GIS_FORMATS)
def test_regions_export_reads_back_equal_with_one_layer_per_graph_and_iteration(tiny_run, tmp_path, fmt):
    layers = region_layers(Run(tiny_run))
    assert list(layers) == ["dt_wo", "gg_wo", "rng_wo"]
    # the Shapefile's limit, in every format
    assert all(len(c) <= 10 for frame in layers.values() for c in frame.columns)
    path = write_layers(layers, tmp_path / f"regions{SUFFIX[fmt]}", fmt)
    assert_same_layers(layers, read_layers(path, fmt), fmt)
    dt = layers["dt_wo"]
    assert dt["n_photos"].sum() == 30 and (dt["area_km2"] > 0).all() and dt["places"].str.len().gt(0).all()


def test_layer_names_of_iterations():
    assert [layer_name("dt", i)
            for i in ("w/o", "after FT2", "w/o (fine-tuning run)", "after FT1 (finetune_dt-2)")] == [
        "dt_wo", "dt_ft2", "dt_ftwo", "dt_ft1_finetune_dt-2"]


def test_cli_export_and_predict_write_every_format(tiny_run, exif_folder, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", str(exif_folder), "--run", str(tiny_run), "--out", str(out), "--k", "3", "--device", "cpu",
                 "--format", "gpkg"]) == 0
    frame = read_predictions(out / "predictions.geojson")
    layers = prediction_layers(frame)
    assert len(layers["predictions"]) == 24 and len(layers["neighbours"]) == 24 * 3
    csv = pd.read_csv(out / "predictions.csv")
    assert layers["predictions"]["place"].tolist() == csv["place"].tolist()  # named once, carried in every format
    assert layers["predictions"]["place_km"].tolist() == pytest.approx(csv["place_km"].tolist())
    assert all(p.startswith("near ") and p.endswith(" km)") for p in layers["neighbours"]["place"])
    assert_same_layers(layers, read_layers(out / "predictions.gpkg", "gpkg"), "gpkg")
    circle = layers["uncertainty"].to_crs("+proj=aeqd +lat_0=45.8 +lon_0=16 +units=m").geometry.iloc[0]
    r_km = layers["predictions"]["radius_km"].iloc[0]
    assert circle.area / 1e6 == pytest.approx(np.pi * r_km**2, rel=0.01)  # a geodesic circle of the radius
    for fmt in ("kml", "shp", "geojson"):
        assert main(["export", "--predictions", str(out / "predictions.csv"), "--format", fmt, "--out",
                     str(tmp_path / f"p{SUFFIX[fmt]}")]) == 0
        assert_same_layers(layers, read_layers(tmp_path / f"p{SUFFIX[fmt]}", fmt), fmt)
    assert main(["export", "--run", str(tiny_run), "--graphs", "dt", "--format", "gpkg", "--out",
                 str(tmp_path / "r.gpkg")]) == 0
    assert list(read_layers(tmp_path / "r.gpkg", "gpkg")) == ["dt_wo"]


def test_export_clipped_to_a_boundary_recomputes_areas_and_counts_photos_outside(tiny_run, tmp_path, capsys):
    photos = Run(tiny_run).photo_table().frame
    west = photos["lon_deg"] < 16.2  # a boundary around the western photos only
    boundary = shapely.box(14.9, 44.9, 16.2, 46.1)
    path = tmp_path / "west.geojson"
    path.write_text(pd.Series([boundary]).pipe(lambda s: __import__("geopandas").GeoSeries(s, crs=4326)).to_json())
    whole, clipped = region_layers(Run(tiny_run),
                                   ["dt"])["dt_wo"], region_layers(Run(tiny_run), ["dt"], boundary_area(path))["dt_wo"]
    assert clipped["area_km2"].sum() < whole["area_km2"].sum()
    assert clipped["n_outside"].sum() == (~west).sum() > 0
    assert all(boundary.buffer(1e-9).contains(g) for g in clipped.geometry if not g.is_empty)
    assert main(["export", "--run", str(tiny_run), "--graphs", "dt", "--boundary", str(path), "--format", "geojson",
                 "--out", str(tmp_path / "r.geojson")]) == 0
    assert f"{(~west).sum()} of {len(photos)} photos lie outside" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", GIS_FORMATS)
def test_long_non_ascii_paths_are_cut_alike_in_every_format(tmp_path, fmt):
    """A path of 200 two-byte characters (400 bytes) is longer than a Shapefile text field (254 bytes): every format
    must hold the same cut text, whole characters only."""
    path = "/photos/" + "é" * 200 + ".jpg"
    frame = pd.DataFrame({"path": [path], "lat_deg": [43.5], "lon_deg": [16.4], "radius_km": [1.0], "coverage": [0.8],
                          "region": [0],
                          "neighbours": [json.dumps([{"path": path, "lat_deg": 43.5, "lon_deg": 16.4, "similarity": 0.9,
                                                      "dist_km": 0.1}])],
                          "region_prob": [None], "true_lat_deg": [None], "true_lon_deg": [None], "error_km": [None],
                          "familiarity": [None], "unfamiliar": [False], "region_agrees": [None]})
    layers = prediction_layers(frame)
    assert all(len(f["path"].iat[0].encode()) <= 254 for f in (layers["predictions"], layers["neighbours"]))
    out = write_layers(layers, tmp_path / f"p{SUFFIX[fmt]}", fmt)
    assert_same_layers(layers, read_layers(out, fmt), fmt)


def test_export_of_predictions_refuses_a_boundary_it_would_ignore(tmp_path, caplog):
    csv = tmp_path / "predictions.csv"
    pd.DataFrame({"path": ["a.jpg"], "lat_deg": [43.5], "lon_deg": [16.4], "radius_km": [1.0], "coverage": [0.8],
                  "region": [0], "neighbours": ["[]"]}).to_csv(csv, index=False)
    boundary = tmp_path / "b.geojson"
    boundary.write_text(__import__("geopandas").GeoSeries([shapely.box(16, 43, 17, 44)], crs=4326).to_json())
    out = tmp_path / "p.gpkg"
    assert main(["export", "--predictions", str(csv), "--boundary", str(boundary), "--format", "gpkg", "--out",
                 str(out)]) == 2
    assert not out.exists() and "does not apply to --predictions" in caplog.text
    assert main(["export", "--predictions", str(csv), "--format", "gpkg", "--out", str(out)]) == 0 and out.exists()


def test_export_refuses_a_file_name_that_names_another_format(tmp_path, caplog):
    csv = tmp_path / "predictions.csv"
    pd.DataFrame({"path": ["a.jpg"], "lat_deg": [43.5], "lon_deg": [16.4], "radius_km": [1.0], "coverage": [0.8],
                  "region": [0], "neighbours": ["[]"]}).to_csv(csv, index=False)
    out = tmp_path / "p.kml"
    assert main(["export", "--predictions", str(csv), "--out", str(out)]) == 2  # --format defaults to gpkg
    assert not out.exists() and "names a kml file but --format is gpkg" in caplog.text
    assert main(["export", "--predictions", str(csv), "--format", "kml", "--out", str(out)]) == 0 and out.exists()
