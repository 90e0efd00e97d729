"""Background jobs: a run or a fine-tuning run as its own process, started, resumed and stopped from the app.

A job is `python -m geoloc_core COMMAND ...` in a new process session, logging into its folder. The
job writes its own state (`Folder.write_status`); this module only starts it, marks it running at
once (so a page shows it before the child has even imported torch), and stops it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .cli import config_argv
from .config import FinetuneConfig
from .finetune import is_finished
from .runs import FinetuneRun, Folder, Run


def start(folder: Folder, argv: list[str]) -> int:
    """Start `geoloc argv` as its own process session, logging to the folder's log; returns its pid."""
    folder.root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(folder.log, "ab") as log:  # the child keeps its own handle
        proc = subprocess.Popen([sys.executable, "-m", "geoloc_core", *argv], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=Path(__file__).resolve().parents[1])
    status = folder.read_status()
    if status is None or status.get("time", 0) < started:  # unless the child already said something itself
        folder.write_status("running", pid=proc.pid)
    threading.Thread(target=proc.wait, name=f"reap {proc.pid}", daemon=True).start()  # no zombie that looks alive
    return proc.pid


def start_run(run: Run, source: str, gpx: str | None = None, time_offset: str | None = None) -> int:
    """Ingest, embed and cut regions for the photos at `source` into `run` (`geoloc run`), placing photos without GPS
    on the `gpx` track if one is given."""
    track = [f"--gpx={gpx}"] + ([f"--time-offset={time_offset}"] if time_offset else []) if gpx else []
    return start(run, ["run", "--run", str(run.root.resolve()), *track, "--", str(source)])


def start_finetune(run: Run, cfg: FinetuneConfig) -> FinetuneRun:
    """A new fine-tuning run over `cfg.graph` in a folder of its own (never an earlier run's)."""
    ft = run.new_finetune(cfg.graph)
    start(ft, ["finetune", "--run", str(run.root.resolve()), "--out", str(ft.root.resolve()), *config_argv(cfg)])
    return ft


def can_resume(ft: FinetuneRun) -> bool:
    """A fine-tuning run that stopped or failed before its last round (not one running, nor one that never said)."""
    return ft.last_checkpoint.exists() and ft.state() in ("stopped", "failed") and not is_finished(ft)


def resume_finetune(ft: FinetuneRun) -> int:
    if not can_resume(ft):
        raise ValueError(f"{ft.root} has nothing to resume (state: {ft.state()})")
    return start(ft, ["resume", str(ft.root.resolve())])


def stop(folder: Folder) -> str:
    """Stop the folder's running job, whoever started it; returns what happened, in words (never raises)."""
    status = folder.read_status()
    if status is None or folder.state() != "running":
        return f"{folder.root.name} is not running."
    pid = int(status["pid"])
    if not _is_geoloc(pid):
        return f"Process {pid} is no longer {folder.root.name}'s job; nothing was stopped."
    try:
        if os.getsid(pid) == pid:  # it leads its own session (started by the app): stop its workers with it
            os.killpg(pid, signal.SIGTERM)
        else:  # started from a shell, say: stop that process alone
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"{folder.root.name} had already ended."
    except PermissionError:
        return f"Process {pid} belongs to another user; stop it there."
    return f"Asked {folder.root.name} (process {pid}) to stop."


def _is_geoloc(pid: int) -> bool:
    """Whether `pid` still runs geoloc (a recycled pid of another program must not be signalled)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: trust the status file
        return True
    return b"geoloc_core" in cmdline or b"bin/geoloc\0" in cmdline
