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
never reaches the model. Bad files never stop the others. A photo without usable GPS (and not placed on
a track) is not rejected: it is listed to be located by the database the others make.

Photos are then grouped into places (`places.py`): photos within `IngestConfig.place_radius_m` of each
other, and the same picture saved twice (a perceptual hash), share the `group` that every split, fold,
calibration hold-out and bootstrap keeps on one side; a manifest's `location_id` (or `group`) column wins.
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
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from geoloc_core.base.errors import UserError
from geoloc_core.base.images import ImageDecodeError, decode_image
from geoloc_core.config import IngestConfig
from geoloc_core.ingest.exif import GpsError, read_gps
from geoloc_core.ingest.manifests import read_manifest
from geoloc_core.ingest.places import (
    PlaceSummary,
    merge_groups,
    near_duplicate_pairs,
    perceptual_hash,
    place_labels,
    summarise_places,
)
from geoloc_core.ingest.tracks import TrackTagger, place_photo

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"})
MANIFEST_NAME = "manifest.csv"
MANIFEST_NAMES = (MANIFEST_NAME, "manifest.xlsx", "manifest.tsv")  # looked for in a photo folder, in this order
_WINDOWS_ABSOLUTE = re.compile(r"[A-Za-z]:[\\/]|\\\\")  # C:\... or \\server\share
_GROUP_COLUMNS = ("location_id", "group")  # a manifest's own place key, in this order of preference
_CHECK_SIDE = 32  # decode size for the validity check: JPEGs then decode at 1/8 scale


@dataclass(frozen=True)
class Rejection:
    """A file ingest did not accept (or could not place), and why."""
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
    to_locate: list[Rejection] = field(default_factory=list)  # photos without usable GPS, and why: the run locates them
    near_duplicates: list[NearDuplicate] = field(default_factory=list)
    places: PlaceSummary | None = None

    def summary(self) -> str:
        """One line for the log and the Data page: accepted, placed on the track, places, to locate, rejected."""
        on_track = f" ({self.n_from_track} placed on the GPX track)" if self.n_from_track else ""
        places = f" in {self.places.n_places} places" if self.places else ""
        near = f", {len(self.near_duplicates)} near-duplicates" if self.near_duplicates else ""
        return (f"{self.n_accepted} photos with a location{on_track}{places}{near}, {len(self.to_locate)} to locate, "
                f"{len(self.rejected)} rejected of {self.n_candidates}")


@dataclass(frozen=True)
class NearDuplicate:
    """A photo that repeats an earlier one (re-saved, resized, re-compressed): `bits` of 64 of their hashes differ."""

    path: str
    of: str
    bits: int


@dataclass(frozen=True)
class PhotoTable:
    """Accepted photos. `frame` columns: path (relative to root), lat_deg, lon_deg, sha1, phash, group, extras.

    `group` is the unit a train/test split must not cut: `location_id` (or `group`) where the data has one,
    otherwise the place (`places.place_labels`: photos within a radius of each other, and near-duplicates).
    """

    root: Path
    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def lat_deg(self) -> np.ndarray:
        """(N,) latitudes, degrees."""
        return self.frame["lat_deg"].to_numpy(np.float64)

    @property
    def lon_deg(self) -> np.ndarray:
        """(N,) longitudes, degrees."""
        return self.frame["lon_deg"].to_numpy(np.float64)

    def abs_paths(self) -> list[Path]:
        """Each photo's absolute path (`root` / its relative path)."""
        return [self.root / p for p in self.frame["path"]]


