"""Decoding photos the one way every stage uses: upright, RGB, bounded in size, errors named.

Pillow refuses a JPEG whose last bytes (the end-of-image marker) are missing, which phones and
interrupted copies produce; the picture itself is whole. We retry such a file with the marker
restored and accept it only if its bottom rows carry picture data: a file cut in half decodes to a
flat grey lower part and is rejected as truncated.

iPhone photos come as HEIC: pillow-heif registers it with Pillow here, so every stage that decodes
through this module (ingest, EXIF GPS, embedding, predict) reads HEIC/HEIF like a JPEG.
"""

from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps

from geoloc_core.config import server_config

pillow_heif.register_heif_opener()

_JPEG_EOI = b"\xff\xd9"
_BAND_PIXELS = 1 << 20  # a deep (16/32-bit) image is brought to 8 bits this many pixels at a time


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; the message says why, for the user."""


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode image bytes to an upright RGB image.

    Args:
        data: the file's bytes.
        min_side: if given, JPEGs are decoded at the smallest DCT scale (1/2 .. 1/8) whose shorter
            side is still >= min_side, a large saving for big photos headed for a 224 px model.
    """
    try:
        image = _open_and_load(data, min_side)
    except ImageDecodeError as exc:
        if "truncated" not in str(exc) or data.endswith(_JPEG_EOI):
            raise
        image = _open_and_load(data + _JPEG_EOI, min_side)
        if _bottom_rows_flat(image):
            raise ImageDecodeError("truncated image (the lower part of the picture is missing)") from exc
    ImageOps.exif_transpose(image, in_place=True)  # no copy of a large image
    return _to_rgb(image)


def _open_and_load(data: bytes, min_side: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            limit = server_config().max_pixels
            if image.width * image.height > limit:
                raise ImageDecodeError(f"image too large ({image.width} x {image.height} = "
                                       f"{image.width * image.height / 1e6:.0f} megapixels declared; the limit is "
                                       f"{limit / 1e6:g}, server setting max_pixels)")
            if min_side:
                image.draft("RGB", (min_side, min_side))
            image.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        if data[4:8] == b"ftyp":  # an ISO media file (HEIC, AVIF, MP4) that Pillow's HEIF opener turned down
            raise ImageDecodeError(f"corrupt or unsupported HEIF/ISO media file ({_heif_error(data)})") from exc
        raise ImageDecodeError("not an image (no known image format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt image ({exc})") from exc
    return image


def _heif_error(data: bytes) -> str:
    """libheif's own reason, which Pillow's UnidentifiedImageError hides."""
    try:
        pillow_heif.open_heif(io.BytesIO(data)).to_pillow()
    except (ValueError, RuntimeError) as exc:
        return str(exc).strip()
    return "not a still image"


def _bottom_rows_flat(image: Image.Image) -> bool:
    rows = np.asarray(image.convert("L"))[-max(2, image.height // 32):]
    return bool(rows.std() == 0)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (CMYK, 16-bit, palette, alpha) -> 8-bit RGB; transparency is flattened onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return _to_8bit(image).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16/32-bit greyscale image as 8-bit "L", scaled by its brightest pixel, a band of rows at a time: a whole-image
    float copy would take 8 bytes per pixel more (an all-zero 13,000 px square PNG is 350 kB on disk)."""
    hi = image.getextrema()[1] or 1
    out = Image.new("L", image.size)
    rows = max(1, _BAND_PIXELS // image.width)
    for top in range(0, image.height, rows):
        band = np.asarray(image.crop((0, top, image.width, min(top + rows, image.height))), dtype=np.float32)
        out.paste(Image.fromarray((band * (255 / hi)).astype(np.uint8)), (0, top))
    return out


def upright(path: str, side: int) -> Image.Image | None:
    """A photo upright and in RGB, at most `side` px, which a browser shows whatever the file's format (HEIC included);
    None if it cannot be read (e.g. a database photo moved away since the run)."""
    try:
        image = decode_image(Path(path).read_bytes(), min_side=side)
    except (OSError, ImageDecodeError):
        return None
    image.thumbnail((side, side))
    return image


def thumbnail_uri(path: str, side: int = 96) -> str:
    """A small JPEG of a photo as a data URI, for tooltips and tables ("" if it cannot be read)."""
    image = upright(path, side)
    if image is None:
        return ""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
