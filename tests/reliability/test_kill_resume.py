"""kill -9 at random moments, then resume: nothing torn, nothing lost, and the finished run equals an
uninterrupted one with the same seed."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY
from geoloc_core.runs.folders import FinetuneRun, Folder

pytestmark = pytest.mark.slow  # minutes: real processes, kill loops, many sessions

KILLS = 10


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "geoloc_core", *args]


def assert_nothing_torn(folder: Path) -> int:
    """Every artefact under `folder` loads; returns how many were checked. Hidden *.tmp files are the
    remains of writes the kill interrupted: never under an artefact's name, and gone once it is written."""
    checked = 0
    for path in folder.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix in (".json", ".geojson"):
            json.loads(path.read_text())
        elif path.suffix == ".npy":
            np.load(path, mmap_mode="r")
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".jsonl":
            lines = path.read_text().splitlines()
            assert all(json.loads(line) for line in lines), path  # one write per record: no torn line
        checked += 1
    return checked


def reference_and_killed(args: list[str], out_flag: str, tmp_path: Path, env: dict, seed: int,
                         resume: list[str] | None = None) -> tuple[Path, Path, int, int]:
    """Run the command once undisturbed into tmp_path/reference; then into tmp_path/killed, SIGKILLed after a
    random delay (up to the undisturbed run's time), checked for torn files, restarted (with `resume + [folder]`
    once the folder holds a fine-tuning checkpoint), KILLS times; then to the end, with no temporary file left.
    Returns both folders, the kills that landed and the artefacts checked."""
    start = time.perf_counter()
    subprocess.run(_cmd(*args, out_flag, str(tmp_path / "reference")), env=env, check=True, capture_output=True,
                   timeout=600)
    typical, rng = time.perf_counter() - start, random.Random(seed)
    out = tmp_path / "killed"
    start_cmd, resume_cmd = _cmd(*args, out_flag, str(out)), _cmd(*resume, str(out)) if resume else None
    cmd = lambda: resume_cmd if resume_cmd and FinetuneRun(out).last_checkpoint.exists() else start_cmd  # noqa: E731
    kills, checked = 0, 0
    for _ in range(KILLS):
        proc = subprocess.Popen(cmd(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, typical))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        if out.exists():
            checked += assert_nothing_torn(out)
    subprocess.run(cmd(), env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    assert not list(out.rglob(".*.tmp"))  # what the kills left mid-write was swept when the artefact was written again
    return tmp_path / "reference", out, kills, checked


@pytest.fixture
def env(isolated_cache):
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def test_finetuning_survives_ten_kills_and_ends_as_an_uninterrupted_run(tiny_run, env, tmp_path):
    args = ["finetune", "--run", str(tiny_run), "--rounds", "2", "--epochs", "2", "--unfrozen-blocks", "1",
            "--batch-size", "8", "--device", "cpu"]
    reference, killed, kills, checked = reference_and_killed(args, "--out", tmp_path, env, seed=0,
                                                             resume=["resume", "--device", "cpu"])
    assert kills >= 3 and checked > 0
    ref, got = Folder(reference).read_metrics(), Folder(killed).read_metrics()
    key = lambda r: (r["kind"], r["round"], r.get("epoch"))  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, ref))  # every record once: nothing lost, nothing twice
    for a, b in zip(sorted(ref, key=key), sorted(got, key=key)):
        for metric in ("acc", "macro_f1", "n_regions", "loss"):
            if metric in a:
                assert b[metric] == pytest.approx(a[metric], abs=1e-6), (key(a), metric)
    for r in range(3):
        name = f"regions_r{r}.csv"
        assert pd.read_csv(killed / name).equals(pd.read_csv(reference / name))


def test_the_pipeline_survives_kills_at_every_stage(manifest_folder, tiny_checkpoint, env, tmp_path):
    args = ["run", str(manifest_folder), "--model", TINY.name, "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
            "--test-frac", "0.25"]
    reference, out, kills, _ = reference_and_killed(args, "--run", tmp_path, env, seed=1)
    assert kills >= 3
    for name in ("photos.csv", "regions_dt.csv", "regions_gg.csv", "regions_rng.csv"):
        assert pd.read_csv(out / name).equals(pd.read_csv(reference / name)), name
    assert np.allclose(np.load(out / "embeddings.npy"), np.load(reference / "embeddings.npy"))
