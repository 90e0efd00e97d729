"""A messy photo folder made on the spot: every kind of bad input an analyst's folder can hold, beside
good photos in every format, each with the reason ingest must give (None: it must be accepted)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from conftest import jpeg_bytes, shared, textured


def _img(seed: int, size: tuple[int, int] = (40, 48)) -> Image.Image:
    return Image.fromarray(textured(seed, size=size).astype(np.uint8))


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _gps_jpeg(seed: int, lat_ref, lat, lon_ref, lon, orientation: int | None = None) -> bytes:
    """A JPEG whose EXIF GPS is written verbatim (refs and rationals as given, however broken)."""
    exif = Image.Exif()
    g = exif.get_ifd(ExifTags.IFD.GPSInfo)
    if lat_ref is not None:
        g[1] = lat_ref
    g[2], g[4] = lat, lon
    if lon_ref is not None:
        g[3] = lon_ref
    if orientation:
        exif[0x0112] = orientation
    return _encode(_img(seed, (40, 56)), "JPEG", exif=exif)


def _dms(v: float) -> tuple:
    d = int(v)
    m = int((v - d) * 60)
    return IFDRational(d, 1), IFDRational(m, 1), IFDRational(round(((v - d) * 60 - m) * 60 * 100), 100)


def png_bomb(side: int = 30_000) -> bytes:
    """A valid PNG header declaring side x side pixels, with next to no data: what a decompression bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def exif_corpus(root: Path) -> dict[str, str | None]:
    """A folder without a manifest: locations come from EXIF GPS."""
    root.mkdir(parents=True)
    expected: dict[str, str | None] = {}

    def put(name: str, data: bytes, reason: str | None) -> None:
        (root / name).write_bytes(data)
        expected[name] = reason

    for o in range(1, 9):  # every EXIF orientation, each at its own place
        put(f"orientation_{o}.jpg", _gps_jpeg(o, "N", _dms(45 + o / 10), "E", _dms(15 + o / 10), orientation=o), None)
    put("south_west.jpg", _gps_jpeg(20, "S", _dms(33.87), "W", _dms(70.67)), None)
    phone = Image.open(io.BytesIO(_gps_jpeg(29, "N", _dms(43.51), "E", _dms(16.44), orientation=6)))
    heic = _encode(phone, "HEIF", exif=phone.getexif().tobytes(), quality=80)  # an iPhone's format, rotated, with GPS
    put("iphone.heic", heic, None)
    put("truncated.heic", heic[: len(heic) // 2], "corrupt or unsupported HEIF")
    put("zero_denominator.jpg",
        _gps_jpeg(21, "N", (IFDRational(45, 0), IFDRational(0, 1), IFDRational(0, 1)), "E", _dms(15)),
        "zero denominator")
    put("missing_ref.jpg", _gps_jpeg(22, None, _dms(45.5), "E", _dms(15.5)), "reference is 'missing'")
    put("bad_ref.jpg", _gps_jpeg(23, "X", _dms(45.5), "E", _dms(15.5)), "reference is 'X'")
    put("no_gps.jpg", jpeg_bytes(textured(24)), "no GPS in EXIF")
    put("zero_bytes.jpg", b"", "empty file (0 bytes)")
    whole = jpeg_bytes(textured(25, size=(256, 256)), quality=95, gps=(45.9, 15.9))
    put("truncated.jpg", whole[: len(whole) // 2], "truncated image")
    put("text_named.jpg", b"Dear analyst, this is a letter, not a photo.\n" * 20, "not an image")
    put("notes.txt", b"field notes", "not an image file type (.txt)")
    put("bomb.png", png_bomb(), "too large")
    put("z_copy_of_orientation_1.jpg", (root / "orientation_1.jpg").read_bytes(),
        "duplicate file (same content as orientation_1.jpg")
    long_name = "a" * 240 + ".jpg"
    put(long_name, _gps_jpeg(26, "N", _dms(44.1), "E", _dms(16.1)), None)
    raw = os.fsencode(root) + b"/caf\xe9_latin1.jpg"  # a Latin-1 name: not valid UTF-8
    with open(raw, "wb") as f:
        f.write(_gps_jpeg(27, "N", _dms(44.2), "E", _dms(16.2)))
    expected["caf\\xe9_latin1.jpg"] = "file name is not valid UTF-8"
    outside = root.parent / "outside_the_root.jpg"
    outside.write_bytes(_gps_jpeg(28, "N", _dms(44.3), "E", _dms(16.3)))
    (root / "link_out.jpg").symlink_to(outside)
    expected["link_out.jpg"] = "path outside the dataset root"
    croatia = sorted((shared("croatia-streetview") / "images").glob("*.jpg"))[0]
    big = Image.open(croatia).convert("RGB").resize((8660, 5774))  # 50 megapixels of a real street scene
    exif = Image.Exif()
    g = exif.get_ifd(ExifTags.IFD.GPSInfo)
    g[1], g[2], g[3], g[4] = "N", _dms(45.81), "E", _dms(15.98)
    put("fifty_megapixels.jpg", _encode(big, "JPEG", exif=exif, quality=80), None)
    return expected


def manifest_corpus(root: Path) -> dict[str, str | None]:
    """A folder with a manifest.csv: every format and pixel mode, and every kind of bad row."""
    root.mkdir(parents=True)
    rgb = _img(40, (48, 64))
    files = {
        "rgb.png": _encode(rgb, "PNG"),
        "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "palette.png": _encode(rgb.convert("P"), "PNG"),
        "sixteen_bit.png": _encode(Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257), "PNG"),
        "photo.webp": _encode(_img(41, (48, 64)), "WEBP"),
        "anim.gif": _encode(_img(42, (48, 64)).convert("P"), "GIF"),
        "scan.tiff": _encode(_img(43, (48, 64)), "TIFF"),
        "old.bmp": _encode(_img(44, (48, 64)), "BMP"),
        "cmyk.jpg": _encode(_img(45, (48, 64)).convert("CMYK"), "JPEG"),
        "grey.jpg": _encode(_img(46, (48, 64)).convert("L"), "JPEG"),
        "no_end_marker.jpg": jpeg_bytes(textured(39))[:-2],  # only the EOI marker lost: repaired and kept
        "nan.jpg": jpeg_bytes(textured(47)), "range.jpg": jpeg_bytes(textured(48)),
        "null_island.jpg": jpeg_bytes(textured(49)),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    rows = [(name, 44 + i / 10, 15 + i / 10) for i, name in enumerate(list(files)[:11])]
    rows += [("nan.jpg", "nan", 15.0), ("range.jpg", 95.0, 15.0), ("null_island.jpg", 0.0, 0.0),
             ("rgb.png", 44.0, 15.0),
             ("missing.jpg", 44.5, 15.5), ("../../etc/passwd", 44.6, 15.6), ("/etc/hostname", 44.7, 15.7)]
    pd.DataFrame(rows, columns=["path", "lat", "lon"]).to_csv(root / "manifest.csv", index=False)
    expected: dict[str, str | None] = {name: None for name in list(files)[:11]}
    expected |= {"nan.jpg": "not a number", "range.jpg": "out of range", "null_island.jpg": "null-island",
                 "missing.jpg": "file not found", "../../etc/passwd": "path outside the dataset root",
                 "/etc/hostname": "path outside the dataset root"}
    return expected
