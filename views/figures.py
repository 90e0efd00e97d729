"""Map and chart objects for the app: built here, shown by the pages. No Streamlit in this module.

Maps are pydeck layers (which keep thousands of points smooth) over a tile base map when the tile
server answers (`tiles_reachable`), else over an offline background: Natural Earth country outlines
shipped with geopandas 0.14. A machine without internet gets the outlines at once, never a hang.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import urllib.request
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import pydeck as pdk

from geoloc_core.base.geo import haversine_km
from geoloc_core.base.images import thumbnail_uri
from geoloc_core.locate.predict import Prediction
from geoloc_core.share.charts import compare_chart, experiment_chart
from geoloc_core.share.colors import palette, viridis

log = logging.getLogger(__name__)

# CARTO Positron, what pydeck's "light" uses
TILE_STYLE = "https://basemaps.cartocdn.com/gl/positron-gl-style/style.json"


def tiles_reachable(timeout_s: float = 1.5) -> bool:
    """Whether the tile server answers within `timeout_s` (callers cache this; it is a network round trip).

    GEOLOC_TILES=off skips the probe on machines known to be offline. A failed probe is logged
    with its reason and the maps fall back to the offline outlines; it never raises.
    """
    if os.environ.get("GEOLOC_TILES", "").lower() in ("off", "0", "no"):
        return False
    try:
        with urllib.request.urlopen(urllib.request.Request(TILE_STYLE, method="HEAD"), timeout=timeout_s):
            return True
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # HTTPException: a reply cut short or garbled by a proxy
        log.info("tile server %s not reachable (%s): maps draw over offline country outlines", TILE_STYLE, exc)
        return False


@lru_cache(maxsize=1)
def world_outlines() -> dict:
    """Natural Earth 1:110m countries as GeoJSON, read from geopandas' bundled copy (offline)."""
    import geopandas as gpd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return json.loads(gpd.read_file(gpd.datasets.get_path("naturalearth_lowres"))[["name", "geometry"]].to_json())


def _base(online: bool) -> tuple[list[pdk.Layer], str | None]:
    """(background layers, map style): tiles when online, the offline outlines otherwise."""
    if online:
        return [], TILE_STYLE
    return [pdk.Layer("GeoJsonLayer", world_outlines(), stroked=True, filled=True, get_fill_color=[238, 236, 230],
                      get_line_color=[150, 150, 150], line_width_min_pixels=1, pickable=False)], None


def _view(lat: np.ndarray, lon: np.ndarray) -> pdk.ViewState:
    span = max(float(np.ptp(lat)) if len(lat) else 1.0, float(np.ptp(lon)) if len(lon) else 1.0, 1e-3)
    zoom = float(np.clip(np.log2(360 / span) - 0.5, 1, 18))
    return pdk.ViewState(latitude=float(np.mean(lat)), longitude=float(np.mean(lon)), zoom=zoom)


def regions_deck(photos: pd.DataFrame, polygons: dict | None = None, edges: pd.DataFrame | None = None,
                 online: bool = False, ringed: np.ndarray | None = None) -> pdk.Deck:
    """Photos coloured by region over the region polygons, optionally with the graph's edges.

    Args:
        photos: columns lat_deg, lon_deg, region (and anything else shown in the tooltip, e.g. path).
        polygons: region GeoJSON (features with a `region` property).
        edges: columns lat0, lon0, lat1, lon1.
        online: draw over tiles (see `tiles_reachable`) instead of the offline outlines.
        ringed: (len(photos),) bool, photos to circle in black (e.g. those that changed region).
    """
    colours = palette(int(photos["region"].max()) + 1 if len(photos) else 1)
    photos = photos.assign(color=[colours[int(r) % len(colours)] for r in photos["region"]])
    layers, style = _base(online)
    if polygons is not None:
        polygons = json.loads(json.dumps(polygons))
        for feature in polygons["features"]:
            feature["properties"]["color"] = colours[int(feature["properties"]["region"]) % len(colours)] + [70]
        layers.append(pdk.Layer("GeoJsonLayer", polygons, stroked=True, filled=True, get_fill_color="properties.color",
                                get_line_color=[60, 60, 60], line_width_min_pixels=1, pickable=True))
    if edges is not None and len(edges):
        layers.append(pdk.Layer("LineLayer", edges, get_source_position=["lon0", "lat0"],
                                get_target_position=["lon1", "lat1"], get_color=[80, 80, 80, 120], get_width=1))
    layers.append(pdk.Layer("ScatterplotLayer", photos, get_position=["lon_deg", "lat_deg"], get_fill_color="color",
                            get_radius=1, radius_min_pixels=4, radius_max_pixels=4, pickable=True))
    if ringed is not None and ringed.any():
        layers.append(pdk.Layer("ScatterplotLayer", photos[ringed], get_position=["lon_deg", "lat_deg"], filled=False,
                                stroked=True, get_line_color=[20, 20, 20], line_width_min_pixels=2, get_radius=1,
                                radius_min_pixels=8, radius_max_pixels=8))
    return pdk.Deck(layers=layers, initial_view_state=_view(photos["lat_deg"], photos["lon_deg"]), map_style=style,
                    tooltip={"text": "region {region}\n{path}"})


