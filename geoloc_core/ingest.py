"""Photos on disk or in a manifest -> a PhotoTable, plus a report of every file rejected and why.

Two sources, one result:
- a CSV manifest (`manifest.csv` in the folder, or a path given): a file column and lat/lon columns
  under any of the usual names (`lat`/`lon`, `LAT`/`LON`, `latitude`/`longitude`, MP-16 / Im2GPS
  `IMG_ID,...,LAT,LON`, GeoCLIP `IMG_FILE,LAT,LON`); other columns are carried along;
- a plain folder of photos, located by their EXIF GPS.

Every candidate is opened (a cheap reduced-size decode for JPEG) and hashed, so a truncated file, a
text file named `.jpg`, a decompression bomb or a copy of another photo is caught here, by name, and
never reaches the model. Bad files never stop the others.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .exif import GpsError, read_gps
from .images import ImageDecodeError, decode_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"})
MANIFEST_NAME = "manifest.csv"
_PATH_COLUMNS = ("path", "img_file", "img_id", "image", "image_path", "file", "filename")
_LAT_COLUMNS = ("lat", "latitude", "lat_deg")
_LON_COLUMNS = ("lon", "lng", "long", "longitude", "lon_deg")
_GROUP_COLUMN = "location_id"
_CHECK_SIDE = 32  # decode size for the validity check: JPEGs then decode at 1/8 scale


@dataclass(frozen=True)
class Rejection:
    path: str
    reason: str


@dataclass
class IngestReport:
    """What ingest saw: counts, every rejected file with its reason, and data-level warnings."""

    n_candidates: int = 0
    n_accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.n_accepted} photos accepted, {len(self.rejected)} rejected of {self.n_candidates}"


@dataclass(frozen=True)
class PhotoTable:
    """Accepted photos. `frame` columns: path (relative to root), lat_deg, lon_deg, sha1, group, extras.

    `group` is the unit a train/test split must not cut: `location_id` where the data has one,
    otherwise the exact coordinate (several photos taken at one spot).
    """

    root: Path
    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def lat_deg(self) -> np.ndarray:
        return self.frame["lat_deg"].to_numpy(np.float64)

    @property
    def lon_deg(self) -> np.ndarray:
        return self.frame["lon_deg"].to_numpy(np.float64)

    def abs_paths(self) -> list[Path]:
        return [self.root / p for p in self.frame["path"]]


def load_photos(source: Path | str, manifest: Path | str | None = None, workers: int = 8) -> tuple[PhotoTable, IngestReport]:
    """Ingest a folder (its `manifest.csv` if present, else EXIF GPS) or a manifest file.

    Args:
        source: a photo folder, or a CSV manifest whose paths are relative to its own folder.
        manifest: an explicit manifest; paths in it are relative to `source`.
        workers: threads that read and check files (decoding releases the GIL).
    """
    source = Path(source)
    report = IngestReport()
    if source.is_file():
        root, manifest = source.parent, source
    elif source.is_dir():
        root = source
        if manifest is None and (source / MANIFEST_NAME).is_file():
            manifest = source / MANIFEST_NAME
    else:
        raise FileNotFoundError(f"{source}: no such folder or manifest")

    from_exif = manifest is None
    rows = _scan_folder(root, report) if from_exif else read_manifest(Path(manifest), report)
    report.n_candidates = len(rows) + len(report.rejected)
    if report.n_candidates == 0:
        raise ValueError(f"{source}: no photos found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")

    frame = _check_rows(root, rows, report, workers, from_exif)
    report.n_accepted = len(frame)
    for rej in report.rejected:
        log.warning("rejected %s: %s", rej.path, rej.reason)
    log.info("%s: %s", source, report.summary())
    return PhotoTable(root=root.resolve(), frame=frame), report


def read_manifest(path: Path, report: IngestReport) -> pd.DataFrame:
    """A manifest CSV -> rows with path, lat_deg, lon_deg (NaN where unparsable) and extra columns."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    lower = {c.lower().strip(): c for c in raw.columns}
    path_col = _first_present(lower, _PATH_COLUMNS)
    lat_col, lon_col = _first_present(lower, _LAT_COLUMNS), _first_present(lower, _LON_COLUMNS)
    if path_col is None or lat_col is None or lon_col is None:
        raise ValueError(
            f"{path}: manifest needs a file column ({'/'.join(_PATH_COLUMNS)}) and lat/lon columns "
            f"({'/'.join(_LAT_COLUMNS)}, {'/'.join(_LON_COLUMNS)}); found {list(raw.columns)}"
        )
    rows = pd.DataFrame({
        "path": raw[path_col].str.strip(),
        "lat_deg": pd.to_numeric(raw[lat_col], errors="coerce"),
        "lon_deg": pd.to_numeric(raw[lon_col], errors="coerce"),
    })
    lat_ok, lon_ok = rows["lat_deg"].abs() <= 90, rows["lon_deg"].abs() <= 90
    if (~lat_ok).sum() > 0 and lon_ok.all() and (~lat_ok).mean() > 0.5:
        report.warnings.append(
            f"{path}: columns {lat_col!r}/{lon_col!r} look swapped (most latitudes beyond ±90°, all "
            "longitudes within ±90°); read them the other way round"
        )
        rows[["lat_deg", "lon_deg"]] = rows[["lon_deg", "lat_deg"]].to_numpy()
    extras = [c for c in raw.columns if c not in (path_col, lat_col, lon_col)]
    for c in extras:
        rows[c] = raw[c]
    return rows


