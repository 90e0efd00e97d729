import json

import numpy as np
import pandas as pd
import pytest

from conftest import DINOV2_WEIGHTS, TINY, shared
from geoloc_core import runs
from geoloc_core.cli import main
from geoloc_core.config import PipelineConfig


def tiny_args(tiny_checkpoint):
    return ["--model", TINY.name, "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]


def test_run_writes_every_artefact_and_a_consistent_config(manifest_folder, tiny_checkpoint, isolated_cache, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", str(manifest_folder), "--run", str(run), "--test-frac", "0.25", *tiny_args(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "modularity" in out and all(f"\n{k:>5}" in out or f" {k} " in out or k in out for k in ("dt", "gg", "rng"))
    for name in ("photos.csv", "rejected.csv", "embeddings.npy", "split.json", "sites.csv", "metrics.jsonl"):
        assert (run / name).exists(), name
    photos = pd.read_csv(run / "photos.csv")
    assert len(photos) == 40 and runs.read_npy(run / "embeddings.npy").shape == (40, 16)
    is_test = np.array(runs.read_json(run / "split.json")["is_test"])
    assert set(photos["location_id"][is_test]).isdisjoint(photos["location_id"][~is_test])
    for kind in ("dt", "gg", "rng"):
        edges = runs.read_npy(run / f"graph_{kind}.npy")
        regions = pd.read_csv(run / f"regions_{kind}.csv")
        assert edges.shape[1] == 2 and len(regions) == 40
        assert sorted(regions["region"].unique()) == list(range(regions["region"].max() + 1))
        geo = json.loads((run / f"regions_{kind}.geojson").read_text())
        assert len(geo["features"]) == regions["region"].nunique()
    records = runs.read_metrics(run)
    evals = [r for r in records if r["stage"] == "evaluate"]
    assert [r["graph"] for r in evals] == ["dt", "gg", "rng"]
    assert all(0 <= r["acc"] <= 1 and 0 < r["majority_acc"] <= 1 and r["median_km"] >= 0 and r["n_test"] == 10 for r in evals)
    cfg = PipelineConfig.from_dict(runs.read_json(run / "config.json"))
    assert cfg.embed.model == TINY.name and cfg.graph.test_frac == 0.25


def test_stage_commands_chain_through_the_run_directory(manifest_folder, tiny_checkpoint, isolated_cache, tmp_path):
    run = tmp_path / "run"
    assert main(["ingest", str(manifest_folder), "--run", str(run)]) == 0
    assert main(["embed", "--run", str(run), *tiny_args(tiny_checkpoint)]) == 0
    assert main(["graph", "--run", str(run), "--graphs", "gg"]) == 0
    assert main(["regions", "--run", str(run), "--graphs", "gg", "--resolution", "2.0"]) == 0
    assert main(["evaluate", "--run", str(run), "--graphs", "gg"]) == 0
    assert not (run / "graph_dt.npy").exists()
    stages = [r["stage"] for r in runs.read_metrics(run)]
    assert stages == ["ingest", "embed", "graph", "regions", "evaluate"]
    assert runs.read_json(run / "config.json")["regions"]["resolution"] == 2.0


def test_errors_exit_with_code_2_and_a_message(tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ingest", str(empty), "--run", str(tmp_path / "run")]) == 2
    assert "no photos found" in caplog.text
    assert main(["embed", "--run", str(tmp_path / "nothing-here")]) == 2


def test_main_job_on_real_photos_with_real_dinov2(tmp_path, isolated_cache, capsys):
    """The README's main job on 40 croatia-streetview locations (160 photos) with the installed weights."""
    assert DINOV2_WEIGHTS.is_file(), "run scripts/setup.sh first"
    root = shared("croatia-streetview")
    manifest = pd.read_csv(root / "manifest.csv")
    keep = manifest["location_id"].drop_duplicates().sample(40, random_state=0)
    manifest[manifest["location_id"].isin(keep)].to_csv(tmp_path / "subset.csv", index=False)
    run = tmp_path / "run"
    assert main(["run", str(root), "--manifest", str(tmp_path / "subset.csv"), "--run", str(run)]) == 0
    evals = {r["graph"]: r for r in runs.read_metrics(run) if r["stage"] == "evaluate"}
    assert set(evals) == {"dt", "gg", "rng"}
    for r in evals.values():
        assert r["n_test"] == 32 and r["n_regions"] >= 2
        assert r["median_km"] < 400  # Croatia spans ~450 km; a working pipeline stays well inside it
    assert "w/o (pretrained features" in capsys.readouterr().out