def load_photos(source: Path | str, manifest: Path | str | None = None, workers: int = 8,
                tagger: TrackTagger | None = None, cfg: IngestConfig | None = None) -> tuple[PhotoTable, IngestReport]:
    """Ingest a folder (its manifest if present, else EXIF GPS) or a manifest file.

    Args:
        source: a photo folder, or a manifest (CSV, TSV, XLSX) whose paths are relative to its own folder.
        manifest: an explicit manifest; paths in it are relative to its own folder (absolute ones may point into
            `source`).
        workers: threads that read and check files (decoding releases the GIL).
        tagger: a GPX track (`tracks.open_tagger`) that places the photos without EXIF GPS by their EXIF time,
            and a manifest's rows whose lat and lon cells are both empty.
        cfg: the grouping settings (place radius and cap, near-duplicates); default: `IngestConfig()`'s.

    Raises:
        ValueError: no photos at all, or none with a location (only photos to locate, and nothing to locate them by).
    """
    cfg = cfg or IngestConfig()
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
            if manifest is not None and not manifest.resolve().is_relative_to(source.resolve()):  # a link out
                raise ValueError(f"{manifest}: a symbolic link out of the photo folder; not read")
        root = source if manifest is None else Path(manifest).parent  # a manifest's rows: from its own folder
    else:
        raise FileNotFoundError(f"{source}: no such folder or manifest")
    if tagger is not None and tagger.camera_offset is None:
        report.warnings.append("GPX track: no time offset given, so camera times (for photos that record no offset) "
                               "are read as UTC")

    locate = Locator(root.resolve(), also=(source.resolve(),))  # absolute rows may point into the data folder
    if manifest is None:
        rows = _scan_folder(root, report)
    else:
        read = read_manifest(Path(manifest), lambda cell: not isinstance(locate(cell), str),
                             keep_unplaced=tagger is not None)
        rows = read.rows
        report.rejected += [Rejection(p, reason) for p, reason in read.rejected]
        report.warnings += read.warnings
    report.n_candidates = len(rows) + len(report.rejected)
    if report.n_candidates == 0:
        raise UserError(f"{source}: no photos found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})",
                        "Give the folder that holds your photos, or a manifest that lists them")

    frame = _check_rows(locate, rows, report, workers, tagger, row_numbers=manifest is not None)
    frame = group_places(frame, report, cfg)
    report.n_accepted = len(frame)
    report.n_from_track = int((frame["located_by"] == "gpx").sum()) if "located_by" in frame else 0
    for rej in report.rejected:
        log.warning("rejected %s: %s", rej.path, rej.reason)
    for item in report.to_locate:
        log.info("to locate %s: %s", item.path, item.reason)
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


class _Checked(NamedTuple):
    """A readable photo: the path as found, its hashes, and where it is (NaN, with the reason, when nowhere)."""

    rel: str
    sha1: str
    lat: float
    lon: float
    located_by: str  # manifest, exif, gpx, or "" for a photo to locate
    phash: int
    untagged: str = ""  # why it has no location (e.g. "no GPS in EXIF")


def _check_rows(locate: Locator, rows: pd.DataFrame, report: IngestReport, workers: int, tagger: TrackTagger | None,
                row_numbers: bool) -> pd.DataFrame:
    """Rows -> the accepted photos' frame (path as found on disk); the others go to the report (photos without a
    location to `report.to_locate`). `row_numbers`: the rows' index is the manifest's row numbers, and each rejection
    names its row."""
    paths, lats, lons = rows["path"].tolist(), rows["lat_deg"].tolist(), rows["lon_deg"].tolist()
    labels = [f"row {r}: " for r in rows.index] if row_numbers else [""] * len(rows)

    def check(i: int) -> _Checked | str:
        return _check_photo(locate, paths[i], lats[i], lons[i], tagger)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(check, range(len(rows))), total=len(rows), desc="ingest", unit="photo",
                            disable=len(rows) < 200))

    keep: list[tuple[int, _Checked]] = []
    seen_paths, seen_hashes = set(), {}
    for i, result in enumerate(results):
        if isinstance(result, str):
            report.rejected.append(Rejection(paths[i], labels[i] + result))
        elif result.rel in seen_paths:
            report.rejected.append(Rejection(paths[i], labels[i] + "duplicate row (the same path is listed earlier)"))
        elif result.sha1 in seen_hashes:
            same = seen_hashes[result.sha1]
            report.rejected.append(Rejection(paths[i], labels[i] + f"duplicate file (same content as {same})"))
        elif result.untagged:
            seen_paths.add(result.rel)
            seen_hashes[result.sha1] = result.rel
            report.to_locate.append(Rejection(result.rel, labels[i] + result.untagged))
        else:
            seen_paths.add(result.rel)
            seen_hashes[result.sha1] = result.rel
            keep.append((i, result))

    frame = rows.iloc[[i for i, _ in keep]].reset_index(drop=True).copy()
    frame["path"] = [c.rel for _, c in keep]
    frame["lat_deg"] = np.array([c.lat for _, c in keep], dtype=np.float64)
    frame["lon_deg"] = np.array([c.lon for _, c in keep], dtype=np.float64)
    frame["sha1"] = [c.sha1 for _, c in keep]
    frame["phash"] = [f"{c.phash:016x}" for _, c in keep]
    if tagger is not None:
        frame["located_by"] = [c.located_by for _, c in keep]
    return frame


