"""Georeferenced rasters (GeoTIFF orthophotos) cut into geotagged tiles, and retrieval across time.

AnyLoc's "anytime" setting: the same ground seen in different years. Each raster is cut into square
tiles on its own pixel grid; a tile's location is its centre, converted from the raster's projected
CRS (read from the GeoTIFF keys) to WGS84; its `location_id` is its grid cell, shared by every year,
so a grouped split never separates one place's years. The tiles and a manifest are then an ordinary
photo folder for `geoloc ingest`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pyproj import Transformer
from scipy.spatial import cKDTree

from . import runs
from .descriptors import describe, fit_vlad_vocabulary
from .evaluate import recall_at_k
from .geo import LocalProjection
from .index import build_index, search
from .ingest import load_photo_table
from .pipeline import load_embeddings

_PIXEL_SCALE, _TIEPOINT, _GEOKEYS = 33550, 33922, 34735
_PROJECTED_CRS_KEY, _GEOGRAPHIC_CRS_KEY = 3072, 2048
RASTER_SUFFIXES = (".tif", ".tiff")


def raster_georeference(image: Image.Image, name: str) -> tuple[float, float, float, float, int]:
    """(x0, y0, pixel width, pixel height, EPSG) of a north-up GeoTIFF: map position of pixel (0, 0)'s corner."""
    tags = image.tag_v2 if hasattr(image, "tag_v2") else {}
    if _TIEPOINT not in tags or _PIXEL_SCALE not in tags or _GEOKEYS not in tags:
        raise ValueError(f"{name}: not a GeoTIFF (no tiepoint, pixel scale or GeoKey tags)")
    i, j, _, x, y, _ = tags[_TIEPOINT][:6]
    sx, sy = tags[_PIXEL_SCALE][:2]
    keys = tags[_GEOKEYS]
    entries = {keys[n]: keys[n + 3] for n in range(4, 4 + 4 * keys[3], 4) if keys[n + 1] == 0}  # values stored inline
    epsg = entries.get(_PROJECTED_CRS_KEY) or entries.get(_GEOGRAPHIC_CRS_KEY)
    if not epsg or epsg == 32767:
        raise ValueError(f"{name}: GeoTIFF without an EPSG code (user-defined CRS is not supported)")
    return x - i * sx, y + j * sy, sx, sy, int(epsg)


def capture_date(name: str) -> str:
    """The YYYYMMDD date in a raster's file name (NAIP's convention), else its stem."""
    found = re.findall(r"(?<!\d)((?:19|20)\d{6})(?!\d)", name)
    return found[-1] if found else Path(name).stem


def cut_tiles(src: Path, out: Path, tile_px: int = 112) -> Path:
    """Every GeoTIFF in `src` -> RGB PNG tiles of `tile_px` under `out` and `out/manifest.csv`.

    Manifest columns: path, lat, lon, location_id (the tile's grid cell), date and year (from the file
    name). Rasters that are not north-up GeoTIFFs with an EPSG code are refused by name.
    """
    src, out = Path(src), Path(out)
    rasters = sorted(p for p in src.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
    if not rasters:
        raise ValueError(f"{src}: no .tif / .tiff rasters")
    rows = []
    for raster in rasters:
        with Image.open(raster) as image:
            x0, y0, sx, sy, epsg = raster_georeference(image, raster.name)
            rgb = np.asarray(image.convert("RGBA") if image.mode not in ("RGB", "RGBA") else image)[..., :3]
        to_wgs84 = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
        date = capture_date(raster.name)
        for r in range(rgb.shape[0] // tile_px):
            for c in range(rgb.shape[1] // tile_px):
                name = f"{raster.stem}/r{r:03d}_c{c:03d}.png"
                target = out / name
                tile = Image.fromarray(rgb[r * tile_px:(r + 1) * tile_px, c * tile_px:(c + 1) * tile_px])
                runs.atomic_write(target, lambda f, t=tile: t.save(f, format="PNG"))
                lon, lat = to_wgs84.transform(x0 + (c + 0.5) * tile_px * sx, y0 - (r + 0.5) * tile_px * sy)
                rows.append({"path": name, "lat": lat, "lon": lon, "location_id": f"r{r:03d}_c{c:03d}", "date": date,
                             "year": date[:4]})
    return runs.write_csv(out / "manifest.csv", pd.DataFrame(rows))


def cross_time_recall(run_dir: Path, by: str = "year", descriptors: tuple[str, ...] = ("cls", "gem", "vlad"),
                      radius_km: float | None = None, ks: tuple[int, ...] = (1, 5), n_words: int = 32) -> list[dict]:
    """Each value of column `by` queried against all the others: Recall@K per descriptor (mean over values).

    A hit is a database photo within `radius_km` of the query's location; by default half the
    spacing of the locations (for tiles: the same tile, in another year).
    """
    run_dir = Path(run_dir)
    table = load_photo_table(run_dir)
    if by not in table.frame:
        raise ValueError(f"{run_dir}: photos have no column {by!r} (have {', '.join(table.frame.columns)})")
    when = table.frame[by].astype(str).to_numpy()
    lat, lon = table.lat_deg, table.lon_deg
    if radius_km is None:  # half the median spacing of the locations (groups), not of the photos
        xy = pd.DataFrame(LocalProjection.centred_on(lat, lon).to_xy_m(lat, lon)).groupby(table.frame["group"].to_numpy()).mean()
        radius_km = float(np.median(cKDTree(xy.to_numpy()).query(xy.to_numpy(), 2)[0][:, 1]) / 2000)
    emb, patches = load_embeddings(run_dir)
    rows = []
    for name in descriptors:
        per_value = []
        for value in np.unique(when):
            q, db = np.flatnonzero(when == value), np.flatnonzero(when != value)
            vocabulary = fit_vlad_vocabulary(patches[db], n_words) if name == "vlad" and patches is not None else None
            desc = lambda rows_: describe(name, emb[rows_], None if patches is None else patches[rows_], vocabulary)  # noqa: E731
            _, ids = search(build_index(desc(db)), desc(q), max(ks))
            per_value.append(recall_at_k(ids, lat[db], lon[db], lat[q], lon[q], radius_km, ks))
        rows.append({"descriptor": name, **{k: float(np.mean([r[k] for r in per_value])) for k in per_value[0]},
                     "queries": len(when), by: len(per_value), "radius_km": radius_km})
    return rows
