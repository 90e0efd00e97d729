"""Where regions may lie: land from Natural Earth (offline), or the analyst's own boundary file.

Voronoi cells over the sites cover whatever lies between them: for a coast that is sea, for a
border region the neighbouring country. `clip_area` says what to clip them to, from a run's
`RegionConfig`; `regions.region_polygons` does the clipping in the run's metric plane.

Natural Earth here is geopandas 0.14's bundled 1:110m countries: it needs no network, but it is
coarse (a coast can be a few km off and small islands are missing), so with `clip="land"` a site
that falls at sea keeps a disc of `site_buffer_km` around it rather than losing its cell.
"""

from __future__ import annotations

import glob
import logging
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geoloc_core.config import PROJECT_DIR, RegionConfig, server_config, too_large

log = logging.getLogger(__name__)

LAND_NAME = "land (Natural Earth 1:110m)"
KML_NS = "http://www.opengis.net/kml/2.2"
CRS = "EPSG:4326"


@lru_cache(maxsize=1)
def countries() -> gpd.GeoDataFrame:
    """Natural Earth 1:110m countries (name, iso_a3, geometry) in EPSG:4326, from geopandas' bundled copy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # geopandas 0.14 warns that the dataset leaves in 1.0: the pin keeps it
        frame = gpd.read_file(gpd.datasets.get_path("naturalearth_lowres"))
    return frame[["name", "iso_a3", "geometry"]]


@lru_cache(maxsize=1)
def land() -> shapely.Geometry:
    """All land as one (multi)polygon in lon/lat degrees: the union of the Natural Earth countries."""
    geometry = shapely.union_all(countries().geometry.to_numpy())
    shapely.prepare(geometry)
    return geometry


DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".kml": "KML", ".shp": "ESRI Shapefile"}
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")  # what a zipped Shapefile may hold; nothing else is unzipped
_VERTEX_BYTES = {".shp": 16, ".gpkg": 16}  # binary formats: a vertex takes at least this many bytes (two float64)


class BoundaryError(ValueError):
    """A boundary file that is refused or cannot be read; the message says why, without quoting the file."""


def read_boundary(path: str | Path) -> shapely.Geometry:
    """A boundary file (GeoPackage, GeoJSON, Shapefile or a .zip holding one, KML) -> its polygons' union in EPSG:4326.

    The file is opened only by the GDAL driver its extension names (a GML file named `.json` is not read as GML), and
    only once its size, unzipped size and the most vertices it can hold are within the server's limits
    (`ServerConfig.max_boundary_mb`, `max_boundary_vertices`). A file that states no CRS is taken to be in lon/lat
    degrees (as GeoJSON and KML always are).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"boundary file {path.name} not found")
    suffix = path.suffix.lower()
    if suffix != ".zip" and suffix not in DRIVERS:
        raise BoundaryError(f"{path.name}: a boundary is a GeoPackage (.gpkg), GeoJSON (.geojson, .json), KML (.kml) "
                            "or a zipped Shapefile (.zip)")
    with tempfile.TemporaryDirectory() as tmp:
        frame = _read_any(_unzipped(path, Path(tmp)) if suffix == ".zip" else path)
    if frame.crs is None:
        log.warning("%s states no CRS: taken as WGS 84 lon/lat (EPSG:4326)", path.name)
        frame = frame.set_crs("EPSG:4326")
    polygons = [g for g in frame.to_crs("EPSG:4326").geometry if g is not None
                and g.geom_type in ("Polygon", "MultiPolygon")]
    if not polygons:
        raise BoundaryError(f"boundary file {path.name} holds no polygons")
    try:
        geometry = shapely.make_valid(shapely.union_all(polygons))
    except shapely.errors.GEOSException as exc:  # a degenerate ring (one square repeated 50,000 times) exhausts GEOS
        raise BoundaryError(f"{path.name}: its polygons could not be combined into one area ({exc})") from exc
    shapely.prepare(geometry)
    return geometry


PARSE_TIMEOUT_S = 120  # an upload that takes longer to read than this is refused (the limits make a real one seconds)