def places_deck(photos: pd.DataFrame, located: pd.DataFrame | None = None, online: bool = False) -> pdk.Deck:
    """Photos coloured by place (the unit every split keeps whole), each place a disc just covering its photos; the
    run's answers for its photos without a location, if any, as black rings.

    Args:
        photos: columns path, lat_deg, lon_deg, group.
        located: columns path, lat_deg, lon_deg (`Run.located`), or None.
        online: draw over tiles (see `tiles_reachable`) instead of the offline outlines.
    """
    code = pd.factorize(photos["group"])[0]
    colours = palette(min(int(code.max()) + 1 if len(code) else 1, 12))
    photos = photos.assign(color=[colours[c % len(colours)] for c in code], place=code)
    size = photos.groupby("place").agg(group=("group", "first"), lat_deg=("lat_deg", "mean"),
                                       lon_deg=("lon_deg", "mean"), n=("path", "size"))
    centre_lat, centre_lon = size["lat_deg"].to_numpy()[code], size["lon_deg"].to_numpy()[code]
    reach_km = pd.Series(haversine_km(photos["lat_deg"], photos["lon_deg"], centre_lat, centre_lon)).groupby(code).max()
    size = size.assign(radius_m=np.maximum(reach_km.to_numpy() * 1000, 5.0),
                       color=[colours[c % len(colours)] + [60] for c in size.index],
                       label=[f"place {g}: {n} photos" for g, n in zip(size["group"], size["n"])])
    layers, style = _base(online)
    layers.append(pdk.Layer("ScatterplotLayer", size, get_position=["lon_deg", "lat_deg"], get_radius="radius_m",
                            filled=True, get_fill_color="color", stroked=True, get_line_color=[60, 60, 60],
                            line_width_min_pixels=1, pickable=True))
    photos = photos.assign(label=[f"{p} (place {g})" for p, g in zip(photos["path"], photos["group"])])
    layers.append(pdk.Layer("ScatterplotLayer", photos, get_position=["lon_deg", "lat_deg"], get_fill_color="color",
                            get_radius=1, radius_min_pixels=3, radius_max_pixels=3, pickable=True))
    lat, lon = photos["lat_deg"].to_numpy(), photos["lon_deg"].to_numpy()
    if located is not None and len(located):
        located = located.assign(label=[f"{p}: located here (no GPS of its own)" for p in located["path"]])
        layers.append(pdk.Layer("ScatterplotLayer", located, get_position=["lon_deg", "lat_deg"], filled=False,
                                stroked=True, get_line_color=[20, 20, 20], line_width_min_pixels=2, get_radius=1,
                                radius_min_pixels=6, radius_max_pixels=6, pickable=True))
        lat, lon = np.r_[lat, located["lat_deg"]], np.r_[lon, located["lon_deg"]]
    return pdk.Deck(layers=layers, initial_view_state=_view(lat, lon), map_style=style, tooltip={"text": "{label}"})


def renumbered(polygons: dict, mapping: np.ndarray) -> dict:
    """Region GeoJSON with each feature's `region` replaced by `mapping[region]` (see regions.match_labels)."""
    out = json.loads(json.dumps(polygons))
    for feature in out["features"]:
        feature["properties"]["region"] = int(mapping[int(feature["properties"]["region"])])
    return out


