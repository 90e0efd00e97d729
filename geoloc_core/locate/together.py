"""Which photos show one place, to be located together (`TogetherConfig`, `predict(groups=...)`).

An analyst often has a handful of photos of one spot: a burst, a walk round a square, the four headings of a street-view
stop. Photos of one group are located jointly (`predictor.locate(together=...)`): evidence is combined at the candidate
and score level, and every photo of the group gets the group's answer. Groups come from the photos' folders, from the
time they were taken (EXIF DateTimeOriginal, in UTC where every photo records its zone: a new group wherever consecutive
photos are further apart than a gap), from a table with a group column, or are the whole batch. A photo no group claims
is located alone (group None).
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from PIL import Image

from geoloc_core.base import images  # noqa: F401  (registers HEIC with Pillow: phone photos carry their time there too)
from geoloc_core.config import TogetherConfig
from geoloc_core.ingest.exif import TimeError, read_time_taken

log = logging.getLogger(__name__)


def photo_groups(paths: list[Path], cfg: TogetherConfig) -> list[str | None]:
    """One group label per photo (None: located alone), as `cfg.how` says."""
    if cfg.how == "none":
        return [None] * len(paths)
    if cfg.how == "all":
        return ["all"] * len(paths)
    if cfg.how == "folder":
        return [str(Path(p).parent) for p in paths]
    if cfg.how == "time":
        if not cfg.gap_min > 0:
            raise ValueError(f"the gap between photos of one place must be positive minutes, not {cfg.gap_min}")
        return time_groups(comparable_times([_time_taken(p) for p in paths]), cfg.gap_min)
    raise ValueError(f"unknown grouping {cfg.how!r}")


def time_groups(times: list[datetime | None], gap_min: float) -> list[str | None]:
    """Photos taken within `gap_min` minutes of the one before (in time order) share a group, labelled by the first
    photo's time; a photo without a time is None. The times must compare (`comparable_times`)."""
    order = sorted((t, i) for i, t in enumerate(times) if t is not None)
    labels: list[str | None] = [None] * len(times)
    label = None
    for k, (t, i) in enumerate(order):
        if k == 0 or (t - order[k - 1][0]).total_seconds() > gap_min * 60:
            label = f"taken from {t:%Y-%m-%d %H:%M:%S}" + (" UTC" if t.tzinfo else "")
        labels[i] = label
    return labels


def comparable_times(stamps: list[tuple[datetime, timedelta | None] | None]) -> list[datetime | None]:
    """(camera-clock time, UTC offset or None) per photo -> times that compare across the photos: UTC where every timed
    photo records its zone (two cameras set to different zones), else the camera clocks
    (one camera's photos of a trip)."""
    timed = [s for s in stamps if s is not None]
    zoned = bool(timed) and all(offset is not None for _, offset in timed)
    return [None if s is None else (s[0] - s[1]).replace(tzinfo=UTC) if zoned else s[0] for s in stamps]


def _time_taken(path: Path) -> tuple[datetime, timedelta | None] | None:
    """(camera-clock time, its UTC offset where EXIF records one) a photo was taken, or None where its EXIF does not say
    (it is then located alone)."""
    try:
        with Image.open(io.BytesIO(Path(path).read_bytes())) as image:
            return read_time_taken(image)
    except (TimeError, OSError, ValueError, Image.DecompressionBombError):
        return None


def read_groups(table: Path, paths: list[Path]) -> list[str | None]:
    """Group labels from a CSV with columns path and group: a path as given to predict, or relative to the table's
    folder; an empty group, or a photo the table does not list, is located alone. A table that names none of the photos
    is refused (its paths are likely wrong), rows that name no photo are logged."""
    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    missing = {"path", "group"} - set(frame.columns)
    if missing:
        raise ValueError(f"{table}: a groups table needs the columns path and group (missing "
                         f"{', '.join(sorted(missing))})")
    wanted = {Path(p).resolve(): i for i, p in enumerate(paths)}
    labels: list[str | None] = [None] * len(paths)
    unmatched = []
    for path, group in zip(frame["path"], frame["group"]):
        candidates = [Path(path)] if Path(path).is_absolute() else [Path(table).parent / path, Path(path)]
        hit = next((wanted[c.resolve()] for c in candidates if c.resolve() in wanted), None)
        if hit is None:
            unmatched.append(path)
        else:
            labels[hit] = group or None
    if len(unmatched) == len(frame) and len(frame):
        raise ValueError(f"{table}: none of its {len(frame)} paths is one of the {len(paths)} photos (e.g. "
                         f"{unmatched[0]!r})")
    if unmatched:
        log.warning("%s: %d rows name no photo given (e.g. %r); they are ignored", table, len(unmatched), unmatched[0])
    return labels
