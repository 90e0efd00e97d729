import json

import pandas as pd

from geoloc_core import viz
from geoloc_core.predict import Neighbour, Prediction


def layer_types(deck) -> list[str]:
    return [layer["@@type"] for layer in json.loads(deck.to_json())["layers"]]


def test_regions_deck_draws_background_polygons_edges_and_photos():
    photos = pd.DataFrame({"lat_deg": [45.0, 45.1], "lon_deg": [16.0, 16.2], "region": [0, 1], "path": ["a", "b"]})
    polygons = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"region": k}, "geometry": {"type": "Point", "coordinates": [16, 45]}} for k in (0, 1)]}
    edges = pd.DataFrame({"lat0": [45.0], "lon0": [16.0], "lat1": [45.1], "lon1": [16.2]})
    deck = viz.regions_deck(photos, polygons, edges)
    assert layer_types(deck) == ["GeoJsonLayer", "GeoJsonLayer", "LineLayer", "ScatterplotLayer"]
    assert json.loads(deck.to_json()).get("mapStyle") in (None, "")  # offline: no tile style
    assert len(viz.world_outlines()["features"]) == 177
    assert polygons["features"][0]["properties"] == {"region": 0}  # the caller's GeoJSON is left untouched


def test_prediction_deck_shows_radius_region_neighbours_and_truth():
    p = Prediction("q.jpg", 45.0, 16.0, 12.5, 0.9, 3, [Neighbour("n.jpg", 45.1, 16.1, 0.8, 13.6)], 45.2, 16.3)
    deck = viz.prediction_deck(p, {"type": "FeatureCollection", "features": []})
    spec = json.loads(deck.to_json())
    assert layer_types(deck) == ["GeoJsonLayer", "GeoJsonLayer", "ScatterplotLayer", "ScatterplotLayer", "ScatterplotLayer"]
    assert spec["layers"][2]["data"][0]["radius_m"] == 12500.0
    assert "EXIF truth" in json.dumps(spec["layers"][4]["data"])


def test_palette_is_distinct():
    colours = viz.palette(12)
    assert len({tuple(c) for c in colours}) == 12
