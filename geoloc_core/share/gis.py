"""GIS files for analysts: a run's regions and a batch's predictions as GeoPackage, KML, zipped Shapefile or GeoJSON.

Every file is in WGS 84 lon/lat (EPSG:4326) and says so: GeoPackage and Shapefile (`.prj`) carry the
CRS, GeoJSON its `crs` member (CRS84), KML its document description (KML is always WGS 84).
Attribute names are chosen once (`FIELDS`), short enough for the Shapefile's 10 characters, and
used in every format. A file holds layers: one per graph x iteration (`dt_wo`, `dt_ft1`, ...) for
regions; `predictions`, `uncertainty` (the radius as a geodesic circle) and `neighbours` for
predictions. GeoPackage, KML (one folder per layer) and the Shapefile zip (one `.shp` per layer)
keep them apart; GeoJSON, one collection, names each feature's layer in its `layer` field.

geopandas writes through fiona (GDAL) for GeoPackage, Shapefile and GeoJSON. GDAL's KML driver here
writes a fixed red outline and reads attributes back not at all, so KML is written with the standard
library's ElementTree (Schema + SchemaData, a colour per region) and read back by `read_kml`:
geometry through geopandas (GDAL), attributes from the SimpleData elements.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Geod

from geoloc_core.base import storage
from geoloc_core.base.places import place_labels, region_places
from geoloc_core.config import GIS_FORMATS
from geoloc_core.regions.boundaries import KML_NS, ClipArea, read_kml
from geoloc_core.regions.partition import region_areas_km2
from geoloc_core.runs.folders import RegionFiles, Run

CRS = "EPSG:4326"
TEXT_MAX = 254  # the Shapefile's longest text field, in UTF-8 bytes: longer text is cut in every format alike

# short name -> type; the same names in every format (<= 10 characters: the Shapefile's limit)
FIELDS: dict[str, str] = {
    "layer": "str", "graph": "str", "iter": "str", "region": "int", "n_photos": "int", "n_outside": "int",
    "area_km2": "float", "lat_deg": "float", "lon_deg": "float", "places": "str",
    "pred": "int", "path": "str", "radius_km": "float", "coverage": "float", "reg_prob": "float", "true_lat": "float",
    "true_lon": "float", "error_km": "float", "familiar": "float", "unfamiliar": "int", "reg_agrees": "int",
    "group": "str", "rank": "int", "similarity": "float", "dist_km": "float", "place": "str", "place_km": "float",
}
REGION_FIELDS = ("layer", "graph", "iter", "region", "n_photos", "n_outside", "area_km2", "lat_deg", "lon_deg",
                 "places")
LAYER_FIELDS = {  # the fields of each prediction layer (every other layer is a partition's regions: REGION_FIELDS)
    "predictions": ("layer", "pred", "path", "lat_deg", "lon_deg", "place", "place_km", "radius_km", "coverage",
                    "region", "reg_prob", "true_lat", "true_lon", "error_km", "familiar", "unfamiliar", "reg_agrees",
                    "group"),
    "uncertainty": ("layer", "pred", "path", "radius_km", "coverage"),
    "neighbours": ("layer", "pred", "rank", "path", "lat_deg", "lon_deg", "place", "similarity", "dist_km"),
}
SUFFIX = {"gpkg": ".gpkg", "kml": ".kml", "shp": ".zip", "geojson": ".geojson"}
MIME = {"gpkg": "application/geopackage+sqlite3", "kml": "application/vnd.google-earth.kml+xml",
        "shp": "application/zip", "geojson": "application/geo+json"}


# layers -----------------------------------------------------------------------------------------

def layer_name(graph: str, iteration: str) -> str:
    """A layer name for one partition: "dt_wo", "dt_ft2", "gg_ft1_finetune_gg-2" (from `Run.iterations`' names)."""
    tag = re.sub(r"^after FT(\d+)", r"ft\1", iteration).replace("w/o (fine-tuning run)", "ftwo").replace("w/o", "wo")
    return re.sub(r"[^a-z0-9_-]+", "_", f"{graph}_{tag}".lower()).strip("_")


def region_layers(run: Run, graphs: list[str] | None = None,
                  boundary: ClipArea | None = None) -> dict[str, gpd.GeoDataFrame]:
    """Every graph's (default: all the run has) regions of every iteration, one layer each, in the short schema.

    `boundary` clips the polygons as written (areas recomputed) and counts the photos outside it.
    """
    table = run.photo_table()
    layers = {}
    for graph in graphs or run.graphs():
        for iteration, files in run.iterations(graph).items():
            layers[layer_name(graph, iteration)] = region_frame(files, graph, iteration, table.lat_deg, table.lon_deg,
                                                                boundary)
    if not layers:
        raise FileNotFoundError(f"{run.root} has no regions yet: `geoloc run` (or `geoloc regions`) makes them")
    return layers


def region_frame(files: RegionFiles, graph: str, iteration: str, lat_deg: np.ndarray, lon_deg: np.ndarray,
                 boundary: ClipArea | None = None) -> gpd.GeoDataFrame:
    """One partition's polygons with their table row: training photos, photos outside the clip area,
    area, centroid, places."""
    polygons = files.geodataframe()
    labels = files.labels()
    if len(labels) != len(lat_deg):
        raise ValueError(f"{files.csv} has {len(labels)} photos, the run {len(lat_deg)}: cut the regions again "
                         "(`geoloc regions`)")
    region, train = labels["region"].to_numpy(), ~labels["test"].to_numpy(bool)
    outside = labels["outside"].to_numpy(bool)
    if boundary is not None:
        polygons = polygons.assign(geometry=polygons.intersection(boundary.geometry))
        polygons["area_km2"] = region_areas_km2(polygons)
        outside = outside | boundary.outside(lat_deg, lon_deg)
    elif "area_km2" not in polygons:  # regions written before areas were recorded
        polygons["area_km2"] = region_areas_km2(polygons)
    places = region_places(region[train], lat_deg[train], lon_deg[train])
    k = polygons["region"].to_numpy(int)
    frame = pd.DataFrame({
        "layer": layer_name(graph, iteration), "graph": graph, "iter": iteration, "region": k,
        "n_photos": np.bincount(region[train], minlength=k.max() + 1)[k] if len(k) else [],
        "n_outside": np.bincount(region[outside], minlength=k.max() + 1)[k] if len(k) else [],
        "area_km2": polygons["area_km2"].to_numpy(float), "lat_deg": polygons["lat_deg"].to_numpy(float),
        "lon_deg": polygons["lon_deg"].to_numpy(float), "places": [places.get(int(r), "") for r in k]})
    return gpd.GeoDataFrame(frame, geometry=[_multipolygon(g) for g in polygons.geometry], crs=CRS)


def _text(value: str) -> str:
    """`value` cut to the Shapefile's TEXT_MAX bytes of UTF-8 (never inside a character),
    so every format holds the same text."""
    return value.encode("utf-8")[:TEXT_MAX].decode("utf-8", errors="ignore")


def prediction_layers(frame: pd.DataFrame, circle_vertices: int = 72) -> dict[str, gpd.GeoDataFrame]:
    """`predict.predictions_frame` (or a predictions CSV / GeoJSON read back) -> predictions,
    uncertainty circles, neighbours."""
    if not len(frame):
        raise ValueError("no predictions to export")
    pred = np.arange(len(frame))
    # -1: no classifier
    agrees = frame["region_agrees"].map({True: 1, False: 0, "True": 1, "False": 0}).fillna(-1).astype(int)
    place, place_km = _places(frame)
    points = pd.DataFrame({
        "layer": "predictions", "pred": pred, "path": [_text(p) for p in frame["path"].astype(str)],
        "lat_deg": frame["lat_deg"].astype(float), "lon_deg": frame["lon_deg"].astype(float),
        "place": [_text(p) for p in place], "place_km": place_km,
        "radius_km": frame["radius_km"].astype(float), "coverage": frame["coverage"].astype(float),
        "region": pd.to_numeric(frame["region"], errors="coerce").fillna(-1).astype(int),  # -1: no region
        "reg_prob": _floats(frame["region_prob"]), "true_lat": _floats(frame["true_lat_deg"]),
        "true_lon": _floats(frame["true_lon_deg"]),
        "error_km": _floats(frame["error_km"]), "familiar": _floats(frame["familiarity"]),
        "unfamiliar": frame["unfamiliar"].map({True: 1, False: 0, "True": 1, "False": 0}).fillna(0).astype(int),
        "reg_agrees": agrees,
        "group": ["" if pd.isna(g) else _text(str(g)) for g in frame.get("group", [None] * len(frame))]})
    circles = [_geodesic_circle(lat, lon, r, circle_vertices)
               for lat, lon, r in zip(points["lat_deg"], points["lon_deg"], points["radius_km"])]
    rows = [{"layer": "neighbours", "pred": int(i), "rank": rank + 1, "path": _text(str(n["path"])),
             "lat_deg": float(n["lat_deg"]), "lon_deg": float(n["lon_deg"]), "place": n.get("place", ""),
             "similarity": float(n["similarity"]), "dist_km": float(n["dist_km"])}
            for i, text in zip(pred, frame["neighbours"])
            for rank, n in enumerate(json.loads(text) if isinstance(text, str) else [])]
    neighbours = pd.DataFrame(rows, columns=list(LAYER_FIELDS["neighbours"]))
    unnamed = neighbours["place"].isna() | neighbours["place"].eq("")  # neighbours of a file written before names
    if unnamed.any():
        neighbours.loc[unnamed, "place"] = place_labels(neighbours.loc[unnamed, "lat_deg"],
                                                        neighbours.loc[unnamed, "lon_deg"])[0]
    neighbours["place"] = [_text(str(p)) for p in neighbours["place"]]
    return {
        "predictions": gpd.GeoDataFrame(points, geometry=gpd.points_from_xy(points["lon_deg"], points["lat_deg"]),
                                        crs=CRS),
        "uncertainty": gpd.GeoDataFrame(points.assign(layer="uncertainty")[list(LAYER_FIELDS["uncertainty"])],
                                        geometry=circles, crs=CRS),
        "neighbours": gpd.GeoDataFrame(neighbours,
                                       geometry=gpd.points_from_xy(neighbours["lon_deg"], neighbours["lat_deg"]),
                                       crs=CRS),
    }


def _places(frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Each prediction's place and its distance, as the frame has them (`predictions_frame`), or else named now from its
    coordinates (a predictions file written before predictions were named)."""
    if "place" in frame and frame["place"].notna().all() and "place_km" in frame:
        return frame["place"].astype(str).tolist(), _floats(frame["place_km"])
    return place_labels(frame["lat_deg"].astype(float), frame["lon_deg"].astype(float))


def _floats(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(float)


def _geodesic_circle(lat_deg: float, lon_deg: float, radius_km: float, n: int) -> shapely.MultiPolygon:
    """The points `radius_km` from a centre along the ellipsoid, as a polygon (true on any map, near the poles too)."""
    azimuths = np.linspace(0, 360, n, endpoint=False)
    lon, lat, _ = Geod(ellps="WGS84").fwd(np.full(n, lon_deg), np.full(n, lat_deg), azimuths,
                                          np.full(n, radius_km * 1000))
    return shapely.MultiPolygon([shapely.Polygon(np.column_stack([lon, lat]))])


def _multipolygon(geometry) -> shapely.MultiPolygon:
    """Every polygon layer as MultiPolygon (a layer's geometry type is one type; an empty region stays empty)."""
    if geometry is None or geometry.is_empty:
        return shapely.MultiPolygon()
    if geometry.geom_type == "MultiPolygon":
        return geometry
    parts = [p for p in shapely.get_parts(geometry) if p.geom_type == "Polygon"]
    return shapely.MultiPolygon(parts)


# writers ----------------------------------------------------------------------------------------

def write_layers(layers: dict[str, gpd.GeoDataFrame], path: Path, fmt: str) -> Path:
    """Write `layers` to `path` as `fmt` (one of config.GIS_FORMATS), atomically."""
    return storage.write_bytes(Path(path), layers_bytes(layers, fmt))


def layers_bytes(layers: dict[str, gpd.GeoDataFrame], fmt: str) -> bytes:
    """The file's bytes (for a download button as for a file)."""
    if fmt not in GIS_FORMATS:
        raise ValueError(f"format {fmt!r}: choose from {', '.join(GIS_FORMATS)}")
    if fmt == "kml":
        return kml_bytes(layers)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"layers{SUFFIX[fmt]}"
        if fmt == "gpkg":
            for name, frame in layers.items():
                _to_file(frame, out, "GPKG", layer=name)
        elif fmt == "geojson":
            _to_file(pd.concat(list(layers.values()), ignore_index=True), out, "GeoJSON")
        else:
            folder = Path(tmp) / "shp"
            folder.mkdir()
            for name, frame in layers.items():
                _to_file(frame, folder / f"{name}.shp", "ESRI Shapefile", ENCODING="UTF-8")
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
                for part in sorted(folder.iterdir()):
                    z.write(part, part.name)
        return out.read_bytes()


def _to_file(frame: gpd.GeoDataFrame, path: Path, driver: str, **kwargs) -> None:
    """geopandas' writer with the schema said, not inferred (geopandas 0.14 cannot infer pandas 3's string columns)."""
    columns = [c for c in frame.columns if c != "geometry"]
    kinds = set(frame.geometry.geom_type.dropna()) or {"MultiPolygon"}
    schema = {"geometry": kinds.pop() if len(kinds) == 1 else "Unknown", "properties": {c: FIELDS[c] for c in columns}}
    data = frame.assign(**{c: frame[c].astype(object).where(frame[c].notna(), None) for c in columns if FIELDS[c]
                           == "str"})
    data.to_file(path, driver=driver, schema=schema, crs=CRS, **kwargs)


def kml_bytes(layers: dict[str, gpd.GeoDataFrame]) -> bytes:
    """A KML document: one folder per layer, a colour per region, every attribute as SchemaData
    (Google Earth shows them)."""
    from geoloc_core.share.colors import palette

    kml = ET.Element("kml", xmlns=KML_NS)
    doc = ET.SubElement(kml, "Document")
    ET.SubElement(doc, "name").text = "geoloc"
    ET.SubElement(doc, "description").text = "Coordinates: WGS 84 lon/lat (EPSG:4326), as in every KML file."
    for name, frame in layers.items():
        schema = ET.SubElement(doc, "Schema", name=name, id=f"s_{name}")
        for c in frame.columns.drop("geometry"):
            ET.SubElement(schema, "SimpleField", name=c,
                          type={"str": "string", "int": "int", "float": "double"}[FIELDS[c]])
    colours = palette(64)
    for name, frame in layers.items():
        folder = ET.SubElement(doc, "Folder")
        ET.SubElement(folder, "name").text = name
        for row in frame.itertuples(index=False):
            attrs = row._asdict()
            mark = ET.SubElement(folder, "Placemark")
            ET.SubElement(mark, "name").text = _kml_label(attrs)
            r, g, b = (colours[int(attrs.get("region", 0)) % len(colours)] if attrs.get("region", -1) >= 0
                       else (220, 60, 60))
            style = ET.SubElement(mark, "Style")
            ET.SubElement(ET.SubElement(style, "LineStyle"), "color").text = f"ff{b:02x}{g:02x}{r:02x}"
            ET.SubElement(ET.SubElement(style, "PolyStyle"), "color").text = f"66{b:02x}{g:02x}{r:02x}"
            ET.SubElement(ET.SubElement(style, "IconStyle"), "color").text = f"ff{b:02x}{g:02x}{r:02x}"
            data = ET.SubElement(ET.SubElement(mark, "ExtendedData"), "SchemaData", schemaUrl=f"#s_{name}")
            for key, value in attrs.items():
                if key != "geometry" and not (isinstance(value, float) and np.isnan(value)):
                    ET.SubElement(data, "SimpleData", name=key).text = str(value)
            _kml_geometry(mark, attrs["geometry"])
    buf = io.BytesIO()
    ET.ElementTree(kml).write(buf, encoding="utf-8", xml_declaration=True)
    return buf.getvalue()


def _kml_label(attrs: dict) -> str:
    if "iter" in attrs:
        return f"region {attrs['region']} ({attrs['graph'].upper()} {attrs['iter']})"
    if "rank" in attrs:
        return f"neighbour {attrs['rank']} of prediction {attrs['pred']}"
    return f"{Path(str(attrs['path'])).name}" + (" (uncertainty)" if attrs["layer"] == "uncertainty" else "")


def _kml_geometry(parent: ET.Element, geometry) -> None:
    if geometry.geom_type == "Point":
        ET.SubElement(ET.SubElement(parent, "Point"), "coordinates").text = f"{geometry.x:.7f},{geometry.y:.7f}"
        return
    multi = ET.SubElement(parent, "MultiGeometry")
    for polygon in shapely.get_parts(geometry):
        node = ET.SubElement(multi, "Polygon")
        for tag, ring in [("outerBoundaryIs", polygon.exterior), *[("innerBoundaryIs", r) for r in polygon.interiors]]:
            coords = " ".join(f"{x:.7f},{y:.7f}" for x, y in np.asarray(ring.coords)[:, :2])
            ET.SubElement(ET.SubElement(ET.SubElement(node, tag), "LinearRing"), "coordinates").text = coords


def read_layers(path: Path, fmt: str) -> dict[str, gpd.GeoDataFrame]:
    """A file `write_layers` wrote, back as {layer: frame} (how the tests, and an analyst's script, check it); each
    format only through its own GDAL driver, never the one that claims the file's content."""
    import fiona

    path = Path(path)
    # one collection: split by the layer field, each layer with its own fields and their types
    if fmt in ("kml", "geojson"):
        frame = read_kml(path) if fmt == "kml" else gpd.read_file(path, driver="GeoJSON")
        return {name: _typed(part.reindex(columns=[*LAYER_FIELDS.get(name, REGION_FIELDS),
                                                   "geometry"]).reset_index(drop=True))
                for name, part in frame.groupby("layer", sort=False)}
    if fmt == "shp":
        with zipfile.ZipFile(path) as z:
            names = [Path(n).stem for n in z.namelist() if n.endswith(".shp")]
        return {n: _typed(gpd.read_file(f"zip://{path.resolve()}!{n}.shp", driver="ESRI Shapefile")) for n in names}
    return {n: _typed(gpd.read_file(path, layer=n, driver="GPKG")) for n in fiona.listlayers(str(path))}


def _typed(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Integer fields as integers again (a column that other layers leave empty reads back as float), text fields as
    text (a Shapefile reads an empty text back as missing)."""
    text = [c for c in frame.columns if FIELDS.get(c) == "str"]
    return frame.astype({c: "int64" for c in frame.columns if FIELDS.get(c) == "int"}).fillna({c: "" for c in text})