def prediction_deck(pred: Prediction, region_polygon: dict | None = None, online: bool = False) -> pdk.Deck:
    """A prediction: its uncertainty circle, region, neighbours (a thumbnail in each one's tooltip) and the truth."""
    neighbours = pd.DataFrame([vars(n) for n in pred.neighbours])
    lat = [pred.lat_deg, *neighbours["lat_deg"]] + ([pred.true_lat_deg] if pred.true_lat_deg is not None else [])
    lon = [pred.lon_deg, *neighbours["lon_deg"]] + ([pred.true_lon_deg] if pred.true_lon_deg is not None else [])
    layers, style = _base(online)
    if region_polygon is not None:
        layers.append(pdk.Layer("GeoJsonLayer", region_polygon, filled=True, get_fill_color=[70, 130, 180, 50],
                                get_line_color=[70, 130, 180], line_width_min_pixels=2))
    centre = pd.DataFrame([{"lat_deg": pred.lat_deg, "lon_deg": pred.lon_deg, "radius_m": pred.radius_km * 1000,
                            "label": f"prediction (±{pred.radius_km:.2f} km at {pred.coverage:.0%})"}])
    layers.append(pdk.Layer("ScatterplotLayer", centre, get_position=["lon_deg", "lat_deg"], get_radius="radius_m",
                            filled=True, get_fill_color=[220, 60, 60, 40], stroked=True, get_line_color=[220, 60, 60],
                            line_width_min_pixels=2))
    neighbours = neighbours.assign(label=[f"sim {s:.3f}, {d:.2f} km"
                                          for s, d in zip(neighbours["similarity"], neighbours["dist_km"])],
                                   thumb=[thumbnail_uri(p) for p in neighbours["path"]])
    layers.append(pdk.Layer("ScatterplotLayer", neighbours, get_position=["lon_deg", "lat_deg"],
                            get_fill_color=[40, 110, 200],
                            get_radius=1, radius_min_pixels=6, radius_max_pixels=6, pickable=True))
    points = [centre.assign(color=[[220, 60, 60]], thumb="")]
    if pred.true_lat_deg is not None:
        points.append(pd.DataFrame([{"lat_deg": pred.true_lat_deg, "lon_deg": pred.true_lon_deg, "color": [30, 160, 60],
                                     "label": f"truth, {pred.error_km:.2f} km away", "thumb": ""}]))
    layers.append(pdk.Layer("ScatterplotLayer", pd.concat(points), get_position=["lon_deg", "lat_deg"],
                            get_fill_color="color",
                            get_radius=1, radius_min_pixels=8, radius_max_pixels=8, pickable=True))
    return pdk.Deck(layers=layers, initial_view_state=_view(np.array(lat), np.array(lon)), map_style=style,
                    tooltip={"html": "<img src='{thumb}' style='max-width:96px'/><br/>{label}"})


def error_deck(frame: pd.DataFrame, online: bool = False) -> pdk.Deck:
    """Held-out photos: a line from each true location to its prediction, green (close) to red (1000+ km)."""
    err = np.log10(np.clip(frame["error_km"].to_numpy(), 0.01, 1000)) / 5 + 0.4  # 0.01 km -> 0, 1000 km -> 1
    frame = frame.assign(color=[[int(255 * e), int(200 * (1 - e)), 60, 200] for e in err],
                         label=[f"{p}: {e:.2f} km" for p, e in zip(frame["path"], frame["error_km"])])
    layers, style = _base(online)
    layers += [pdk.Layer("LineLayer", frame, get_source_position=["true_lon_deg", "true_lat_deg"],
                         get_target_position=["lon_deg", "lat_deg"], get_color="color", get_width=2, pickable=True),
               pdk.Layer("ScatterplotLayer", frame, get_position=["true_lon_deg", "true_lat_deg"],
                         get_fill_color=[30, 160, 60],
                         get_radius=1, radius_min_pixels=4, radius_max_pixels=4, pickable=True)]
    lat = np.concatenate([frame["lat_deg"], frame["true_lat_deg"]])
    lon = np.concatenate([frame["lon_deg"], frame["true_lon_deg"]])
    return pdk.Deck(layers=layers, initial_view_state=_view(lat, lon), map_style=style, tooltip={"text": "{label}"})


