"""Photos without GPS placed on a GPX track by the time they were taken (a phone or watch logged the trip, the camera
did not).

A photo's EXIF DateTimeOriginal is camera-clock time without a zone: the camera's UTC offset turns it
into UTC (the photo's own OffsetTimeOriginal where it records one, else the offset given, else UTC).
The position is interpolated linearly between the two track points around that time. A photo before
the track's first point or after its last, or between two points further apart in time than the
maximum gap (the logger paused, lost its fix, or was off), is not placed: the reason says which.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from geoloc_core.base.errors import UserError
from geoloc_core.config import server_config, too_large
from geoloc_core.ingest.exif import read_time_taken

_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d\d))?")


@dataclass(frozen=True)
class Track:
    """Track points in time order, from one GPX file or several."""

    time_s: np.ndarray  # (P,) float64, UTC seconds since the epoch, strictly increasing
    lat_deg: np.ndarray  # (P,) float64
    lon_deg: np.ndarray  # (P,) float64


@dataclass(frozen=True)
class TrackTagger:
    """What placing a photo on a track needs: the track, the camera clock's UTC offset and the largest gap bridged."""

    track: Track
    camera_offset: timedelta | None  # for photos that record no offset of their own; None: read as UTC
    max_gap_s: float


def open_tagger(gpx: str | Path, time_offset: str | None, max_gap_s: float) -> TrackTagger:
    """A TrackTagger from the command line's settings (see `IngestConfig`); raises ValueError with the reason."""
    if max_gap_s <= 0:
        raise ValueError(f"the GPX maximum gap must be positive seconds, not {max_gap_s}")
    return TrackTagger(read_gpx(gpx), None if time_offset is None else parse_utc_offset(time_offset), float(max_gap_s))


def parse_utc_offset(text: str) -> timedelta:
    """`+01:00`, `-05:00`, `+0530`, `+2`, `UTC+2`, `Z` -> a timedelta."""
    s = text.strip().upper()
    if s in ("Z", "UTC", "GMT", "0"):
        return timedelta(0)
    m = _OFFSET.fullmatch(s)
    if m is None or int(m.group(2)) > 14 or int(m.group(3) or 0) >= 60:
        raise ValueError(f"time offset {text!r}: write the camera clock's UTC offset as +01:00 or -05:00")
    sign = -1 if m.group(1) == "-" else 1
    return sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))


def read_gpx(source: str | Path) -> Track:
    """The timed points of a GPX file, or of every `.gpx` file in a folder (tracks and routes; waypoints are places, not
    a path).

    Each file is bounded (`ServerConfig.max_gpx_mb`) and read by one streaming XML pass (gpxpy's namespace regex took
    time quadratic in the file's size); a file in a folder must lie in it once its symbolic links are followed.
    """
    source = Path(source)
    files = sorted(p for p in source.iterdir() if p.suffix.lower() == ".gpx") if source.is_dir() else [source]
    if not files:
        raise FileNotFoundError(f"{source}: no .gpx files in this folder")
    points: list[tuple[float, float, float]] = []
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GPX file")
        if source.is_dir() and not path.resolve().is_relative_to(source.resolve()):
            raise ValueError(f"{path}: a symbolic link out of the GPX folder; not read")
        limit = server_config().max_gpx_mb
        if path.stat().st_size > limit * 2**20:
            raise ValueError(f"{path}: "
                             + too_large("the GPX file", path.stat().st_size / 2**20, limit, "MB", "max_gpx_mb"))
        try:
            points += _timed_points(path)
        except ET.ParseError as exc:  # a line and column, never the file's text
            raise ValueError(f"{path}: not a readable GPX file ({exc})") from exc
    if not points:
        raise UserError(f"{source}: the GPX has no points with a time, so photos cannot be matched to it",
                        "Use the track as the logger recorded it (with times), or a manifest with coordinates")
    arr = np.array(sorted(points), np.float64)
    keep = np.r_[True, np.diff(arr[:, 0]) > 0]  # one point per instant (the first)
    return Track(time_s=arr[keep, 0], lat_deg=arr[keep, 1], lon_deg=arr[keep, 2])


def _timed_points(path: Path) -> list[tuple[float, float, float]]:
    """(UTC seconds, lat_deg, lon_deg) of a GPX file's track and route points that have a time (GPX 1.0 or 1.1)."""
    points = []
    for _, element in ET.iterparse(path, events=("end",)):
        tag = element.tag.rpartition("}")[2]
        if tag not in ("trkpt", "rtept", "wpt"):
            continue
        stamp = next((c.text for c in element if c.tag.rpartition("}")[2] == "time"), None)
        if tag != "wpt" and stamp and stamp.strip():
            line = f"{path.name}: a {tag} with time {stamp.strip()[:40]!r}"
            try:
                t = datetime.fromisoformat(stamp.strip())
                lat, lon = float(element.get("lat", "nan")), float(element.get("lon", "nan"))
            except ValueError:
                raise ValueError(f"{line}: not an ISO 8601 time, or its lat / lon is not a number") from None
            if not (abs(lat) <= 90 and abs(lon) <= 180):
                raise ValueError(f"{line}: lat / lon missing or out of range")
            points.append(((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp(), lat, lon))  # GPX times are UTC
        element.clear()  # the tree keeps no point once it is read
    return points


def position_at(track: Track, t_s: float, max_gap_s: float) -> tuple[float, float] | str:
    """(lat_deg, lon_deg) on the track at UTC time `t_s`, or why there is none."""
    times = track.time_s
    if not times[0] <= t_s <= times[-1]:
        return f"outside the GPX track's time span ({_utc(times[0])} to {_utc(times[-1])})"
    j = int(np.searchsorted(times, t_s))  # times[j - 1] < t_s <= times[j]
    if times[j] == t_s:
        return float(track.lat_deg[j]), float(track.lon_deg[j])
    gap = times[j] - times[j - 1]
    if gap > max_gap_s:
        return (f"in a {gap:.0f} s gap of the GPX track ({_utc(times[j - 1])} to {_utc(times[j])}; the maximum gap is "
                f"{max_gap_s:g} s)")
    f = (t_s - times[j - 1]) / gap
    lat = track.lat_deg[j - 1] + f * (track.lat_deg[j] - track.lat_deg[j - 1])
    # the short way round, across the antimeridian too
    dlon = (track.lon_deg[j] - track.lon_deg[j - 1] + 180) % 360 - 180
    lon = (track.lon_deg[j - 1] + f * dlon + 180) % 360 - 180
    return float(lat), float(lon)


def place_photo(tagger: TrackTagger, image: Image.Image) -> tuple[float, float] | str:
    """(lat_deg, lon_deg) of a photo on the tagger's track by its EXIF time, or why it cannot be placed."""
    try:
        taken, own_offset = read_time_taken(image)
    except ValueError as exc:
        return str(exc)
    offset = own_offset if own_offset is not None else tagger.camera_offset or timedelta(0)
    t_s = (taken - offset).replace(tzinfo=UTC).timestamp()
    where = position_at(tagger.track, t_s, tagger.max_gap_s)
    if isinstance(where, str):
        how = ("from its EXIF" if own_offset is not None else "as given" if tagger.camera_offset is not None
               else "as none was given")
        return (f"taken {_utc(t_s)} (camera clock {taken:%Y-%m-%d %H:%M:%S}, UTC offset {_offset_text(offset)} {how}): "
                f"{where}")
    return where


def _utc(t_s: float) -> str:
    return f"{datetime.fromtimestamp(t_s, UTC):%Y-%m-%d %H:%M:%S} UTC"


def _offset_text(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
