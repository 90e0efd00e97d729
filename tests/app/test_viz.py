import json

import numpy as np
import pandas as pd
import pytest

from geoloc_core.base.images import thumbnail_uri
from geoloc_core.locate.predict import Neighbour, Prediction
from geoloc_core.share.colors import palette
from views import figures


def layer_types(deck) -> list[str]:
    return [layer["@@type"] for layer in json.loads(deck.to_json())["layers"]]


def test_regions_deck_draws_background_polygons_edges_and_photos():
    photos = pd.DataFrame({"lat_deg": [45.0, 45.1], "lon_deg": [16.0, 16.2], "region": [0, 1], "path": ["a", "b"]})
    polygons = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"region": k}, "geometry": {"type": "Point", "coordinates": [16, 45]}}
        for k in (0, 1)]}
    edges = pd.DataFrame({"lat0": [45.0], "lon0": [16.0], "lat1": [45.1], "lon1": [16.2]})
    deck = figures.regions_deck(photos, polygons, edges)
    assert layer_types(deck) == ["GeoJsonLayer", "GeoJsonLayer", "LineLayer", "ScatterplotLayer"]
    assert json.loads(deck.to_json()).get("mapStyle") in (None, "")  # offline: no tile style
    assert len(figures.world_outlines()["features"]) == 177
    assert polygons["features"][0]["properties"] == {"region": 0}  # the caller's GeoJSON is left untouched
    for layer in json.loads(deck.to_json())["layers"]:  # pydeck turns a string prop into an expression ("@@=pixels")
        assert not any(isinstance(v, str) and v.startswith("@@=") for k, v in layer.items()
                       if not k.startswith("get")), layer


def test_prediction_deck_shows_radius_region_neighbours_and_truth():
    p = Prediction("q.jpg", 45.0, 16.0, 12.5, 0.9, 3, [Neighbour("n.jpg", 45.1, 16.1, 0.8, 13.6)], 45.2, 16.3)
    deck = figures.prediction_deck(p, {"type": "FeatureCollection", "features": []})
    spec = json.loads(deck.to_json())
    assert layer_types(deck) == ["GeoJsonLayer", "GeoJsonLayer", "ScatterplotLayer", "ScatterplotLayer",
                                 "ScatterplotLayer"]
    assert spec["layers"][2]["data"][0]["radius_m"] == 12500.0
    assert "truth, " in json.dumps(spec["layers"][4]["data"])
    assert spec["layers"][3]["data"][0]["thumb"] == ""  # n.jpg does not exist: no thumbnail, no error


def test_tiles_when_reachable_outlines_when_not(monkeypatch, tmp_path):
    photos = pd.DataFrame({"lat_deg": [45.0], "lon_deg": [16.0], "region": [0], "path": ["a"]})
    online = json.loads(figures.regions_deck(photos, online=True).to_json())
    assert (online["mapStyle"] == figures.TILE_STYLE and [la["@@type"] for la in online["layers"]]
            == ["ScatterplotLayer"])
    import time

    # nothing listens there: a closed network
    monkeypatch.setattr(figures, "TILE_STYLE", "http://127.0.0.1:9/style.json")
    start = time.perf_counter()
    assert figures.tiles_reachable(timeout_s=1.0) is False
    assert time.perf_counter() - start < 5  # answered, not hung
    monkeypatch.setenv("GEOLOC_TILES", "off")
    monkeypatch.setattr(figures.urllib.request, "urlopen",
                        lambda *a, **k: pytest.fail("probed the network although told not to"))
    assert figures.tiles_reachable() is False


def test_error_deck_colours_lines_by_error_and_thumbnails_are_data_uris(tmp_path):
    frame = pd.DataFrame({"path": ["a", "b"], "lat_deg": [45.0, 44.0], "lon_deg": [16.0, 15.0],
                          "true_lat_deg": [45.0, 46.0], "true_lon_deg": [16.001, 18.0], "error_km": [0.08, 330.0]})
    spec = json.loads(figures.error_deck(frame).to_json())
    near, far = spec["layers"][1]["data"]
    assert near["color"][1] > far["color"][1] and far["color"][0] > near["color"][0]  # green near, red far
    from PIL import Image

    Image.new("RGB", (400, 300), (200, 30, 30)).save(tmp_path / "p.jpg")
    uri = thumbnail_uri(str(tmp_path / "p.jpg"))
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) < 5000