def experiment_figure(table: pd.DataFrame):
    """Accuracy and median km per row of an experiment table, as a plotly figure with two panels."""
    import plotly.graph_objects as go

    return go.Figure(experiment_chart(table))


def compare_figure(table: pd.DataFrame, accuracy: str = "acc@25km"):
    """Median km and one accuracy per method of a `geoloc compare` table, with 95 % error bars where it has them."""
    import plotly.graph_objects as go

    return go.Figure(compare_chart(table, accuracy))


def training_figure(records: list[dict]):
    """Loss, accuracies and region count per epoch of a fine-tuning run (its metrics.jsonl records)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = [r for r in records if r.get("kind") == "epoch"]
    x = [f"{r['name']}.{r['epoch'] + 1}" for r in epochs]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("loss", "accuracy / macro-F1 (held-out)", "regions"))
    fig.add_trace(go.Scatter(x=x, y=[r["loss"] for r in epochs], name="loss", mode="lines+markers"), row=1, col=1)
    for key, name in (("train_acc", "train acc"), ("acc", "held-out acc"), ("macro_f1", "held-out macro-F1")):
        fig.add_trace(go.Scatter(x=x, y=[r[key] for r in epochs], name=name, mode="lines+markers"), row=1, col=2)
    fig.add_trace(go.Scatter(x=x, y=[r["n_regions"] for r in epochs], name="regions", mode="lines+markers"), row=1,
                  col=3)
    fig.update_layout(height=360, margin=dict(t=40, b=10), legend=dict(orientation="h"))
    return fig


# ------------------------------------------------------------------------------------------------
# Region analysis (signatures, confusion, stability, coverage): figures over geoloc_core.analysis.signatures,
# evaluate.confusion, stability and coverage. Kept together, after everything above.

def ramp(values: np.ndarray, low: tuple[int, ...] = (215, 48, 39), mid: tuple[int, ...] = (254, 224, 139),
         high: tuple[int, ...] = (26, 152, 80), alpha: int = 200,
         missing: tuple[int, ...] = (170, 170, 170)) -> list[list[int]]:
    """RGBA colours of values in [0, 1] on a diverging low -> mid -> high ramp (red, yellow, green by default); nan
    grey."""
    out = []
    for v in np.asarray(values, np.float64):
        if np.isnan(v):
            out.append([*missing, alpha])
            continue
        v = float(np.clip(v, 0, 1))
        a, b, t = (low, mid, v * 2) if v < 0.5 else (mid, high, v * 2 - 1)
        out.append([int(round(a[i] + (b[i] - a[i]) * t)) for i in range(3)] + [alpha])
    return out


def confusion_deck(summary: pd.DataFrame, matrix: np.ndarray, polygons: dict | None = None,
                   online: bool = False) -> pdk.Deck:
    """Which regions the classifier mixes up: an arc from each true region's centroid to each region its held-out photos
    were wrongly put in (width: how many), over the regions filled by their held-out accuracy (red 0 -> green 1).

    Args:
        summary: one row per region (region, lat_deg, lon_deg): the centroids of its training photos.
        matrix: (R, R) confusion counts, truth by row (`evaluate.confusion`).
    """
    from geoloc_core.evaluate.metrics import confused_pairs, region_accuracy

    acc = region_accuracy(matrix)
    centre = summary.set_index("region")[["lat_deg", "lon_deg"]]
    layers, style = _base(online)
    if polygons is not None:
        polygons = json.loads(json.dumps(polygons))
        for feature in polygons["features"]:
            r = int(feature["properties"]["region"])
            feature["properties"]["color"] = ramp([acc[r]], alpha=120)[0]
            feature["properties"]["label"] = (f"region {r}: {acc[r]:.0%} of {int(matrix[r].sum())} held-out photos "
                                              "right"
                                              if matrix[r].sum() else f"region {r}: no held-out photos")
        layers.append(pdk.Layer("GeoJsonLayer", polygons, stroked=True, filled=True, get_fill_color="properties.color",
                                get_line_color=[60, 60, 60], line_width_min_pixels=1, pickable=True))
    pairs = confused_pairs(matrix)
    if len(pairs):
        pairs = pairs.assign(lat0=centre.loc[pairs["region"], "lat_deg"].to_numpy(),
                             lon0=centre.loc[pairs["region"], "lon_deg"].to_numpy(),
                             lat1=centre.loc[pairs["pred"], "lat_deg"].to_numpy(),
                             lon1=centre.loc[pairs["pred"], "lon_deg"].to_numpy(),
                             width=2 + 10 * pairs["count"] / pairs["count"].max(),
                             label=[f"{c} of region {a}'s held-out photos taken for region {b} ({s:.0%})"
                                    for a, b, c, s in zip(pairs["region"], pairs["pred"], pairs["count"],
                                                          pairs["share"])])
        layers.append(pdk.Layer("ArcLayer", pairs, get_source_position=["lon0", "lat0"],
                                get_target_position=["lon1", "lat1"],
                                get_source_color=[30, 90, 200, 220], get_target_color=[220, 40, 40, 220],
                                get_width="width", get_height=0.4, pickable=True))
    points = summary.assign(label=[f"region {r} centroid" for r in summary["region"]])
    layers.append(pdk.Layer("ScatterplotLayer", points, get_position=["lon_deg", "lat_deg"],
                            get_fill_color=[20, 20, 20],
                            get_radius=1, radius_min_pixels=4, radius_max_pixels=4, pickable=True))
    view = _view(summary["lat_deg"].to_numpy(), summary["lon_deg"].to_numpy())
    view.pitch = 40  # tilted, so the arcs rise off the map and read as arcs
    return pdk.Deck(layers=layers, initial_view_state=view, map_style=style, tooltip={"text": "{label}"})


def confusion_figure(matrix: np.ndarray):
    """The confusion matrix as a plotly heatmap, each row as shares of the true region's held-out photos."""
    import plotly.graph_objects as go

    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    names = [str(k) for k in range(len(matrix))]
    fig = go.Figure(go.Heatmap(z=share, x=names, y=names, colorscale="Blues", zmin=0, zmax=1, text=matrix,
                               texttemplate="%{text}",
                               hovertemplate="true %{y}, predicted %{x}: %{text} photos (%{z:.0%})<extra></extra>"))
    fig.update_layout(height=120 + 24 * len(matrix), margin=dict(t=10, b=10), xaxis_title="predicted region",
                      yaxis_title="true region")
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def stability_deck(edges: pd.DataFrame, polygons: dict | None = None, online: bool = False) -> pdk.Deck:
    """Each graph edge coloured by the share of Louvain seeds that put its two sites in one region: red (always apart:
    a solid boundary), blue (always together), yellow and thicker where the seeds disagree (an accident of one run).

    Args:
        edges: lat0, lon0, lat1, lon1, rate, boundary (see `stability.Stability.edges`).
        polygons: the partition shown, drawn faintly underneath.
    """
    rate = edges["rate"].to_numpy()
    doubt = 1 - np.abs(2 * rate - 1)  # 0 where every seed agrees, 1 where half do
    edges = edges.assign(color=ramp(rate, high=(49, 54, 149), alpha=230), width=1.5 + 5 * doubt,
                         label=[f"together in {r:.0%} of the seeds"
                                + (" (a boundary of the regions shown)" if b else "")
                                for r, b in zip(rate, edges["boundary"])])
    layers, style = _base(online)
    if polygons is not None:
        layers.append(pdk.Layer("GeoJsonLayer", polygons, stroked=True, filled=False, get_line_color=[90, 90, 90, 160],
                                line_width_min_pixels=1))
    layers.append(pdk.Layer("LineLayer", edges, get_source_position=["lon0", "lat0"],
                            get_target_position=["lon1", "lat1"],
                            get_color="color", get_width="width", pickable=True))  # widths in pixels, the default
    lat = np.concatenate([edges["lat0"], edges["lat1"]])
    lon = np.concatenate([edges["lon0"], edges["lon1"]])
    return pdk.Deck(layers=layers, initial_view_state=_view(lat, lon), map_style=style, tooltip={"text": "{label}"})


