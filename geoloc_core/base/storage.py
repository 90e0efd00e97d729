"""Files written atomically and read back safely: the I/O every artefact goes through.

Each file is written to a temporary sibling, fsynced and renamed over the target, so a reader (the
app, a resumed run, a second process) sees the old file or the new one, never a torn one. JSON-lines
files are appended one whole line per write. Nothing here knows a run's file names: `runs.py` does.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]  # temp files are named after their host and process
MMAP_BYTES = 256 * 2**20  # arrays larger than this are memory-mapped (read-only) rather than loaded


def _umask() -> int:
    """The process's umask, read without changing it (Linux's /proc), else set and restored once at import."""
    try:
        return int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                        if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


FILE_MODE = 0o666 & ~_umask()  # artefacts (GPS positions, job records, logs) as the umask says, never wider


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None], mode: int | None = None) -> Path:
    """Write `path` via a temporary file in the same folder, fsync it, then rename it into place; `mode`: the file's
    permissions where the umask's are too wide (a secret: 0o600), set before a byte is written.

    The temporary file is named after its writer (host and process). A writer killed mid-write
    (SIGKILL, power loss) leaves its file behind; the next write of the same artefact removes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temps(path):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE if mode is None else mode)  # mkstemp makes 0600: the umask decides who else may read
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def stale_temps(path: Path) -> list[Path]:
    """Temporary files of earlier writes of `path` whose writer, a process on this host, has died."""
    prefix = f".{path.name}.{_HOST}-"
    return [tmp for tmp in Path(path).parent.glob(f"{glob.escape(prefix)}*.tmp")
            if (pid := tmp.name[len(prefix):].partition(".")[0]).isdigit() and not pid_alive(int(pid))]


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (someone else's counts; a zombie, dead but not yet reaped, does
    not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc: trust kill(0)
        return True


def write_bytes(path: Path, data: bytes, mode: int | None = None) -> Path:
    """Write `data` to `path` atomically (`atomic_write`, with its `mode`); returns `path`."""
    return atomic_write(path, lambda f: f.write(data), mode)


def write_json(path: Path, obj: Any) -> Path:
    """Write `obj` as indented, key-sorted JSON (`to_jsonable` first: dataclasses, paths, numpy scalars), atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True)
    return write_bytes(path, (text + "\n").encode())


def read_json(path: Path) -> Any:
    """The JSON value stored at `path`."""
    return json.loads(Path(path).read_text())


def write_npy(path: Path, array: np.ndarray) -> Path:
    """Save `array` as .npy (C-contiguous, no pickled objects), atomically; `read_npy` reads it back."""
    return atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def read_npy(path: Path, mmap: bool | None = None) -> np.ndarray:
    """An array saved by write_npy; memory-mapped when `mmap` says so or, by default, past MMAP_BYTES."""
    if mmap is None:
        mmap = Path(path).stat().st_size > MMAP_BYTES
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def write_csv(path: Path, frame: pd.DataFrame, spreadsheet: bool = False) -> Path:
    """A table as CSV; `spreadsheet`: an export an analyst opens in Excel, its formula-like text cells guarded."""
    return write_bytes(path, (spreadsheet_safe(frame) if spreadsheet else frame).to_csv(index=False).encode())


_FORMULA = re.compile(r"^[=+\-@\t\r]")  # what Excel and LibreOffice read as the start of a formula (or DDE)
_GUARDED = re.compile(r"^'(?=[=+\-@\t\r])")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell that a spreadsheet would run as a formula (a file or place name `=HYPERLINK(...)`,
    `@SUM(...)`, `-2+3`) behind an apostrophe, which spreadsheets show as text; numbers are left alone."""
    out = frame.copy()
    for column in out.select_dtypes(include=["object", "string"]).columns:
        out[column] = out[column].map(lambda v: "'" + v if isinstance(v, str) and _FORMULA.match(v) else v)
    return out


def unguarded(frame: pd.DataFrame) -> pd.DataFrame:
    """The inverse of `spreadsheet_safe`, for geoloc reading back an export it wrote."""
    out = frame.copy()
    for column in out.select_dtypes(include=["object", "string"]).columns:
        out[column] = out[column].map(lambda v: _GUARDED.sub("", v) if isinstance(v, str) else v)
    return out


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record (stamped with the time) in a single write, so concurrent readers see whole lines."""
    line = json.dumps({"time": time.time(), **to_jsonable(record)}, sort_keys=True) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask applies
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records of a JSON-lines file (none if it is missing); a torn last line
    (a killed writer) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def file_digest(path: Path, n: int = 12) -> str:
    """The first `n` hex digits of the file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars -> plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj
