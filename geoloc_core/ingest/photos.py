"""Photos on disk or in a manifest -> a PhotoTable, plus a report of every file rejected and why.

Two sources, one result:
- a manifest (`manifest.csv` / `.xlsx` / `.tsv` in the folder, or a path given; read by `manifests.py`:
  CSV of any delimiter and encoding, XLSX, degrees-minutes-seconds): a file column and lat/lon columns
  under any of the usual names (`lat`/`lon`, `LAT`/`LON`, `latitude`/`longitude`, MP-16 / Im2GPS
  `IMG_ID,...,LAT,LON`, GeoCLIP `IMG_FILE,LAT,LON`); other columns are carried along. A path cell
  may use Windows separators (`imgs\\p4.jpg`), and a name that is not on disk as written is looked
  up ignoring case (`P4.JPG` for `p4.jpg`);
- a plain folder of photos, located by their EXIF GPS, or by a GPX track and their EXIF time
  (`tracks.py`) where they have no GPS of their own.

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
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from geoloc_core.base.errors import UserError
from geoloc_core.base.images import ImageDecodeError, decode_image
from geoloc_core.ingest.exif import GpsError, read_gps
from geoloc_core.ingest.manifests import read_manifest
from geoloc_core.ingest.tracks import TrackTagger, place_photo

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"})
MANIFEST_NAME = "manifest.csv"
MANIFEST_NAMES = (MANIFEST_NAME, "manifest.xlsx", "manifest.tsv")  # looked for in a photo folder, in this order
_WINDOWS_ABSOLUTE = re.compile(r"[A-Za-z]:[\\/]|\\\\")  # C:\... or \\server\share
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
    n_from_track: int = 0  # accepted photos placed on a GPX track

    def summary(self) -> str:
        on_track = f" ({self.n_from_track} placed on the GPX track)" if self.n_from_track else ""
        return f"{self.n_accepted} photos accepted{on_track}, {len(self.rejected)} rejected of {self.n_candidates}"


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


def load_photos(source: Path | str, manifest: Path | str | None = None, workers: int = 8,
                tagger: TrackTagger | None = None) -> tuple[PhotoTable, IngestReport]:
    """Ingest a folder (its manifest if present, else EXIF GPS) or a manifest file.

    Args:
        source: a photo folder, or a manifest (CSV, TSV, XLSX) whose paths are relative to its own folder.
        manifest: an explicit manifest; paths in it are relative to its own folder (absolute ones may point into
            `source`).
        workers: threads that read and check files (decoding releases the GIL).
        tagger: a GPX track (`tracks.open_tagger`) that places the photos without EXIF GPS by their EXIF time,
            and a manifest's rows whose lat and lon cells are both empty.
    """
    source = Path(source)
    report = IngestReport()
    if source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        raise UserError(f"{source} is a photo, where a folder of photos (or a manifest) is expected",
                        f"Give the folder that holds it ({source.parent}); to locate the photo, `geoloc predict`")
    if source.is_file():
        root, manifest = source.parent, source
    elif source.is_dir():
        if manifest is None:
            manifest = next((source / n for n in MANIFEST_NAMES if (source / n).is_file()), None)
        root = source if manifest is None else Path(manifest).parent  # a manifest's rows: from its own folder
    else:
        raise FileNotFoundError(f"{source}: no such folder or manifest")
    if tagger is not None and tagger.camera_offset is None:
        report.warnings.append("GPX track: no time offset given, so camera times (for photos that record no offset) are read as UTC")

    locate = Locator(root.resolve(), also=(source.resolve(),))  # absolute rows may point into the data folder
    if manifest is None:
        rows = _scan_folder(root, report)
    else:
        read = read_manifest(Path(manifest), lambda cell: not isinstance(locate(cell), str), keep_unplaced=tagger is not None)
        rows = read.rows
        report.rejected += [Rejection(p, reason) for p, reason in read.rejected]
        report.warnings += read.warnings
    report.n_candidates = len(rows) + len(report.rejected)
    if report.n_candidates == 0:
        raise UserError(f"{source}: no photos found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})",
                        "Give the folder that holds your photos, or a manifest that lists them")

    frame = _check_rows(locate, rows, report, workers, tagger, row_numbers=manifest is not None)
    report.n_accepted = len(frame)
    report.n_from_track = int((frame["located_by"] == "gpx").sum()) if "located_by" in frame else 0
    for rej in report.rejected:
        log.warning("rejected %s: %s", rej.path, rej.reason)
    log.info("%s: %s", source, report.summary())
    return PhotoTable(root=root.resolve(), frame=frame), report


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


def _check_rows(locate: Locator, rows: pd.DataFrame, report: IngestReport, workers: int, tagger: TrackTagger | None,
                row_numbers: bool) -> pd.DataFrame:
    """Rows -> the accepted photos' frame (path as found on disk); the others go to the report. `row_numbers`: the
    rows' index is the manifest's row numbers, and each rejection names its row."""
    paths, lats, lons = rows["path"].tolist(), rows["lat_deg"].tolist(), rows["lon_deg"].tolist()
    labels = [f"row {r}: " for r in rows.index] if row_numbers else [""] * len(rows)

    def check(i: int) -> tuple[str, str, float, float, str] | str:
        return _check_photo(locate, paths[i], lats[i], lons[i], tagger)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(check, range(len(rows))), total=len(rows), desc="ingest", unit="photo", disable=len(rows) < 200))

    keep, seen_paths, seen_hashes = [], set(), {}
    for i, result in enumerate(results):
        if isinstance(result, str):
            report.rejected.append(Rejection(paths[i], labels[i] + result))
            continue
        rel, sha1, lat, lon, located_by = result
        if rel in seen_paths:
            report.rejected.append(Rejection(paths[i], labels[i] + "duplicate row (the same path is listed earlier)"))
        elif sha1 in seen_hashes:
            report.rejected.append(Rejection(paths[i], labels[i] + f"duplicate file (same content as {seen_hashes[sha1]})"))
        else:
            seen_paths.add(rel)
            seen_hashes[sha1] = rel
            keep.append((i, rel, sha1, lat, lon, located_by))

    frame = rows.iloc[[k[0] for k in keep]].reset_index(drop=True).copy()
    frame["path"] = [k[1] for k in keep]
    frame["lat_deg"] = np.array([k[3] for k in keep], dtype=np.float64)
    frame["lon_deg"] = np.array([k[4] for k in keep], dtype=np.float64)
    frame["sha1"] = [k[2] for k in keep]
    if tagger is not None:
        frame["located_by"] = [k[5] for k in keep]
    if _GROUP_COLUMN in frame and (frame[_GROUP_COLUMN] != "").all():
        frame["group"] = frame[_GROUP_COLUMN].astype(str)
    else:
        frame["group"] = [f"{a:.7f},{b:.7f}" for a, b in zip(frame["lat_deg"], frame["lon_deg"])]
    return frame


def _check_photo(locate: Locator, written: str, lat: float, lon: float,
                 tagger: TrackTagger | None) -> tuple[str, str, float, float, str] | str:
    """(path found, sha1, lat_deg, lon_deg, located by) for a good photo, else the reason it is rejected.

    A photo without coordinates (NaN: a folder's, or a manifest row left empty for the track) is located by its
    EXIF GPS, else by the GPX track.
    """
    found = locate(written)
    if isinstance(found, str):
        return found
    rel, path = found
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
    located_by = "manifest"
    if math.isnan(lat) and math.isnan(lon):
        image = Image.open(io.BytesIO(data))
        try:
            (lat, lon), located_by = read_gps(image), "exif"
        except GpsError as exc:
            where = place_photo(tagger, image) if tagger is not None else None
            if where is None or isinstance(where, str):
                return str(exc) + (f"; {where}" if where else "")
            (lat, lon), located_by = where, "gpx"
    problem = coordinate_problem(lat, lon)
    if problem:
        return problem
    return rel, hashlib.sha1(data).hexdigest(), float(lat), float(lon), located_by


class Locator:
    """The file a path cell names under the data root: as written, with Windows separators (`imgs\\p4.jpg`), or,
    when that is not on disk, the one file whose name matches ignoring case (`P4.JPG`). Never a file outside the root.

    Directory listings are cached for the case-insensitive look-up: make one per ingest.
    """

    def __init__(self, root: Path, also: tuple[Path, ...] = ()):
        self.root = root  # resolved
        self.allowed = (root, *also)  # resolved folders a file may lie in (absolute rows: the data folder too)
        self._listings: dict[Path, dict[str, list[str]]] = {}

    def __call__(self, written: str) -> tuple[str, Path] | str:
        """(relative path as found, resolved file) or the reason there is none."""
        text = written.strip()
        if not text:
            return "empty path"
        if _WINDOWS_ABSOLUTE.match(text):
            return "a Windows absolute path: write paths relative to the manifest's folder (e.g. imgs\\p4.jpg)"
        for rel in dict.fromkeys((text, text.replace("\\", "/"))):
            path = (self.root / rel).resolve()
            if not any(path.is_relative_to(folder) for folder in self.allowed):
                return f"path outside the dataset root ({path})"
            if path.is_file():
                return rel, path
        return self._ignoring_case(text.replace("\\", "/"))

    def _ignoring_case(self, rel: str) -> tuple[str, Path] | str:
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if rel.startswith("/") or ".." in parts:  # absolute, or climbing: only ever as written
            return "file not found"
        folder, found = self.root, []
        for part in parts:
            if (folder / part).exists():
                name = part
            else:
                matches = self._listing(folder).get(part.casefold(), [])
                if len(matches) > 1:
                    return f"file not found as written; {len(matches)} differ from it in case only ({', '.join(sorted(matches))})"
                if not matches:
                    return "file not found"
                name = matches[0]
            folder = folder / name
            found.append(name)
        path = folder.resolve()
        if not path.is_relative_to(self.root):
            return f"path outside the dataset root ({path})"
        return ("/".join(found), path) if path.is_file() else "file not found"

    def _listing(self, folder: Path) -> dict[str, list[str]]:
        if folder not in self._listings:
            names: dict[str, list[str]] = {}
            try:
                for name in os.listdir(folder):
                    names.setdefault(name.casefold(), []).append(name)
            except OSError:  # not a folder, or unreadable: nothing matches in it
                pass
            self._listings[folder] = names
        return self._listings[folder]


def coordinate_problem(lat: float, lon: float) -> str | None:
    """Why a coordinate is unusable, or None when it is fine."""
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        return f"coordinate missing or not a number (lat={lat}, lon={lon})"
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return f"coordinate out of range (lat={lat}, lon={lon})"
    if lat == 0 and lon == 0:
        return "coordinate is (0, 0), the null-island placeholder of a missing fix"
    return None