def coverage_deck(geojson: dict, value: str = "n_photos", online: bool = False) -> pdk.Deck:
    """Coverage hexagons (`coverage.coverage_geojson`) filled by `value`: photo density
    (`n_photos`, white -> dark blue on a log scale) or an error (`median_error_km`, green -> red on a log scale from its
    5th to 95th percentile)."""
    geojson = json.loads(json.dumps(geojson))
    values = np.array([np.nan if f["properties"][value] is None else f["properties"][value]
                       for f in geojson["features"]], np.float64)
    if value == "n_photos":
        scaled = np.log1p(values) / max(np.log1p(np.nanmax(values)), 1e-9)
        colours = ramp(scaled, low=(247, 251, 255), mid=(107, 174, 214), high=(8, 48, 107), alpha=170)
    else:
        logs = np.log10(np.clip(values, 1e-3, None))
        lo, hi = (np.nanquantile(logs, [0.05, 0.95]) if np.isfinite(logs).any() else (0.0, 1.0))
        colours = ramp(1 - (logs - lo) / max(hi - lo, 1e-9), alpha=170)  # low error green, high red
    for feature, colour in zip(geojson["features"], colours):
        p = feature["properties"]
        p["color"] = colour
        error = ("no error measured" if p["median_error_km"] is None
                 else f"median error {p['median_error_km']:.3g} km over {p['n_errors']}")
        p["label"] = f"{p['n_photos']} photos; {error}"
    corners = np.array([c for f in geojson["features"] for c in f["geometry"]["coordinates"][0]]).reshape(-1, 2)
    layers, style = _base(online)
    layers.append(pdk.Layer("GeoJsonLayer", geojson, stroked=True, filled=True, get_fill_color="properties.color",
                            get_line_color=[80, 80, 80, 120], line_width_min_pixels=1, pickable=True))
    return pdk.Deck(layers=layers, initial_view_state=_view(corners[:, 1], corners[:, 0]), map_style=style,
                    tooltip={"text": "{label}"})


