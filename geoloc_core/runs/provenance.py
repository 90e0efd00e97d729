"""Where every derived artefact came from: one record per artefact, in one format, written here, checked on every read.

A record is a small JSON file beside its artefact (`runs.folders` names it, and says what each artefact is computed
from). It holds

- `inputs`: {label: digest} of exactly what the artefact was computed from: the provenance digest of each upstream
  artefact ("photos.csv", "split.json", "embeddings.npy", "graph_dt.npy" ...), a config section's settings
  ("settings: regions"), an outside file's content ("encoder checkpoint");
- `content`: the digest of the artefact's own files, with their size and mtime as a fast path (a file whose stamp
  still matches is not read again; one whose stamp moved is hashed, and its stamp refreshed if the content is the same);
- `digest`: of the inputs and the content together, which is what a downstream artefact records as this one.

The writer of an artefact calls `record` after the artefact is whole. A reader calls `check` with the inputs as they
are today; a record that is missing, belongs to other files or lists other inputs raises `Stale`, whose message names
what changed. A caller that can rebuild catches it and rebuilds (`locate.store.open_predictor`, the test-time
augmentations' passes, a fine-tuning folder inside `geoloc experiment`); every other caller lets it refuse the read.
Nothing stale is used.

Tables (`geoloc compare`, `levers`, `experiment`, coverage) use the same two calls: `record(table_record(path), [path],
inputs)` after writing the table, and `check("table.csv", table_record(path), [path], inputs)` before showing it, with
`inputs` from `runs.folders.Run.base_inputs` plus the table's own settings (`settings`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from geoloc_core.base import storage

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the meaning of a record changes: every artefact then reads as stale and is rebuilt or refused
DIGITS = 16

Inputs = Mapping[str, "str | Callable[[], str]"]  # label -> digest, or a function that computes it (only if needed)


class Stale(ValueError):
    """An artefact that can no longer be traced to today's inputs: `changed` names what differs (empty: no record)."""

    def __init__(self, name: str, changed: list[str], hint: str = ""):
        self.artefact, self.changed, self.hint = name, changed, hint
        if not changed:
            why = f"{name} has no provenance record (made by an older version, or its writer stopped before the end)"
        elif changed == ["its own files"]:
            why = f"{name} was changed after it was recorded (by hand, or its writer stopped halfway)"
        else:
            why = f"{name} was made from other inputs ({', '.join(f'{c} changed' for c in changed)})"
        super().__init__(why + (f"; {hint}" if hint else ""))

    def __reduce__(self):  # picklable (a job's error crossing processes)
        return Stale, (self.artefact, self.changed, self.hint)


def settings(value: Any) -> str:
    """The digest of a config section or any JSON-able value (key order ignored)."""
    text = json.dumps(storage.to_jsonable(value), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:DIGITS]


def outside_file(path: str | Path) -> str:
    """The content digest of a file no record covers (an encoder checkpoint), remembered per size and mtime."""
    return _content(str(Path(path).resolve()), _stamp(Path(path)))


@lru_cache(maxsize=256)
def _content(path: str, stamp: str) -> str:
    return storage.file_digest(Path(path), DIGITS) if stamp != "-" else "missing"


def _stamp(path: Path) -> str:
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return "-"
    return f"{st.st_size}:{st.st_mtime_ns}"


def record(path: Path, files: list[Path], inputs: Inputs) -> str:
    """Write the record `path` of an artefact made of `files` (those that exist), computed from `inputs`, once the
    artefact is whole; returns its digest."""
    values = _resolve(inputs)
    existing = [Path(f) for f in files if Path(f).exists()]
    content = {f.name: _content(str(f.resolve()), _stamp(f)) for f in existing}
    digest = settings({"format": FORMAT, "inputs": values, "content": content})
    storage.write_json(path, {"format": FORMAT, "inputs": values, "content": content,
                              "stamps": {f.name: _stamp(f) for f in existing}, "digest": digest})
    return digest


def read(path: Path) -> dict[str, Any] | None:
    """A record as written, or None where there is none (or it is torn, or of another format)."""
    try:
        saved = storage.read_json(path)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return saved if isinstance(saved, dict) and saved.get("format") == FORMAT else None


def verified(name: str, path: Path, files: list[Path]) -> dict[str, Any]:
    """The record `path` once the artefact's `files` are still what it recorded (stamps first, contents where a stamp
    moved); `Stale` where there is none or they differ."""
    saved = read(path)
    if saved is None:
        raise Stale(name, [])
    existing = {Path(f).name: Path(f) for f in files if Path(f).exists()}
    gone = [Path(f) for f in files if Path(f).name in saved["content"] and Path(f).name not in existing]
    if gone:  # deleted, not changed: the stage that writes it is the next step (`Run.missing` says which)
        raise FileNotFoundError(errno.ENOENT, f"{gone[0].name} is missing", str(gone[0]))
    if set(existing) != set(saved["content"]):
        raise Stale(name, ["its own files"])
    moved = {n: _stamp(f) for n, f in existing.items() if _stamp(f) != saved["stamps"].get(n)}
    # touched, not changed: the content decides (hashed once per process and stamp); a read never writes the record,
    # so a viewer's page or a read-only run stays as it was
    if any(_content(str(existing[n].resolve()), s) != saved["content"][n] for n, s in moved.items()):
        raise Stale(name, ["its own files"])
    return saved


def digest(name: str, path: Path, files: list[Path]) -> str:
    """The provenance digest of an artefact whose files are what its record says (what a downstream record lists)."""
    return verified(name, path, files)["digest"]


def check(name: str, path: Path, files: list[Path], inputs: Inputs, hint: str = "") -> str:
    """An artefact read against today's `inputs`: its digest, or `Stale` naming each input that changed (and `hint`,
    what to run to rebuild it)."""
    saved = verified(name, path, files)
    recorded: dict[str, str] = saved["inputs"]
    changed = sorted(k for k in recorded.keys() ^ inputs.keys())
    for label, value in inputs.items():
        if label in recorded and recorded[label] != (value() if callable(value) else value):
            changed.append(label)
    if changed:
        raise Stale(name, changed, hint)
    return saved["digest"]


def is_current(name: str, path: Path, files: list[Path], inputs: Inputs) -> bool:
    """Whether `check` passes (for listing only what may be used, as the Predict page's region heads)."""
    try:
        check(name, path, files, inputs)
    except (Stale, FileNotFoundError):  # changed, or gone
        return False
    return True


def _resolve(inputs: Inputs) -> dict[str, str]:
    return {k: (v() if callable(v) else v) for k, v in sorted(inputs.items())}