def test_palette_is_distinct():
    colours = palette(12)
    assert len({tuple(c) for c in colours}) == 12


# region analysis figures -------------------------------------------------------------------------

def test_confusion_deck_draws_one_arc_per_confused_pair_and_fills_regions_by_accuracy():
    summary = pd.DataFrame({"region": [0, 1, 2], "lat_deg": [45.0, 45.5, 46.0], "lon_deg": [15.0, 16.0, 17.0]})
    matrix = np.array([[4, 0, 0], [3, 1, 0], [0, 1, 0]])
    polygons = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"region": r}, "geometry": {"type": "Point", "coordinates": [15.0 + r, 45.0]}}
        for r in range(3)]}
    deck = json.loads(figures.confusion_deck(summary, matrix, polygons).to_json())
    [arcs] = [layer for layer in deck["layers"] if layer["@@type"] == "ArcLayer"]
    assert [(a["region"], a["pred"], a["count"]) for a in arcs["data"]] == [(1, 0, 3), (2, 1, 1)]
    assert arcs["data"][0]["lon0"] == 16.0 and arcs["data"][0]["lon1"] == 15.0  # from the true region to the one chosen
    [fill] = [layer for layer in deck["layers"] if layer["@@type"] == "GeoJsonLayer"
              and layer["data"]["features"][0]["properties"].get("color")]
    colours = [f["properties"]["color"] for f in fill["data"]["features"]]
    assert colours[0][:3] == [26, 152, 80] and colours[2][:3] == [215, 48, 39]  # all right: green; none right: red
    assert "no held-out" not in fill["data"]["features"][2]["properties"]["label"]


def test_stability_deck_colours_solid_edges_apart_and_together_and_thickens_doubtful_ones():
    edges = pd.DataFrame({"lat0": [45.0, 45.0, 45.0], "lon0": [15.0, 15.1, 15.2], "lat1": [45.1, 45.1, 45.1],
                          "lon1": [15.0, 15.1, 15.2], "rate": [0.0, 0.5, 1.0], "boundary": [True, False, False]})
    [lines] = [layer for layer in json.loads(figures.stability_deck(edges).to_json())["layers"] if layer["@@type"]
               == "LineLayer"]
    colour = [d["color"][:3] for d in lines["data"]]
    width = [d["width"] for d in lines["data"]]
    assert colour[0] == [215, 48, 39] and colour[2] == [49, 54, 149] and colour[1] == [254, 224, 139]
    assert width[1] > width[0] == width[2]
    accessors = {"getColor", "getSourcePosition", "getTargetPosition", "getWidth"}
    # a string setting read as a column
    assert not [k for k, v in lines.items() if k not in accessors and str(v).startswith("@@=")]


def test_coverage_deck_fills_hexagons_by_value_and_greys_cells_without_errors():
    ring = [[15.0, 45.0], [15.1, 45.0], [15.1, 45.1], [15.0, 45.1], [15.0, 45.0]]
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                 "properties": {"n_photos": n, "n_errors": 1 if e is not None else 0, "median_error_km": e,
                                "p90_error_km": e}}
                for n, e in ((10, 1.0), (1, 100.0), (3, None))]
    deck = json.loads(figures.coverage_deck({"type": "FeatureCollection", "features": features},
                                            "median_error_km").to_json())
    colours = [f["properties"]["color"][:3] for f in deck["layers"][-1]["data"]["features"]]
    assert colours == [[26, 152, 80], [215, 48, 39], [170, 170, 170]]
    dense = json.loads(figures.coverage_deck({"type": "FeatureCollection", "features": features}, "n_photos").to_json())
    # the densest: darkest
    assert [f["properties"]["color"][:3] for f in dense["layers"][-1]["data"]["features"]][0] == [8, 48, 107]