def similarity_deck(sites: pd.DataFrame, closest: pd.DataFrame, online: bool = False) -> pdk.Deck:
    """Every site coloured by how much it looks like the query (by percentile: yellow the most alike), the query's own
    sites ringed in red, the closest ones numbered; a thumbnail of each site's best photo in its tooltip where given.

    Args:
        sites: `similar.SimilarPlaces.sites` (lat_deg, lon_deg, similarity, percentile, query; optional thumb).
        closest: its `closest` (rank, lat_deg, lon_deg, place).
    """
    sites = sites.assign(color=[list(map(int, c)) + [210] for c in viridis(sites["percentile"].to_numpy())],
                         label=[f"cosine {s:.3f} (more alike than {p:.0%} of sites)"
                                for s, p in zip(sites["similarity"], sites["percentile"])])
    if "thumb" not in sites:
        sites = sites.assign(thumb="")
    layers, style = _base(online)
    layers.append(pdk.Layer("ScatterplotLayer", sites.sort_values("percentile"), get_position=["lon_deg", "lat_deg"],
                            get_fill_color="color", get_radius=1, radius_min_pixels=5, radius_max_pixels=5,
                            pickable=True))
    query = sites[sites["query"]]
    if len(query):
        layers.append(pdk.Layer("ScatterplotLayer", query, get_position=["lon_deg", "lat_deg"], filled=False,
                                stroked=True, get_line_color=[220, 40, 40], line_width_min_pixels=2, get_radius=1,
                                radius_min_pixels=9, radius_max_pixels=9))
    if len(closest):
        ranked = closest.assign(text=[str(r) for r in closest["rank"]])
        layers.append(pdk.Layer("ScatterplotLayer", ranked, get_position=["lon_deg", "lat_deg"], filled=False,
                                stroked=True, get_line_color=[20, 20, 20], line_width_min_pixels=2, get_radius=1,
                                radius_min_pixels=9, radius_max_pixels=9))
        layers.append(pdk.Layer("TextLayer", ranked, get_position=["lon_deg", "lat_deg"], get_text="text", get_size=14,
                                get_color=[20, 20, 20], get_pixel_offset=[0, -16]))
    return pdk.Deck(layers=layers, initial_view_state=_view(sites["lat_deg"].to_numpy(), sites["lon_deg"].to_numpy()),
                    map_style=style, tooltip={"html": "<img src='{thumb}' style='max-width:96px'/><br/>{label}"})