def read_boundary_isolated(path: str | Path) -> shapely.Geometry:
    """`read_boundary` in a child process whose resident memory is watched and capped (`ServerConfig.max_parse_mb`):
    a visitor's upload that passes the byte and vertex checks and still takes too much memory to read (a degenerate
    ring that GEOS' repair blows up, a GDAL driver's own growth) costs the child, never the app's process. Refused
    with a `BoundaryError` that says which limit."""
    path, limit_kb = Path(path), server_config().max_parse_mb * 1024
    memory = BoundaryError(f"{path.name}: reading it needs more memory than the server allows "
                           f"({server_config().max_parse_mb:g} MB, server setting max_parse_mb)")
    with tempfile.TemporaryDirectory() as tmp:
        out, errors = Path(tmp) / "boundary.wkb", Path(tmp) / "stderr.txt"
        with open(errors, "w") as stderr:
            child = subprocess.Popen([sys.executable, "-m", "geoloc_core.regions.boundaries", str(path), str(out)],
                                     stdout=subprocess.DEVNULL, stderr=stderr, cwd=PROJECT_DIR)
        deadline = time.monotonic() + PARSE_TIMEOUT_S
        try:
            while child.poll() is None:  # polled every 20 ms: a read grows by tens of MB between two looks at most
                too_big, too_long = _rss_kb(child.pid) > limit_kb, time.monotonic() > deadline
                if too_big or too_long:
                    raise memory if too_big else BoundaryError(f"{path.name}: not read within {PARSE_TIMEOUT_S} s")
                time.sleep(0.02)
        finally:  # never left running: refused, or the page's script stopped while it read
            if child.poll() is None:
                child.kill()
                child.wait()
        said = errors.read_text(errors="replace").strip().splitlines()
        if child.returncode == 2:  # the reader's own refusal: its message, one line
            raise BoundaryError(said[-1] if said else f"{path.name}: not a readable boundary file")
        if child.returncode == 3 or child.returncode < 0:  # out of memory, or killed (the kernel's OOM killer)
            raise memory
        if child.returncode != 0 or not out.exists():
            log.warning("boundary reader for %s ended with %s: %s", path.name, child.returncode, said[-3:])
            raise BoundaryError(f"{path.name}: could not be read (the reader stopped with status {child.returncode})")
        geometry = shapely.from_wkb(out.read_bytes())
    shapely.prepare(geometry)
    return geometry


def _rss_kb(pid: int) -> int:
    """A live process' resident memory in kB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def _read_to_wkb(argv: list[str]) -> int:
    """The child of `read_boundary_isolated`: read the boundary `argv[0]`, write it as WKB to `argv[1]`. Exit 2 with
    one line for a refused file, 3 out of memory."""
    try:
        geometry = read_boundary(argv[0])
    except MemoryError:
        return 3
    except (BoundaryError, OSError, ValueError, RuntimeError) as exc:  # what the in-process reader's callers catch
        print(str(exc).replace("\n", " "), file=sys.stderr)
        return 2
    Path(argv[1]).write_bytes(shapely.to_wkb(geometry))
    return 0


def _unzipped(path: Path, into: Path) -> Path:
    """The Shapefile a zip holds, unzipped into `into` under the server's byte limit (counted as it is unzipped: the
    sizes a zip declares may lie); only a Shapefile's own parts are taken."""
    limit = _limit_bytes()
    try:
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.infolist() if not m.is_dir() and Path(m.filename).suffix.lower() in SHAPEFILE_PARTS]
            shp = [m for m in members if m.filename.lower().endswith(".shp")]
            if not shp:
                raise BoundaryError(f"{path.name} holds no Shapefile (.shp)")
            stem = Path(shp[0].filename).stem
            total = 0
            for m in (m for m in members if Path(m.filename).stem == stem):
                with z.open(m) as src, open(into / f"boundary{Path(m.filename).suffix.lower()}", "wb") as dst:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > limit:
                            raise BoundaryError(_too_large(f"{path.name} unzipped", total))
                        dst.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, zlib.error) as exc:
        raise BoundaryError(f"{path.name}: not a readable zip file ({type(exc).__name__})") from exc
    return into / "boundary.shp"


def _read_any(path: Path) -> gpd.GeoDataFrame:
    """The file's features, through its extension's driver alone, once it is within the server's limits."""
    suffix = path.suffix.lower()
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(f"{glob.escape(path.stem)}.*")
                                     if suffix == ".shp" and p != path)
    if size > _limit_bytes():
        raise BoundaryError(_too_large(path.name, size))
    vertices = _most_vertices(path)
    limit = server_config().max_boundary_vertices
    if vertices > limit:
        raise BoundaryError(f"{path.name} is too large: it may hold {vertices:,} vertices, the limit is {limit:,} "
                            "(server setting max_boundary_vertices)")
    try:
        if suffix == ".kml":
            return read_kml(path)
        return gpd.read_file(path, driver=DRIVERS[suffix])
    except ET.ParseError as exc:  # the message gives a line and column, never the file's text
        raise BoundaryError(f"{path.name}: not well-formed KML ({exc})") from exc
    except (OSError, RuntimeError, ValueError) as exc:  # fiona's errors quote the server's temporary path
        raise BoundaryError(f"{path.name}: not a readable {DRIVERS[suffix]} file") from exc


def _most_vertices(path: Path) -> int:
    """An upper bound on the vertices a file can hold, from its bytes alone: one per 16 bytes of a binary format, one
    per `[` of GeoJSON (each position is an array), one per `,` of KML (each coordinate tuple has one or two)."""
    suffix = path.suffix.lower()
    if suffix in _VERTEX_BYTES:
        return path.stat().st_size // _VERTEX_BYTES[suffix]
    marker = b"[" if DRIVERS[suffix] == "GeoJSON" else b","
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(marker)
    return count


def _limit_bytes() -> int:
    return int(server_config().max_boundary_mb * 2**20)


def _too_large(what: str, size: int) -> str:
    return too_large(what, size / 2**20, server_config().max_boundary_mb, "MB", "max_boundary_mb")


