import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from geoloc_core.base import storage
from geoloc_core.config import GraphConfig, PipelineConfig


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.npy"
    storage.write_npy(target, np.arange(3))

    def explode(f):
        f.write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        storage.atomic_write(target, explode)
    assert storage.read_npy(target).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_a_write_killed_with_sigkill_leaves_a_temp_that_the_next_write_removes(tmp_path):
    target = tmp_path / "a.npy"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from geoloc_core.base import storage\n"
        "def hang(f):\n    f.write(b'partial'); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        f"storage.atomic_write(__import__('pathlib').Path({str(target)!r}), hang)")], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    [orphan] = [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    alive = tmp_path / f".a.npy.{orphan.name.split('.')[3].split('-')[0]}-{os.getpid()}.x.tmp"  # a live writer's file
    other = tmp_path / ".b.npy.0-1.x.tmp"  # another artefact's
    alive.write_bytes(b""), other.write_bytes(b"")
    assert storage.stale_temps(target) == [orphan]
    storage.write_npy(target, np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, "a.npy"])


def test_jsonl_reader_skips_a_torn_last_line(tmp_path):
    storage.append_jsonl(tmp_path / "m.jsonl", {"stage": "x", "value": np.float32(0.5)})
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"stage": "y", "val')
    records = storage.read_jsonl(tmp_path / "m.jsonl")
    assert len(records) == 1 and records[0]["value"] == 0.5 and "time" in records[0]


def test_pipeline_config_round_trips_through_json(tmp_path):
    cfg = PipelineConfig(graph=GraphConfig(kinds=("gg",), test_frac=0.3))
    storage.write_json(tmp_path / "config.json", cfg)
    assert PipelineConfig.from_dict(storage.read_json(tmp_path / "config.json")) == cfg


def test_large_arrays_are_memory_mapped_small_ones_loaded(tmp_path, monkeypatch):
    storage.write_npy(tmp_path / "a.npy", np.arange(1000, dtype=np.float32))
    assert not isinstance(storage.read_npy(tmp_path / "a.npy"), np.memmap)
    monkeypatch.setattr(storage, "MMAP_BYTES", 100)
    mapped = storage.read_npy(tmp_path / "a.npy")
    assert isinstance(mapped, np.memmap) and mapped[999] == 999 and not mapped.flags.writeable