def _same_place_pairs(places: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """(P, 2) pairs linking the photos of each place in `chosen` into a chain (one component per place)."""
    members = np.flatnonzero(np.isin(places, chosen))
    members = members[np.argsort(places[members], kind="stable")]
    same = places[members[1:]] == places[members[:-1]]
    return np.column_stack([members[:-1][same], members[1:][same]]).astype(np.int64)


def group_places(frame: pd.DataFrame, report: IngestReport, cfg: IngestConfig) -> pd.DataFrame:
    """The photos with their `group` (place) and `near_duplicate_of` columns; near-duplicates reported (or dropped, with
    `cfg.drop_near_duplicates`), the grouping summarised in `report.places`."""
    hashes = np.array([int(h, 16) for h in frame["phash"]], np.uint64)
    pairs = near_duplicate_pairs(hashes, cfg.near_duplicate_bits)
    first: dict[int, int] = {}  # each later photo of a pair -> the earliest photo it repeats
    for i, j in pairs.tolist():
        first.setdefault(j, i)
    paths = frame["path"].tolist()
    report.near_duplicates += [NearDuplicate(paths[j], paths[i], int(np.bitwise_count(hashes[j] ^ hashes[i])))
                               for j, i in sorted(first.items())]
    frame = frame.assign(near_duplicate_of=[paths[first[j]] if j in first else "" for j in range(len(frame))])
    if cfg.drop_near_duplicates and first:
        report.rejected += [Rejection(d.path, f"near-duplicate of {d.of} ({d.bits} of 64 hash bits differ)")
                            for d in report.near_duplicates]
        frame = frame.drop(index=list(first)).reset_index(drop=True)
        pairs = np.empty((0, 2), np.int64)
    lat, lon = frame["lat_deg"].to_numpy(), frame["lon_deg"].to_numpy()
    places = place_labels(lat, lon, cfg.place_radius_m, cfg.place_max_m)
    given = next((c for c in _GROUP_COLUMNS if c in frame), None)
    own = frame[given].fillna("").astype(str).to_numpy() if given else np.full(len(frame), "")
    keys = np.where(own != "", own, [f"place-{p}" for p in places]) if len(frame) else own
    if given and (own == "").any():  # a blank key at a place with keyed photos: one place, never two sides of a split
        pairs = np.vstack([pairs, _same_place_pairs(places, np.unique(places[own == ""]))])
    codes = merge_groups(pd.factorize(keys)[0], pairs)  # a near-duplicate joins its original's place, across given keys
    named = pd.Series(np.where(own != "", keys, None), dtype=object)  # a merged group keeps a key the data gave
    first_key = named.groupby(codes).transform("first").fillna(pd.Series(keys).groupby(codes).transform("first"))
    frame["group"] = first_key.to_numpy(str) if len(frame) else np.array([], str)
    keyed = own != ""
    for joined in pd.Series(own[keyed]).groupby(codes[keyed]).unique():
        if len(joined) > 1:  # the data's own keys, made one place: said, never silent
            shown = ", ".join(sorted(joined)[:5]) + (" ..." if len(joined) > 5 else "")
            report.warnings.append(f"{given} {shown}: one place here (a photo of one repeats another's, or a photo "
                                   f"without a {given} lies within {cfg.place_radius_m:g} m of both)")
    report.places = summarise_places(pd.factorize(frame["group"])[0], lat, lon, cfg.place_radius_m, cfg.place_max_m,
                                     len(report.near_duplicates))
    return frame


def _check_photo(locate: Locator, written: str, lat: float, lon: float, tagger: TrackTagger | None) -> _Checked | str:
    """A good photo's path, hashes and location (NaN, with the reason, for one without), else the reason it is rejected.

    A photo without coordinates (NaN: a folder's, or a manifest row left empty for the track) is located by its
    EXIF GPS, else by the GPX track, else left to be located by the run.
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
        phash = perceptual_hash(decode_image(data, min_side=_CHECK_SIDE))
    except ImageDecodeError as exc:
        return str(exc)
    sha1 = hashlib.sha1(data).hexdigest()
    located_by = "manifest"
    if math.isnan(lat) and math.isnan(lon):
        image = Image.open(io.BytesIO(data))
        try:
            (lat, lon), located_by = read_gps(image), "exif"
        except GpsError as exc:
            where = place_photo(tagger, image) if tagger is not None else None
            if where is None or isinstance(where, str):
                return _Checked(rel, sha1, math.nan, math.nan, "", phash, str(exc) + (f"; {where}" if where else ""))
            (lat, lon), located_by = where, "gpx"
    problem = coordinate_problem(lat, lon)
    if problem:
        return problem
    return _Checked(rel, sha1, float(lat), float(lon), located_by, phash)


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
                    return (f"file not found as written; {len(matches)} differ from it in case only "
                            f"({', '.join(sorted(matches))})")
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
