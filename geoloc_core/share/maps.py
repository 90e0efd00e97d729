"""Shareable maps: a run's regions, photos and predictions as one self-contained HTML file (folium, Leaflet).

An analyst e-mails the file; it must open without a network. So everything is inside it: the
region polygons, the photos (clustered, a small JPEG thumbnail in each popup), the predictions,
and Leaflet and Leaflet.markercluster themselves, inlined from the pinned `xstatic-leaflet` and
`xstatic-leaflet-markercluster` packages (folium would link them from CDNs). The background is
Natural Earth's land and borders, drawn from embedded GeoJSON; an online tile layer is offered,
switched off, for when there is a network.

The regions of every graph and iteration are base layers (one shown at a time, switched in the
layer control); photos, predictions, borders and tiles are overlays.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from importlib import import_module
from pathlib import Path

import folium
import folium.plugins
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from branca.element import Element

from geoloc_core.base import storage
from geoloc_core.base.images import thumbnail_uri
from geoloc_core.regions.boundaries import ClipArea, countries
from geoloc_core.runs.folders import RegionFiles, Run
from geoloc_core.share.colors import palette
from geoloc_core.share.gis import prediction_layers, region_frame

log = logging.getLogger(__name__)

MAX_THUMBNAILS = 5000  # past this many photos the markers carry no thumbnail (the file would pass tens of MB)
TILES = ("https://{s}.basemaps.cartocdn.com/light_all/{z}/{x}/{y}{r}.png",
         '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors &copy; <a href="https://carto.com/">CARTO</a>')
SEA = "#dfe8f0"

PHOTO_MARKER = """function (row) {
    var marker = L.circleMarker(new L.LatLng(row[0], row[1]), {radius: 5, weight: 1, color: row[3], fillColor: row[3],
                                                              fillOpacity: 0.9, pane: "photos"});
    marker.bindPopup(row[2], {maxWidth: 280});
    return marker;
}"""  # folium writes "var callback = " before it


def run_map(run: Run, graphs: list[str] | None = None, predictions: pd.DataFrame | None = None,
            boundary: ClipArea | None = None, tiles: bool = True, thumb_px: int = 64) -> folium.Map:
    """The run's regions (every graph and iteration a layer), its photos, optionally a batch's predictions and a
    boundary.

    Args:
        graphs: the graphs to draw (default: every graph the run has).
        predictions: `predict.predictions_frame` rows (or a predictions file read back by `predict.read_predictions`).
        boundary: clip the polygons to it (areas recomputed) and mark the photos outside it.
        tiles: offer an online tile layer (switched off; the offline background is always there).
        thumb_px: thumbnail side in popups (0: none).
    """
    table = run.photo_table()
    lat, lon = table.lat_deg, table.lon_deg
    fmap = _base_map(np.concatenate([lat, _column(predictions, "lat_deg")]),
                     np.concatenate([lon, _column(predictions, "lon_deg")]), tiles)
    partitions = [(g, it, files) for g in (graphs or run.graphs()) for it, files in run.iterations(g).items()]
    if not partitions:
        raise FileNotFoundError(f"{run.root} has no regions yet: `geoloc run` (or `geoloc regions`) makes them")
    outside = np.zeros(len(lat), bool)
    regions_of_photo = []
    for i, (graph, iteration, files) in enumerate(partitions):
        frame = region_frame(files, graph, iteration, lat, lon, boundary)
        # ASCII: layer names pass through JSON as they are
        _add_regions(fmap, frame, f"{graph.upper()} {iteration}", show=i == 0)
        labels = files.labels()
        outside |= labels["outside"].to_numpy(bool)
        regions_of_photo.append((f"{graph.upper()} {iteration}", labels["region"].to_numpy()))
    if boundary is not None:
        outside |= boundary.outside(lat, lon)
        folium.GeoJson(shapely.to_geojson(boundary.geometry), name=boundary.name, pane="regions",
                       style_function=lambda _: {"color": "#222", "weight": 2, "fill": False,
                                                 "dashArray": "6 4"}).add_to(fmap)
    _add_photos(fmap, table.frame["path"].tolist(), [str(p) for p in table.abs_paths()], lat, lon, regions_of_photo,
                outside, thumb_px if len(lat) <= MAX_THUMBNAILS else 0)
    if predictions is not None and len(predictions):
        _add_predictions(fmap, predictions)
    folium.LayerControl(collapsed=len(partitions) > 8).add_to(fmap)
    return fmap


def prediction_map(predictions: pd.DataFrame, regions: RegionFiles | None = None, tiles: bool = True) -> folium.Map:
    """A batch of predictions: each with its uncertainty circle and neighbours, over the regions that label them."""
    fmap = _base_map(_column(predictions, "lat_deg"), _column(predictions, "lon_deg"), tiles)
    if regions is not None and regions.exists():
        frame = regions.geodataframe()
        frame = frame.assign(area_km2=frame["area_km2"].round(1) if "area_km2" in frame else np.nan)
        _add_regions(fmap, frame, "regions", show=True)
    _add_predictions(fmap, predictions)
    folium.LayerControl(collapsed=False).add_to(fmap)
    return fmap


def _column(frame: pd.DataFrame | None, name: str) -> np.ndarray:
    return np.asarray(frame[name], float) if frame is not None and len(frame) else np.zeros(0)


def _base_map(lat: np.ndarray, lon: np.ndarray, tiles: bool) -> folium.Map:
    """A map over the points' extent with no tiles by default: the sea colour and Natural Earth's
    land beneath everything."""
    fmap = folium.Map(tiles=None, control_scale=True)
    fmap.options["maxZoom"] = 19  # a tile layer would set it; marker clusters need it
    fmap.fit_bounds([[float(lat.min()), float(lon.min())], [float(lat.max()), float(lon.max())]], padding=(20, 20))
    fmap.get_root().header.add_child(Element(f"<style>.folium-map.leaflet-container {{ background: {SEA}; }}</style>"))
    # under the tiles: tiles that load cover it, tiles that fail do not
    folium.map.CustomPane("background", z_index=150).add_to(fmap)
    folium.map.CustomPane("regions", z_index=400, pointer_events=True).add_to(fmap)
    folium.map.CustomPane("photos", z_index=620, pointer_events=True).add_to(fmap)
    pad = 5.0 + 0.5 * max(float(np.ptp(lat)), float(np.ptp(lon)))
    land = countries().clip((lon.min() - pad, max(lat.min() - pad, -90), lon.max() + pad, min(lat.max() + pad, 90)))
    folium.GeoJson(json.loads(land[["name", "geometry"]].to_json()),
                   name="land and borders (Natural Earth 1:110m, offline)",
                   pane="background", control=True, interactive=False,
                   style_function=lambda _: {"color": "#9a9a9a", "weight": 1, "fillColor": "#f2efe9",
                                             "fillOpacity": 1}).add_to(fmap)
    if tiles:
        folium.TileLayer(TILES[0], attr=TILES[1], name="online map tiles (CARTO; needs a network)", overlay=True,
                         show=False).add_to(fmap)
    return fmap


def _add_regions(fmap: folium.Map, frame: gpd.GeoDataFrame, name: str, show: bool) -> None:
    """One partition as a base layer: polygons coloured by region, each with a popup of its table row."""
    colours = ["#{:02x}{:02x}{:02x}".format(*c) for c in palette(int(frame["region"].max()) + 1 if len(frame) else 1)]
    fields = [c for c in ("region", "n_photos", "n_outside", "area_km2", "places") if c in frame]
    aliases = {"region": "region", "n_photos": "training photos", "n_outside": "photos outside the area",
               "area_km2": "area (km²)", "places": "places"}
    data = frame[[*fields, "geometry"]].assign(colour=[colours[int(r)] for r in frame["region"]])
    if "area_km2" in data:
        data["area_km2"] = data["area_km2"].round(1)
    group = folium.FeatureGroup(name=name, overlay=False, show=show)
    folium.GeoJson(_escaped(data.to_json()), pane="regions",
                   style_function=lambda f: {"color": "#333", "weight": 1, "fillColor": f["properties"]["colour"],
                                             "fillOpacity": 0.45},
                   popup=folium.GeoJsonPopup(fields=fields, aliases=[aliases[f] for f in fields]),
                   tooltip=folium.GeoJsonTooltip(fields=["region"], aliases=["region"])).add_to(group)
    group.add_to(fmap)


def _add_photos(fmap: folium.Map, names: list[str], paths: list[str], lat: np.ndarray, lon: np.ndarray,
                regions_of_photo: list[tuple[str, np.ndarray]], outside: np.ndarray, thumb_px: int) -> None:
    """The photos, clustered; a popup with a thumbnail, the region in each partition,
    and whether it lies outside the area."""
    rows = []
    for i, (name, path) in enumerate(zip(names, paths)):
        thumb = thumbnail_uri(path, thumb_px) if thumb_px else ""
        image = f'<img src="{thumb}" style="max-width:{thumb_px}px;float:left;margin:0 8px 4px 0"/>' if thumb else ""
        regions = "<br/>".join(f"{label}: region {int(r[i])}" for label, r in regions_of_photo)
        note = "<br/><b>outside the clip area</b>" if outside[i] else ""
        rows.append([float(lat[i]), float(lon[i]), f"{image}<b>{_escape(name)}</b><br/>{lat[i]:.5f}, "
                                                   f"{lon[i]:.5f}<br/>{regions}{note}",
                     "#c0392b" if outside[i] else "#2c3e50"])
    folium.plugins.FastMarkerCluster(rows, callback=PHOTO_MARKER, name=f"photos ({len(rows)})").add_to(fmap)


def _add_predictions(fmap: folium.Map, predictions: pd.DataFrame) -> None:
    """Each prediction with its uncertainty circle (geodesic), its neighbours linked to it,
    and the truth where known."""
    layers = prediction_layers(predictions)
    group = folium.FeatureGroup(name=f"predictions ({len(layers['predictions'])})", show=True)
    folium.GeoJson(_escaped(layers["uncertainty"].to_json()), interactive=False,
                   style_function=lambda _: {"color": "#c0392b", "weight": 1, "fillColor": "#e74c3c",
                                             "fillOpacity": 0.12}).add_to(group)
    points, neighbours = layers["predictions"], layers["neighbours"]
    links = [shapely.LineString([(points["lon_deg"][p], points["lat_deg"][p]), (x, y)])
             for p, x, y in zip(neighbours["pred"], neighbours["lon_deg"], neighbours["lat_deg"])]
    if links:
        folium.GeoJson(shapely.to_geojson(shapely.MultiLineString(links)), interactive=False,
                       style_function=lambda _: {"color": "#2471a3", "weight": 1, "opacity": 0.5}).add_to(group)
        folium.GeoJson(_escaped(neighbours.to_json()),
                       marker=folium.CircleMarker(radius=4, color="#2471a3", fill=True, fill_opacity=0.9),
                       popup=folium.GeoJsonPopup(fields=["pred", "rank", "path", "place", "similarity", "dist_km"],
                                                 aliases=["neighbour of prediction", "rank", "photo", "place",
                                                          "similarity", "km from the prediction"])
                       ).add_to(group)
    truth = points[points["true_lat"].notna()]
    if len(truth):
        lines = [shapely.LineString([(a, b), (c, d)])
                 for a, b, c, d in zip(truth["lon_deg"], truth["lat_deg"], truth["true_lon"], truth["true_lat"])]
        folium.GeoJson(shapely.to_geojson(shapely.MultiLineString(lines)), interactive=False,
                       style_function=lambda _: {"color": "#1e8449", "weight": 2, "dashArray": "4 4"}).add_to(group)
        folium.GeoJson(_escaped(gpd.GeoDataFrame(truth[["pred", "path", "error_km"]],
                                                 geometry=gpd.points_from_xy(truth["true_lon"],
                                                                                                                     truth["true_lat"]),
                                                 crs="EPSG:4326").to_json()),
                       marker=folium.CircleMarker(radius=6, color="#1e8449", fill=True, fill_opacity=0.9),
                       popup=folium.GeoJsonPopup(fields=["path", "error_km"],
                                                 aliases=["truth of", "prediction's error (km)"])).add_to(group)
    shown = points.drop(columns=["layer", "lat_deg", "lon_deg"]).round(4)
    folium.GeoJson(_escaped(shown.to_json()),
                   marker=folium.CircleMarker(radius=7, color="#c0392b", fill=True, fill_opacity=0.95),
                   tooltip=folium.GeoJsonTooltip(fields=["place"], labels=False),
                   popup=folium.GeoJsonPopup(fields=["path", "place", "region", "reg_prob", "radius_km", "coverage",
                                                     "error_km", "familiar"],
                                             aliases=["photo", "place", "region", "region probability",
                                                      "uncertainty radius (km)", "coverage",
                                                      "error (km, where the truth is known)",
                                                      "familiarity"])).add_to(group)
    group.add_to(fmap)


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _escaped(geojson: str) -> dict:
    """A FeatureCollection whose text properties are HTML-escaped: folium's GeoJsonPopup and GeoJsonTooltip write every
    property into innerHTML, and the page embeds the JSON in a <script> (a `</script>` in a file name would end it)."""
    features = json.loads(geojson)
    for feature in features.get("features", []):
        feature["properties"] = {k: _escape(v) if isinstance(v, str) else v
                                 for k, v in (feature.get("properties") or {}).items()}
    return features


# one file, no network -------------------------------------------------------------------------

# What folium links from CDNs, and where the pinned xstatic packages keep the same files. None: not needed for what
# these maps draw
# (jQuery, Bootstrap, Font Awesome and awesome-markers serve folium's icon markers and HTML popups, which these maps do
# not use).
ASSETS: dict[str, tuple[str, str] | None] = {
    "leaflet.js": ("xstatic.pkg.leaflet", "leaflet.js"), "leaflet.css": ("xstatic.pkg.leaflet", "leaflet.css"),
    "leaflet.markercluster.js": ("xstatic.pkg.leaflet_markercluster", "leaflet.markercluster.js"),
    "MarkerCluster.css": ("xstatic.pkg.leaflet_markercluster", "MarkerCluster.css"),
    "MarkerCluster.Default.css": ("xstatic.pkg.leaflet_markercluster", "MarkerCluster.Default.css"),
    "jquery-3.7.1.min.js": None, "bootstrap.bundle.min.js": None, "leaflet.awesome-markers.js": None,
    "bootstrap.min.css": None,
    "bootstrap-glyphicons.css": None, "all.min.css": None, "leaflet.awesome-markers.css": None,
    "leaflet.awesome.rotate.min.css": None,
}
_LINKED = re.compile(r'<script src="(https?://[^"]+)"></script>|<link rel="stylesheet" href="(https?://[^"]+)"\s*/>')


def standalone_html(fmap: folium.Map) -> str:
    """The map as one HTML page that needs no network: Leaflet inlined, CDN links that these maps do not use dropped.

    Raises ValueError if the map links anything else (a folium feature that would need the network).
    """
    html = fmap.get_root().render()
    if re.search(r"\$\(", html):
        raise ValueError("the map uses jQuery (a folium Popup or Html element): draw popups through GeoJsonPopup or "
                         "the photo layer")
    return _LINKED.sub(_inline, html)


def _inline(match: re.Match) -> str:
    url = match.group(1) or match.group(2)
    name = url.rsplit("/", 1)[-1]
    if name not in ASSETS:
        raise ValueError(f"the map links {url}, which is not inlined: it would not open offline")
    if ASSETS[name] is None:
        return ""
    module, filename = ASSETS[name]
    folder = Path(import_module(module).BASE_DIR)
    text = (folder / filename).read_text(encoding="utf-8")
    if filename.endswith(".js"):
        return f"<script>{text}</script>"
    return f"<style>{_embed_images(text, folder)}</style>"


def _embed_images(css: str, folder: Path) -> str:
    """A stylesheet's url(images/x.png) as data URIs (the layer control's icon, Leaflet's default marker)."""
    def data_uri(m: re.Match) -> str:
        path = folder / m.group(1)
        if not path.is_file():
            return m.group(0)
        return f"url(data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"
    return re.sub(r"url\((images/[^)]+\.png)\)", data_uri, css)


def write_map(fmap: folium.Map, path: Path) -> Path:
    """The self-contained HTML file, written atomically."""
    return storage.write_bytes(Path(path), standalone_html(fmap).encode("utf-8"))

