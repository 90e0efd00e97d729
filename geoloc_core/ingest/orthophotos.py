"""Georeferenced rasters (GeoTIFF orthophotos) cut into geotagged tiles, for retrieval across time.

AnyLoc's "anytime" setting: the same ground seen in different years. Each raster is cut into square
tiles on its own pixel grid; a tile's location is its centre, converted from the raster's projected
CRS (read from the GeoTIFF keys) to WGS84; its `location_id` is its grid cell, shared by every year,
so a grouped split never separates one place's years. The tiles and a manifest are then an ordinary
photo folder for `geoloc ingest`; `compare.cross_time_recall` then queries each year against the others.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pyproj import Transformer

from geoloc_core.base import storage
from geoloc_core.ingest.photos import MANIFEST_NAME

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
                storage.atomic_write(target, lambda f, t=tile: t.save(f, format="PNG"))
                lon, lat = to_wgs84.transform(x0 + (c + 0.5) * tile_px * sx, y0 - (r + 0.5) * tile_px * sy)
                rows.append({"path": name, "lat": lat, "lon": lon, "location_id": f"r{r:03d}_c{c:03d}", "date": date,
                             "year": date[:4]})
    return storage.write_csv(out / MANIFEST_NAME, pd.DataFrame(rows))
