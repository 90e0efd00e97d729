import io

import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes, textured
from geoloc_core.base.images import ImageDecodeError, decode_image
from geoloc_core.config import ServerConfig


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt", [("CMYK", "JPEG"), ("I;16", "PNG"), ("P", "PNG"), ("RGBA", "WEBP"), ("LA", "PNG"),
                                      ("RGB", "TIFF"), ("RGB", "BMP"), ("P", "GIF"), ("L", "JPEG")])
def test_every_mode_and_format_decodes_to_rgb(mode, fmt):
    base = Image.fromarray(textured(1).astype(np.uint8))
    image = base.convert("I;16") if mode == "I;16" else base.convert(mode)
    out = decode_image(encode(image, fmt))
    assert out.mode == "RGB" and out.size == base.size


@pytest.mark.parametrize("orientation,size", [(1, (48, 40)), (3, (48, 40)), (6, (40, 48)), (8, (40, 48))])
def test_exif_orientation_is_applied(orientation, size):
    assert decode_image(jpeg_bytes(textured(2), orientation=orientation)).size == size


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert decode_image(encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_decompression_bomb_is_refused_by_name(monkeypatch):
    import geoloc_core.base.images as images

    monkeypatch.setattr(images, "server_config", lambda: ServerConfig(max_pixels=5000))
    with pytest.raises(ImageDecodeError, match=r"image too large \(100 x 100 = 0 megapixels declared"):
        decode_image(jpeg_bytes((1, 2, 3), size=(100, 100)))
    assert decode_image(jpeg_bytes((1, 2, 3), size=(70, 70))).size == (70, 70)


def test_large_jpeg_is_decoded_at_a_reduced_scale():
    big = jpeg_bytes((10, 200, 30), size=(2000, 1600))
    assert decode_image(big, min_side=224).size == (500, 400)  # 1/4 scale: 1/8 would leave 200 < 224
