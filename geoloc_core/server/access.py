"""Who may do what on a shared server: the server's settings, the folders photos may come from, and read-only viewers.

One server, one `ServerConfig`, read once (`server_config()`): each field from `GEOLOC_<FIELD>`, else from the TOML
file `GEOLOC_CONFIG` (default `.streamlit/geoloc.toml` beside the app), else its default (`config.py`):

    # .streamlit/geoloc.toml
    data_roots = ["/srv/photos", "/home/shared/survey-2024"]
    mode = "editor"          # or "viewer"
    max_jobs = 2             # 0: one per two cores
    state_dir = "/var/lib/geoloc/queue"

A path a user types (the Data page's "Folder or manifest") is resolved with `resolve_source`: `..` is refused
outright, a relative path is looked up under each root, and the resolved path (every symlink followed) must lie
under a resolved root. The job the app starts checks the same roots again (`check_source`, in `pipeline.run_ingest`),
and ingest rejects any photo whose resolved path leaves the folder it was given.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

from geoloc_core.config import DEFAULT_DATA, ServerConfig, load_server_config, server_config

# `server_config` and `load_server_config` live in config.py, so every floor (images, ingest, boundaries) reads its
# limits
# there; they are named here too, for the server's callers.
_REEXPORTED = (load_server_config, server_config)


class Refused(ValueError):
    """A path outside the data roots, or an action this server does not allow; the message says why, for the user."""


def is_viewer(cfg: ServerConfig | None = None) -> bool:
    """Whether the server runs in viewer mode: the app shows work but starts, stops and deletes none."""
    return (cfg or server_config()).mode == "viewer"


def max_jobs(cfg: ServerConfig | None = None) -> int:
    """Jobs that run at once: the setting, or one per two cores."""
    cfg = cfg or server_config()
    return cfg.max_jobs if cfg.max_jobs > 0 else max(1, (os.cpu_count() or 2) // 2)


def runs_dir(cfg: ServerConfig | None = None) -> Path:
    """The folder the app lists runs from and builds new ones in."""
    return Path((cfg or server_config()).runs)


def state_dir(cfg: ServerConfig | None = None) -> Path:
    """The job queue's folder: the setting, else `.queue` in the runs folder."""
    cfg = cfg or server_config()
    return Path(cfg.state_dir) if cfg.state_dir else runs_dir(cfg) / ".queue"


def data_roots(cfg: ServerConfig | None = None) -> list[Path]:
    """The folders photos may come from, resolved: the configured ones, else ../shared/data (never a home folder: a
    visitor would list and browse every file in it)."""
    cfg = cfg or server_config()
    roots = cfg.data_roots if cfg.data_roots is not None else (str(DEFAULT_DATA.parent),)
    return [Path(r).expanduser().resolve() for r in roots]


def resolve_source(text: str | Path, roots: list[Path], base: Path | None = None) -> Path:
    """The resolved path a user gave, if it lies under one of `roots`; raises `Refused` saying why otherwise.

    Args:
        text: what the user typed: an absolute path, or one relative to `base` (the command line's working folder)
            or, without `base`, to each root in turn (the app: `croatia-streetview` is found under ../shared/data).
        roots: resolved folders (`data_roots()`).
    """
    text = str(text).strip()
    if not text:
        raise Refused("no folder or manifest given")
    given = Path(text)
    if ".." in given.parts:
        raise Refused(f"{text}: '..' is not allowed in a path; give the folder itself (photos may come from: "
                      f"{_listed(roots)})")
    if given.is_absolute() or base is not None:
        candidates = [Path(os.path.abspath(Path(base or "/") / given))]
    elif not roots:  # nothing to look a relative path up under
        raise Refused(f"{text}: this server takes photos from no folder (no data roots are configured)")
    else:
        candidates = [root / given for root in roots]
        candidates = [c for c in candidates if c.exists()] or candidates[:1]
    lexical = candidates[0]
    resolved = lexical.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        if any(lexical.is_relative_to(root) for root in roots):
            raise Refused(f"{text}: a symbolic link on this path leads out of the data roots (to {resolved}); "
                          f"photos may come from: {_listed(roots)}")
        raise Refused(f"{text}: outside the data roots; photos may come from: {_listed(roots)}")
    if not resolved.exists():
        raise Refused(f"{text}: no such folder or file under the data roots")
    return resolved


def check_source(path: str | Path | None, cfg: ServerConfig | None = None) -> Path | None:
    """What a job may read: `path` itself where no data roots are configured (a shell user's own machine), else the
    resolved path under a root (relative paths are read from the working folder); raises `Refused` otherwise."""
    cfg = cfg or server_config()
    if path is None or cfg.data_roots is None:
        return None if path is None else Path(path)
    return resolve_source(path, data_roots(cfg), base=Path.cwd())


JOB_INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
                 "CUDA_VISIBLE_DEVICES",
                 "OMP_NUM_THREADS", "HF_HOME", "HF_HUB_OFFLINE", "TORCH_HOME", "XDG_CACHE_HOME", "HOME",
                 "GEOLOC_MODEL_DIR", "GEOLOC_CACHE_DIR", "GEOLOC_TILES")  # what a job needs of the server's own


def job_environment(cfg: ServerConfig | None = None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """A job's whole environment: the few variables of the server's it needs to run (`JOB_INHERITED`), and the settings
    it must see as the app does (absolute paths: a job runs in another folder). Nothing else of the server's: its
    secrets stay out of a job, whose log and errors a visitor may read."""
    cfg = cfg or server_config()
    environ = os.environ if environ is None else environ
    settings = {f"GEOLOC_{f.name.upper()}": str(getattr(cfg, f.name)) for f in fields(ServerConfig)
                if f.name.startswith("max_") and f.name != "max_jobs"}
    return {**{k: environ[k] for k in JOB_INHERITED if k in environ}, **settings,
            "GEOLOC_CONFIG": os.devnull,  # every setting is in the environment: the job reads no file of the server's
            "GEOLOC_DATA_ROOTS": os.pathsep.join(map(str, data_roots(cfg))), "GEOLOC_MODE": cfg.mode,
            "GEOLOC_MAX_JOBS": str(max_jobs(cfg)), "GEOLOC_STATE_DIR": str(state_dir(cfg).resolve()),
            "GEOLOC_RUNS": str(runs_dir(cfg).resolve())}


def _listed(roots: list[Path]) -> str:
    return ", ".join(map(str, roots)) or "nowhere (no data roots are configured)"
