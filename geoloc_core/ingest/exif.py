"""GPS coordinates and the time taken from a photo's EXIF block, with a specific reason when they cannot be had."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

from PIL import ExifTags, Image

_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4
_DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL, _SUBSEC_TIME_ORIGINAL = 0x9003, 0x9011, 0x9291
_EXIF_DATETIME = re.compile(r"(\d{4})[:-](\d\d)[:-](\d\d)[ T](\d\d):(\d\d):(\d\d)")
_EXIF_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)")


class GpsError(ValueError):
    """The photo has no usable EXIF GPS; the message says why."""


class TimeError(ValueError):
    """The photo has no usable EXIF time taken; the message says why."""


def read_time_taken(image: Image.Image) -> tuple[datetime, timedelta | None]:
    """(camera-clock time, its UTC offset if the photo records one) from EXIF DateTimeOriginal.

    DateTimeOriginal has no time zone: the time is naive (with SubSecTimeOriginal's fraction when
    present); OffsetTimeOriginal (EXIF 2.31, written by recent phones and cameras) is the zone, else None.
    """
    try:
        tags = image.getexif().get_ifd(ExifTags.IFD.Exif)
    except Exception as exc:  # malformed EXIF blocks raise anything from struct.error to KeyError
        raise TimeError(f"unreadable EXIF block ({exc})") from exc
    raw = _text(tags.get(_DATETIME_ORIGINAL))
    if not raw:
        raise TimeError("no time taken in EXIF (DateTimeOriginal)")
    m = _EXIF_DATETIME.match(raw)
    try:
        taken = datetime(*map(int, m.groups())) if m else None
    except ValueError:  # 0000:00:00 00:00:00, month 13
        taken = None
    if taken is None:
        raise TimeError(f"EXIF DateTimeOriginal is not a date and time ({raw!r})")
    fraction = _text(tags.get(_SUBSEC_TIME_ORIGINAL))
    if fraction.isdigit():
        taken += timedelta(seconds=float("0." + fraction))
    offset = _EXIF_OFFSET.fullmatch(_text(tags.get(_OFFSET_TIME_ORIGINAL)))
    if offset is None:
        return taken, None
    sign = -1 if offset.group(1) == "-" else 1
    return taken, sign * timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3)))


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return (value or "").strip("\x00 ") if isinstance(value, str) else ""


def read_gps(image: Image.Image) -> tuple[float, float]:
    """(lat_deg, lon_deg) from an opened image's EXIF GPS IFD.

    Accepts degrees/minutes/seconds triples, a single decimal-degree rational and byte or str
    hemisphere references; refuses a missing reference rather than guess the hemisphere.
    """
    try:
        gps = image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    except Exception as exc:  # malformed EXIF blocks raise anything from struct.error to KeyError
        raise GpsError(f"unreadable EXIF block ({exc})") from exc
    if not gps:
        raise GpsError("no GPS in EXIF")
    lat = _signed_degrees(gps, _GPS_LAT, _GPS_LAT_REF, positive="N", negative="S")
    lon = _signed_degrees(gps, _GPS_LON, _GPS_LON_REF, positive="E", negative="W")
    return lat, lon


def _signed_degrees(gps: dict, value_tag: int, ref_tag: int, positive: str, negative: str) -> float:
    axis = "latitude" if positive == "N" else "longitude"
    if value_tag not in gps:
        raise GpsError(f"EXIF GPS has no {axis}")
    degrees = _dms_to_degrees(gps[value_tag], axis)
    ref = gps.get(ref_tag)
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "replace")
    ref = (ref or "").strip("\x00 ").upper()
    if ref not in (positive, negative):
        raise GpsError(f"EXIF GPS {axis} reference is {ref or 'missing'!r}, expected {positive} or {negative}")
    return -degrees if ref == negative else degrees


def _dms_to_degrees(value, axis: str) -> float:
    parts = value if isinstance(value, (tuple, list)) else (value,)
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise GpsError(f"EXIF GPS {axis} is not a number ({value!r})") from exc
    if not numbers or len(numbers) > 3 or not all(math.isfinite(n) for n in numbers):
        raise GpsError(f"EXIF GPS {axis} has an invalid value {value!r} (zero denominator?)")
    return sum(n / 60**i for i, n in enumerate(numbers))