@dataclass(frozen=True)
class ClipArea:
    """An area to clip region polygons to.

    Attributes:
        geometry: (multi)polygon in lon/lat degrees (EPSG:4326).
        name: what it is, for reports ("land (Natural Earth 1:110m)", "boundary parish.gpkg").
        tile: True for a boundary: the regions cover all of it (cells extended over it); False for land:
            the regions stay within the sites' hull as well.
        buffer_km: a disc of this radius around each site outside `geometry` keeps a polygon (0: none).
    """

    geometry: shapely.Geometry
    name: str
    tile: bool = False
    buffer_km: float = 0.0

    def outside(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """(N,) True where a point lies outside the area (its edge counts as inside)."""
        return ~shapely.intersects_xy(self.geometry, np.asarray(lon_deg, float), np.asarray(lat_deg, float))


def clip_area(cfg: RegionConfig, lat_deg: np.ndarray, lon_deg: np.ndarray) -> ClipArea | None:
    """What a run's region settings clip its polygons to (the photos at `lat_deg`, `lon_deg` pick the countries):
    the boundary file, else land or the photos' countries, else nothing (the hull alone)."""
    if cfg.boundary:
        return boundary_area(cfg.boundary)
    if cfg.clip == "land":
        return ClipArea(land(), LAND_NAME, tile=False, buffer_km=cfg.site_buffer_km)
    if cfg.clip == "country":
        names, geometry = home_countries(lat_deg, lon_deg)
        return ClipArea(geometry, f"{', '.join(names)} (Natural Earth 1:110m)", tile=False,
                        buffer_km=cfg.site_buffer_km)
    return None


# a country holding fewer of the photos than this is not theirs (a coarse border, a stray photo)
COUNTRY_MIN_SHARE = 0.05


def home_countries(lat_deg: np.ndarray, lon_deg: np.ndarray) -> tuple[list[str], shapely.Geometry]:
    """The Natural Earth countries that hold at least COUNTRY_MIN_SHARE of the points, and their union."""
    frame = countries()
    lon, lat = np.asarray(lon_deg, float), np.asarray(lat_deg, float)
    share = np.array([shapely.intersects_xy(g, lon, lat).mean() if len(lon) else 0.0 for g in frame.geometry])
    keep = share >= COUNTRY_MIN_SHARE
    if not keep.any():
        return [LAND_NAME], land()
    geometry = shapely.union_all(frame.geometry[keep].to_numpy())
    shapely.prepare(geometry)
    return frame["name"][keep].tolist(), geometry


def boundary_area(path: str | Path, isolated: bool = False) -> ClipArea:
    """A boundary file as the area the regions tile (`tile=True`), not merely clip to; `isolated`: read in a child
    process with a memory cap (a visitor's upload: `read_boundary_isolated`)."""
    geometry = read_boundary_isolated(path) if isolated else read_boundary(path)
    return ClipArea(geometry, f"boundary {Path(path).name}", tile=True)


def read_kml(path: Path) -> gpd.GeoDataFrame:
    """A KML file's placemarks, every folder's, with their SchemaData attributes as columns
    (and `layer`: the folder)."""
    import fiona

    frames = []
    attributes = _kml_attributes(Path(path))
    for layer in fiona.listlayers(str(path)):
        # GDAL reads KML; fiona does not list it
        geometry = gpd.read_file(path, layer=layer, driver="KML", allow_unsupported_drivers=True)
        rows = attributes.get(layer, [{}] * len(geometry))
        frame = pd.DataFrame(rows, index=geometry.index) if rows else pd.DataFrame(index=geometry.index)
        frames.append(gpd.GeoDataFrame(frame.assign(layer=layer), geometry=geometry.geometry.to_numpy(), crs=CRS))
    if not frames:
        raise BoundaryError(f"{path.name} holds no placemarks")
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=CRS)


def _kml_attributes(path: Path) -> dict[str, list[dict]]:
    """{folder name: [SimpleData of each placemark, typed by its Schema]}."""
    ns = {"k": KML_NS}
    root = ET.parse(path).getroot()
    types = {f"#{s.get('id')}": {f.get("name"): f.get("type") for f in s.findall("k:SimpleField", ns)}
             for s in root.iter(f"{{{KML_NS}}}Schema")}
    cast = {"int": int, "double": float, "float": float}
    out: dict[str, list[dict]] = {}
    for folder in root.iter(f"{{{KML_NS}}}Folder"):
        name = folder.findtext("k:name", default="", namespaces=ns)
        rows = []
        for mark in folder.findall("k:Placemark", ns):
            data = mark.find("k:ExtendedData/k:SchemaData", ns)
            kinds = types.get(data.get("schemaUrl"), {}) if data is not None else {}
            rows.append({d.get("name"): cast.get(kinds.get(d.get("name")), str)(d.text or "")
                         for d in (data if data is not None else [])})
        out[name] = rows
    return out


if __name__ == "__main__":
    sys.exit(_read_to_wkb(sys.argv[1:]))