def _first_present(lower_to_original: dict[str, str], names: Iterable[str]) -> str | None:
    return next((lower_to_original[n] for n in names if n in lower_to_original), None)


def _scan_folder(root: Path, report: IngestReport) -> pd.DataFrame:
    """Every file under `root` (hidden ones aside); wrong file types are reported, not read."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if not _utf8(rel):  # a CSV, a JSON or a table cannot hold it; name it readably and say what to do
                shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
                report.rejected.append(Rejection(shown, "file name is not valid UTF-8 (rename the file)"))
            elif Path(name).suffix.lower() in IMAGE_SUFFIXES:
                paths.append(rel)
            else:
                report.rejected.append(Rejection(rel, f"not an image file type ({Path(name).suffix or 'no suffix'})"))
    return pd.DataFrame({"path": paths, "lat_deg": np.nan, "lon_deg": np.nan})


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as surrogate escapes
        return False
    return True


def _check_rows(root: Path, rows: pd.DataFrame, report: IngestReport, workers: int, from_exif: bool) -> pd.DataFrame:
    root_resolved = root.resolve()
    paths, lats, lons = rows["path"].tolist(), rows["lat_deg"].tolist(), rows["lon_deg"].tolist()

    def check(i: int) -> tuple[str, float, float] | str:
        return _check_photo(root_resolved, paths[i], lats[i], lons[i], from_exif)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(check, range(len(rows))), total=len(rows), desc="ingest", unit="photo", disable=len(rows) < 200))

    keep, seen_paths, seen_hashes = [], set(), {}
    for i, result in enumerate(results):
        rel = paths[i]
        if isinstance(result, str):
            report.rejected.append(Rejection(rel, result))
            continue
        sha1, lat, lon = result
        if rel in seen_paths:
            report.rejected.append(Rejection(rel, "duplicate row (the same path is listed earlier)"))
        elif sha1 in seen_hashes:
            report.rejected.append(Rejection(rel, f"duplicate file (same content as {seen_hashes[sha1]})"))
        else:
            seen_paths.add(rel)
            seen_hashes[sha1] = rel
            keep.append((i, sha1, lat, lon))

    idx = [k[0] for k in keep]
    frame = rows.iloc[idx].reset_index(drop=True).copy()
    frame["lat_deg"] = np.array([k[2] for k in keep], dtype=np.float64)
    frame["lon_deg"] = np.array([k[3] for k in keep], dtype=np.float64)
    frame["sha1"] = [k[1] for k in keep]
    if _GROUP_COLUMN in frame and (frame[_GROUP_COLUMN] != "").all():
        frame["group"] = frame[_GROUP_COLUMN].astype(str)
    else:
        frame["group"] = [f"{a:.7f},{b:.7f}" for a, b in zip(frame["lat_deg"], frame["lon_deg"])]
    return frame


def _check_photo(root: Path, rel: str, lat: float, lon: float, from_exif: bool) -> tuple[str, float, float] | str:
    """(sha1, lat_deg, lon_deg) for a good photo, else the reason it is rejected."""
    if not rel:
        return "empty path"
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        return f"path outside the dataset root ({path})"
    if not path.is_file():
        return "file not found"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not data:
        return "empty file (0 bytes)"
    try:
        decode_image(data, min_side=_CHECK_SIDE)
    except ImageDecodeError as exc:
        return str(exc)
    if from_exif:
        try:
            lat, lon = read_gps(Image.open(io.BytesIO(data)))
        except GpsError as exc:
            return str(exc)
    problem = coordinate_problem(lat, lon)
    if problem:
        return problem
    return hashlib.sha1(data).hexdigest(), float(lat), float(lon)


def coordinate_problem(lat: float, lon: float) -> str | None:
    """Why a coordinate is unusable, or None when it is fine."""
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        return f"coordinate missing or not a number (lat={lat}, lon={lon})"
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return f"coordinate out of range (lat={lat}, lon={lon})"
    if lat == 0 and lon == 0:
        return "coordinate is (0, 0), the null-island placeholder of a missing fix"
    return None
