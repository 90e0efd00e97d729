import argparse
import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import DINOV2_WEIGHTS, TINY, shared
from geoloc_core.base import storage
from geoloc_core.cli import main
from geoloc_core.cli.flags import add_settings, settings
from geoloc_core.config import (
    EmbedConfig,
    FinetuneConfig,
    GraphConfig,
    LocatorConfig,
    PipelineConfig,
    PredictorConfig,
    RegionConfig,
    config_argv,
)
from geoloc_core.locate.store import predictor_store
from geoloc_core.runs.folders import Folder, Run


def tiny_args(tiny_checkpoint):
    return ["--model", TINY.name, "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]


def test_run_writes_every_artefact_and_a_consistent_config(manifest_folder, tiny_checkpoint, isolated_cache, tmp_path,
                                                           capsys):
    run = tmp_path / "run"
    assert main(["run", str(manifest_folder), "--run", str(run), "--test-frac", "0.25",
                 *tiny_args(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "modularity" in out and all(f"\n{k:>5} " in out for k in ("dt", "gg", "rng"))  # one table row per graph
    for name in ("photos.csv", "rejected.csv", "embeddings.npy", "split.json", "sites.csv", "metrics.jsonl"):
        assert (run / name).exists(), name
    photos = pd.read_csv(run / "photos.csv")
    assert len(photos) == 40 and storage.read_npy(run / "embeddings.npy").shape == (40, 16)
    is_test = np.array(storage.read_json(run / "split.json")["is_test"])
    assert set(photos["location_id"][is_test]).isdisjoint(photos["location_id"][~is_test])
    for kind in ("dt", "gg", "rng"):
        edges = storage.read_npy(run / f"graph_{kind}.npy")
        regions = pd.read_csv(run / f"regions_{kind}.csv")
        assert edges.shape[1] == 2 and len(regions) == 40
        assert sorted(regions["region"].unique()) == list(range(regions["region"].max() + 1))
        geo = json.loads((run / f"regions_{kind}.geojson").read_text())
        assert len(geo["features"]) == regions["region"].nunique()
    records = Folder(run).read_metrics()
    evals = [r for r in records if r["stage"] == "evaluate"]
    assert [r["graph"] for r in evals] == ["dt", "gg", "rng"]
    assert all(0 <= r["acc"] <= 1 and 0 < r["majority_acc"] <= 1 and r["median_km"] >= 0 and r["n_test"] == 10
               for r in evals)
    cfg = PipelineConfig.from_dict(storage.read_json(run / "config.json"))
    assert cfg.embed.model == TINY.name and cfg.graph.test_frac == 0.25


def test_a_run_without_dt_is_done_and_builds_the_apps_predictor_over_the_graph_it_has(manifest_folder, tiny_checkpoint,
                                                                                    isolated_cache, tmp_path):
    """`geoloc run --graphs gg`: the Predict page's default predictor is labelled by GG's regions (before: DT's, which
    a run without DT lacks, so the finished run was marked failed at its last step)."""
    run = tmp_path / "run"
    assert main(["run", str(manifest_folder), "--run", str(run), "--graphs", "gg", *tiny_args(tiny_checkpoint)]) == 0
    assert Run(run).state() == "done" and Run(run).labelled_graph() == "gg"
    assert predictor_store(run, PredictorConfig(), "train", "gg").record.exists()


def test_stage_commands_chain_through_the_run_directory(manifest_folder, tiny_checkpoint, isolated_cache, tmp_path):
    run = tmp_path / "run"
    assert main(["ingest", str(manifest_folder), "--run", str(run)]) == 0
    assert main(["embed", "--run", str(run), *tiny_args(tiny_checkpoint)]) == 0
    assert main(["graph", "--run", str(run), "--graphs", "gg"]) == 0
    assert main(["regions", "--run", str(run), "--graphs", "gg", "--resolution", "2.0"]) == 0
    assert main(["evaluate", "--run", str(run), "--graphs", "gg"]) == 0
    assert not (run / "graph_dt.npy").exists()
    stages = [r["stage"] for r in Folder(run).read_metrics()]
    assert stages == ["ingest", "embed", "graph", "regions", "evaluate"]
    assert storage.read_json(run / "config.json")["regions"]["resolution"] == 2.0


def test_show_prints_a_runs_figures_and_changes_nothing(tiny_run, tmp_path, capsys):
    """scripts/main.sh shows a built run's figures; re-evaluating there refitted probes and
    appended records each launch."""
    before = {p.name: p.read_bytes() for p in tiny_run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["show", "--run", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{k:>5} " in out for k in ("dt", "gg", "rng")) and "acc" in out and "modularity" in out
    assert {p.name: p.read_bytes() for p in tiny_run.iterdir() if p.is_file()} == before


def test_show_and_evaluate_default_to_the_graphs_the_run_has(manifest_folder, tiny_checkpoint, isolated_cache, tmp_path,
                                                             capsys):
    run = tmp_path / "run"
    assert main(["run", str(manifest_folder), "--run", str(run), "--graphs", "dt", *tiny_args(tiny_checkpoint)]) == 0
    assert main(["evaluate", "--run", str(run)]) == 0
    assert main(["regions", "--run", str(run)]) == 0
    capsys.readouterr()
    assert main(["show", "--run", str(run)]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["dt"]


@pytest.mark.parametrize("command", ["regions", "evaluate"])
def test_stage_commands_have_only_the_flags_of_their_stages(tiny_run, command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--run", str(tiny_run), "--test-frac", "0.5"])  # a split setting cannot act on a cut or a probe
    assert "unrecognized arguments: --test-frac" in capsys.readouterr().err


def test_a_new_split_leaves_no_graph_of_the_old_one(tiny_run):
    """Graphs and regions of kinds not rebuilt stayed, over sites the new split holds out, and looked current."""
    assert Run(tiny_run).graphs() == ["dt", "gg", "rng"]
    assert main(["graph", "--run", str(tiny_run), "--graphs", "dt", "--test-frac", "0.4", "--split-seed", "3"]) == 0
    assert Run(tiny_run).graphs() == ["dt"] and not Run(tiny_run).regions("gg").exists()
    assert not Run(tiny_run).held_out("dt").exists()  # the probe's answers for the old split's held-out photos: gone
    assert main(["regions", "--run", str(tiny_run)]) == 0 and not Run(tiny_run).held_out("dt").exists()
    assert main(["evaluate", "--run", str(tiny_run)]) == 0
    answers = pd.read_csv(Run(tiny_run).held_out("dt"))
    # the new split's held-out photos
    assert sorted(answers["photo"]) == np.flatnonzero(Run(tiny_run).read_split()[1]).tolist()


def test_errors_exit_with_code_2_and_a_message(tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ingest", str(empty), "--run", str(tmp_path / "run")]) == 2
    assert "no photos found" in caplog.text
    assert main(["embed", "--run", str(tmp_path / "nothing-here")]) == 2


@pytest.mark.slow  # real DINOv2 on 160 photos
def test_main_job_on_real_photos_with_real_dinov2(tmp_path, isolated_cache, capsys):
    """The README's main job on 40 croatia-streetview locations (160 photos) with the installed weights."""
    assert DINOV2_WEIGHTS.is_file(), "run scripts/setup.sh first"
    root = shared("croatia-streetview")
    manifest = pd.read_csv(root / "manifest.csv")
    keep = manifest["location_id"].drop_duplicates().sample(40, random_state=0)
    subset = manifest[manifest["location_id"].isin(keep)]
    # absolute:
    subset.assign(path=[str(root / p) for p in subset["path"]]).to_csv(tmp_path / "subset.csv", index=False)
    # a manifest's relative rows are read from its own folder
    run = tmp_path / "run"
    assert main(["run", str(root), "--manifest", str(tmp_path / "subset.csv"), "--run", str(run)]) == 0
    evals = {r["graph"]: r for r in Folder(run).read_metrics() if r["stage"] == "evaluate"}
    assert set(evals) == {"dt", "gg", "rng"}
    for r in evals.values():
        assert r["n_test"] == 32 and r["n_regions"] >= 2
        assert r["median_km"] < 400  # Croatia spans ~450 km; a working pipeline stays well inside it
    assert "w/o (pretrained features" in capsys.readouterr().out


@pytest.mark.parametrize("cfg", [FinetuneConfig(graph="rng", rounds=1, lr=3e-5, device="cpu"),
                                 EmbedConfig(checkpoint="-odd name.pt", image_size=322, patches=True, ray="local"),
                                 GraphConfig(kinds=("gg", "dt"), test_frac=0.3),
                                 RegionConfig(resolution=2.5, negative="shift")])
def test_a_config_survives_the_trip_through_its_flags(cfg):
    """Jobs the app starts get their settings as flags; a setting lost on the way would be silently ignored."""
    section = type(cfg).__name__
    parser = argparse.ArgumentParser()
    add_settings(parser, type(cfg), section)
    assert settings(parser.parse_args(config_argv(cfg)), type(cfg), section) == cfg
    with pytest.raises(ValueError, match="no flag of its own"):  # the verifier's training is a nested config: a
        config_argv(PredictorConfig(locator=LocatorConfig(max_steps=7)))  # setting of it is refused, not dropped


def test_help_gives_the_default_a_command_sets_not_the_settings_own(capsys):
    for command, folds in (("levers", 5), ("compare", 1)):  # levers are only ever compared over folds
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = re.search(r"--folds FOLDS\s+1: the run's own split.*?\(default: (\d+)\)", capsys.readouterr().out, re.S)
        assert shown and int(shown.group(1)) == folds, command


def test_a_stage_on_a_run_another_job_is_building_is_refused_and_changes_nothing(tiny_run, caplog):
    """A shell's `geoloc regions` on a run whose job is running would mix two writers' artefacts: refused, its status
    kept."""
    import subprocess
    import sys

    from geoloc_core.runs.folders import Run

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Run(tiny_run).write_status("running", pid=other.pid)  # as the queue writes it for the job it started
        status = Run(tiny_run).status.read_bytes()
        assert main(["regions", "--run", str(tiny_run)]) == 2
        assert "is being built by another job (running)" in caplog.text
        assert Run(tiny_run).status.read_bytes() == status
    finally:
        other.kill()
        other.wait()
    assert main(["regions", "--run", str(tiny_run)]) == 0 and Run(tiny_run).state() == "done"  # its own, once it ended
