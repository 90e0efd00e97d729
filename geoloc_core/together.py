"""Which photos show one place, to be located together (`PredictConfig.together`, `predict(groups=...)`).

An analyst often has a handful of photos of one spot: a burst, a walk round a square, the four headings of a street-view
stop. Photos of one group are located jointly (`predictor.locate(together=...)`): evidence is combined at the candidate
and score level, and every photo of the group gets the group's answer. Groups come from the photos' folders, from the
time they were taken (EXIF DateTimeOriginal: a new group wherever consecutive photos are further apart than a gap), from
a table with a group column, or are the whole batch. A photo no group claims is located alone (group None).
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pandas as pd
from PIL import Image

from .config import TOGETHER
from .exif import TimeError, read_time_taken


def photo_groups(paths: list[Path], how: str, gap_min: float = 10.0) -> list[str | None]:
    """One group label per photo (None: located alone): `how` is one of TOGETHER."""
    if how == "none":
        return [None] * len(paths)
    if how == "all":
        return ["all"] * len(paths) if len(paths) > 1 else [None] * len(paths)
    if how == "folder":
        return [str(Path(p).parent) for p in paths]
    if how == "time":
        return time_groups([_time_taken(p) for p in paths], gap_min)
    raise ValueError(f"unknown grouping {how!r}: one of {', '.join(TOGETHER)}")


def time_groups(times: list[datetime | None], gap_min: float) -> list[str | None]:
    """Photos taken within `gap_min` minutes of the one before (in time order) share a group, labelled by the first
    photo's time; a photo without a time, or alone in its group, is None."""
    order = sorted((t, i) for i, t in enumerate(times) if t is not None)
    labels: list[str | None] = [None] * len(times)
    start, members = None, []
    for k, (t, i) in enumerate(order):
        if k == 0 or (t - order[k - 1][0]).total_seconds() > gap_min * 60:
            start, members = t, []
        members.append(i)
        if len(members) > 1:
            for j in members:
                labels[j] = f"taken from {start:%Y-%m-%d %H:%M:%S}"
    return labels


def _time_taken(path: Path) -> datetime | None:
    """The camera-clock time a photo was taken, or None where its EXIF does not say (it is then located alone)."""
    try:
        return read_time_taken(Image.open(io.BytesIO(Path(path).read_bytes())))[0]
    except (TimeError, OSError, ValueError):
        return None


def read_groups(table: Path, paths: list[Path]) -> list[str | None]:
    """Group labels from a CSV with columns path and group (a path as given to predict, or relative to the table's folder;
    an empty group, or a photo the table does not list, is located alone)."""
    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    missing = {"path", "group"} - set(frame.columns)
    if missing:
        raise ValueError(f"{table}: a groups table needs the columns path and group (missing {', '.join(sorted(missing))})")
    by_path = {}
    for path, group in zip(frame["path"], frame["group"]):
        where = Path(path) if Path(path).is_absolute() else Path(table).parent / path
        by_path[where.resolve()] = by_path[Path(path).resolve()] = group or None
    return [by_path.get(Path(p).resolve()) for p in paths]
