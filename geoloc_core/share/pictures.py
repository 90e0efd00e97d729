"""Pictures that explain a match: two photos with lines between their mutually nearest patches, or each patch
tinted by its best cosine against the other photo (PIL images, for the CLI's `geoloc explain` and the app)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from geoloc_core.share.colors import viridis


def _fit(image: Image.Image, side: int, vertical: bool) -> Image.Image:
    """`image` scaled to `side` px wide (stacked one above the other) or high (side by side)."""
    w, h = image.size
    size = (side, max(1, round(h * side / w))) if vertical else (max(1, round(w * side / h)), side)
    return image.convert("RGB").resize(size, Image.BILINEAR)


def _crop_box(size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred square the encoder sees, in pixels of an image of `size`."""
    w, h = size
    s = min(w, h)
    return (w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2


def match_figure(query: Image.Image, match: Image.Image, matches, side: int = 320, vertical: bool = False,
                 gap: int = 12) -> Image.Image:
    """Two photos side by side (or stacked) with a line between each pair of mutually nearest patches
    (`explain.Correspondences`), coloured by their cosine (yellow: strongest), over the squares the encoder saw."""
    from PIL import ImageDraw

    from geoloc_core.locate.explain import patch_centres

    a, b = _fit(query, side, vertical), _fit(match, side, vertical)
    if vertical:
        canvas = Image.new("RGB", (side, a.height + gap + b.height), (255, 255, 255))
        offset_b = (0, a.height + gap)
    else:
        canvas = Image.new("RGB", (a.width + gap + b.width, side), (255, 255, 255))
        offset_b = (a.width + gap, 0)
    canvas.paste(a, (0, 0))
    canvas.paste(b, offset_b)
    draw = ImageDraw.Draw(canvas, "RGBA")
    for img, (ox, oy) in ((a, (0, 0)), (b, offset_b)):
        x0, y0, x1, y1 = _crop_box(img.size)
        draw.rectangle((ox + x0, oy + y0, ox + x1 - 1, oy + y1 - 1), outline=(255, 255, 255, 160), width=1)
    pa = patch_centres(len(matches.query_heat), *a.size)[matches.query_patch] * a.size
    pb = patch_centres(len(matches.match_heat), *b.size)[matches.match_patch] * b.size + offset_b
    sim = matches.similarity
    spread = max(float(sim.max() - sim.min()), 1e-6) if len(sim) else 1.0
    colours = viridis((sim - sim.min()) / spread if len(sim) else sim)
    radius = max(2, side // 80)
    for (xa, ya), (xb, yb), c in reversed(list(zip(pa, pb, colours))):  # the strongest drawn last, on top
        rgba = (*map(int, c), 220)
        draw.line((xa, ya, xb, yb), fill=rgba, width=max(1, side // 200))
        for x, y in ((xa, ya), (xb, yb)):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=rgba, outline=(0, 0, 0, 200))
    return canvas


def match_heatmaps(query: Image.Image, match: Image.Image, matches, side: int = 320, gap: int = 12) -> Image.Image:
    """The two photos side by side, each patch of the encoder's square tinted by its best cosine
    against the other photo."""
    tiles = []
    for image, heat in ((query, matches.query_heat), (match, matches.match_heat)):
        img = _fit(image, side, vertical=False)
        g = int(round(len(heat) ** 0.5))
        x0, y0, x1, y1 = (round(v) for v in _crop_box(img.size))
        lo, hi = float(np.min(heat)), float(np.max(heat))
        rgb = viridis((np.asarray(heat, float) - lo) / max(hi - lo, 1e-6)).reshape(g, g, 3)
        overlay = Image.fromarray(rgb).resize((x1 - x0, y1 - y0), Image.NEAREST)
        region = img.crop((x0, y0, x1, y1))
        img.paste(Image.blend(region, overlay, 0.45), (x0, y0))
        tiles.append(img)
    canvas = Image.new("RGB", (tiles[0].width + gap + tiles[1].width, side), (255, 255, 255))
    canvas.paste(tiles[0], (0, 0))
    canvas.paste(tiles[1], (tiles[0].width + gap, 0))
    return canvas
