"""A newcomer's first hour (issue 30): every command against every state a run folder can be in, and the usual
wrong inputs. Each either works or exits with status 2 and one message that names the cause and the next step;
no traceback, no raw system error ("[Errno 2] ...") reaches the user.

The states are built once per session from one tiny run (`states`) and copied for each case, so the matrix costs
one run, one fine-tuning and one stopped fine-tuning, plus the commands themselves.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, TINY, jpeg_bytes, textured, write_manifest_photos
from geoloc_core.cli import main
from geoloc_core.runs.folders import FinetuneRun, Run
from geoloc_core.server import access

STATES = ("missing", "empty", "ingested", "embedded", "split", "graphs", "regions", "finetuned", "stopped", "fold")
NEXT_STEP = re.compile(r"`geoloc |--[a-z]|\. (Give|Run|Build|Check|Add|Fix|Move|Write|Use|Remove|Leave)\b")  # a hint
FINETUNE = ["--rounds", "1", "--epochs", "1", "--unfrozen-blocks", "1", "--batch-size", "8", "--device", "cpu"]


def tiny(checkpoint: Path) -> list[str]:
    return ["--model", TINY.name, "--checkpoint", str(checkpoint), "--device", "cpu"]


def user_error(caplog) -> str:
    """The one error message the command printed."""
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    return errors[0]


def works_or_says_what_next(argv: list[str], caplog) -> int:
    """Run `geoloc argv`: it works (0), or exits 2 with one message naming the cause and a next step."""
    caplog.clear()
    rc = main([str(a) for a in argv])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert rc in (0, 2), f"{argv}: status {rc}: {errors}"
    if rc == 2:
        message = user_error(caplog)
        assert "Errno" not in message and "Traceback" not in message, message
        assert NEXT_STEP.search(message), f"no next step in: {message}"
    return rc


# the states, built once ------------------------------------------------------------------------------------------

class States:
    """Run folders in each state a newcomer meets, each built the first time a case asks for it (the fine-tuned ones
    only by the slow cases), cut from one tiny run."""

    def __init__(self, root: Path, checkpoint: Path):
        self.root, self.checkpoint = root, checkpoint
        self.data = write_manifest_photos(root / "data", 12)
        self.built: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        if name not in self.built:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("GEOLOC_CACHE_DIR", str(self.root / "cache"))
                mp.setenv("GEOLOC_CONFIG", str(self.root / "no-server-config.toml"))
                mp.setenv("GEOLOC_STATE_DIR", str(self.root / "queue"))
                access.server_config.cache_clear()
                self.built[name] = getattr(self, "_" + name)(self.root / name)
                access.server_config.cache_clear()
        return self.built[name]

    def _missing(self, path: Path) -> Path:
        return path

    def _empty(self, path: Path) -> Path:
        path.mkdir()
        return path

    def _regions(self, path: Path) -> Path:
        assert main(["run", str(self.data), "--run", str(path), "--test-frac", "0.25", *tiny(self.checkpoint)]) == 0
        return path

    def _stripped(self, path: Path, stages: tuple[str, ...]) -> Path:
        """The full run without what `stages` wrote."""
        shutil.copytree(self.path("regions"), path)
        run = Run(path)
        for name in path.iterdir():
            if run.made_by(name) in stages or (name.name.startswith("embeddings_") and "embed" in stages):
                name.unlink()
        return path

    def _graphs(self, path: Path) -> Path:
        return self._stripped(path, ("regions", "evaluate"))

    def _split(self, path: Path) -> Path:
        self._stripped(path, ("regions", "evaluate"))
        for kind in Run(path).graphs():
            Run(path).graph(kind).unlink()
        return path

    def _embedded(self, path: Path) -> Path:
        return self._stripped(path, ("graph", "regions", "evaluate"))

    def _ingested(self, path: Path) -> Path:
        return self._stripped(path, ("embed", "graph", "regions", "evaluate"))

    def _finetuned(self, path: Path) -> Path:
        shutil.copytree(self.path("regions"), path)
        assert main(["finetune", "--run", str(path), *FINETUNE]) == 0
        return path

    def _stopped(self, path: Path) -> Path:
        """Fine-tuning killed in its second epoch: a checkpoint, no finished round, state stopped."""
        from geoloc_core.learn import finetune

        shutil.copytree(self.path("regions"), path)
        real_train_epoch, calls = finetune.train_epoch, []

        def killed_on_second_epoch(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt("killed")
            return real_train_epoch(*args, **kwargs)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(finetune, "train_epoch", killed_on_second_epoch)
            with pytest.raises(KeyboardInterrupt):
                main(["finetune", "--run", str(path), *FINETUNE[:2], "--epochs", "2", *FINETUNE[4:]])
        assert FinetuneRun(path / "finetune_dt").state() == "stopped"
        return path

    def _fold(self, path: Path) -> Path:
        from geoloc_core.analysis.crossval import prepare_fold

        parent = Run(self.path("regions"))
        fold = Run(path / "fold0")
        prepare_fold(parent, fold, np.arange(len(parent.photo_table())) % 2 == 0, ("dt",))
        return fold.root


@pytest.fixture(scope="session")
def states(tmp_path_factory, tiny_checkpoint) -> States:
    return States(tmp_path_factory.mktemp("states"), tiny_checkpoint)


@pytest.fixture
def state(states, tmp_path, isolated_cache):
    """A fresh copy of a state's run folder (a command that works may change it)."""
    def copy(name: str) -> Path:
        source = states.path(name)
        target = tmp_path / "states" / name / source.name
        if source.exists():  # a fold's photos and embeddings are links into its parent's: copied as links
            shutil.copytree(source, target, symlinks=True)
        return target
    return copy


def commands(run: Path, data: Path, photo: Path, out: Path, checkpoint: Path) -> dict[str, list]:
    """One invocation of every command over `run`, with the fewest flags it needs."""
    return {
        "ingest": ["ingest", data, "--run", run],
        "embed": ["embed", "--run", run, *tiny(checkpoint)],
        "graph": ["graph", "--run", run],
        "regions": ["regions", "--run", run],
        "evaluate": ["evaluate", "--run", run],
        "show": ["show", "--run", run],
        "finetune": ["finetune", "--run", run, *FINETUNE],
        "resume": ["resume", run / "finetune_dt", "--device", "cpu"],
        "experiment": ["experiment", "--run", run, "--graphs", "dt", *FINETUNE],
        "predictor": ["predictor", "--run", run, "--database", "train"],
        "predict": ["predict", photo, "--run", run, "--out", out / "predictions"],
        "explain": ["explain", photo, "--run", run, "--out", out / "explanations"],
        "compare": ["compare", "--run", run],
        "levers": ["levers", "--run", run, "--folds", "2", "--rows", "top 3 regions", *FINETUNE[:6], "--device", "cpu"],
        "coverage": ["coverage", "--run", run, "--out", out / "coverage.geojson"],
        "export": ["export", "--run", run, "--out", out / "regions.gpkg"],
        "map": ["map", "--run", run, "--out", out / "regions.html"],
        "report": ["report", "--run", run, "--out", out / "report.html"],
        "cross-time": ["cross-time", "--run", run],
    }


COMMANDS = ("ingest", "embed", "graph", "regions", "evaluate", "show", "finetune", "resume", "experiment", "predictor",
            "predict", "explain", "compare", "levers", "coverage", "export", "map", "report", "cross-time")
EARLY = ("missing", "empty", "ingested")  # nothing to work on: every command answers at once
BUILT_SLOWLY = ("finetuned", "stopped", "fold")  # a fine-tuning to build, or fine-tuning to do
WORK = {"finetune", "resume", "experiment", "levers", "explain", "compare", "report", "map", "predictor", "predict",
        "ingest", "embed"}


def _case(state: str, command: str):
    slow = state in BUILT_SLOWLY or (state not in EARLY and command in WORK)
    return pytest.param(state, command, marks=[pytest.mark.slow] if slow else [], id=f"{state}-{command}")


@pytest.mark.parametrize(("state_name", "command"), [_case(s, c) for s in STATES for c in COMMANDS])
def test_every_command_on_every_run_state_works_or_says_what_next(state_name, command, state, states, tiny_checkpoint,
                                                                   tmp_path, caplog):
    run = state(state_name)
    argv = commands(run, states.data, states.data / "images" / "l00_0.jpg", tmp_path / "out", tiny_checkpoint)[command]
    works_or_says_what_next(argv, caplog)


# the three cases of the issue ------------------------------------------------------------------------------------

def test_a_folder_of_untagged_photos_says_how_to_locate_them(tmp_path, tiny_checkpoint, isolated_cache, caplog):
    """Was `pyproj.exceptions.CRSError: Invalid projection: +proj=aeqd +lat_0=nan` after the ingest report."""
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(2):
        (pics / f"p{i}.jpg").write_bytes(jpeg_bytes(textured(i)))
    assert main(["run", str(pics), "--run", str(tmp_path / "r2"), *tiny(tiny_checkpoint)]) == 2
    message = user_error(caplog)
    assert "none of the 2 photos" in message and "GPS" in message and f"geoloc predict {pics}" in message
    assert not (tmp_path / "r2" / "photos.csv").exists()  # nothing half-built to trip the next command


def test_a_manifest_given_with_its_photo_folder_reads_its_rows_from_its_own_folder(tmp_path, tiny_checkpoint,
                                                                                     isolated_cache, caplog):
    """`geoloc run FOLDER/images --manifest FOLDER/manifest.csv`: every row was "file not found", then a CRSError."""
    folder = write_manifest_photos(tmp_path / "FOLDER", 12)
    run = tmp_path / "r"
    assert main(["run", str(folder / "images"), "--manifest", str(folder / "manifest.csv"), "--run", str(run),
                 *tiny(tiny_checkpoint)]) == 0
    assert len(Run(run).photo_table()) == 24


def test_a_manifest_whose_rows_all_miss_says_where_they_were_looked_for(tmp_path, caplog):
    folder = write_manifest_photos(tmp_path / "FOLDER", 12)
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    shutil.copy(folder / "manifest.csv", elsewhere / "m.csv")  # rows images/... but no images/ beside it
    assert main(["ingest", str(folder), "--manifest", str(elsewhere / "m.csv"), "--run", str(tmp_path / "r")]) == 2
    message = user_error(caplog)
    assert "all 24 rows" in message and "relative to the manifest's own folder" in message


def test_predict_on_a_run_only_ingested_names_the_stage_to_run(tmp_path, caplog):
    """Was `ERROR geoloc: [Errno 2] No such file or directory: 'r3/split.json'`."""
    folder = write_manifest_photos(tmp_path / "FOLDER", 12)
    run = tmp_path / "r3"
    assert main(["ingest", str(folder), "--run", str(run)]) == 0
    assert main(["predict", str(folder / "images" / "l00_0.jpg"), "--run", str(run)]) == 2
    message = user_error(caplog)
    assert "Errno" not in message and f"--run {run}" in message and "`geoloc " in message


def test_a_manifest_named_from_inside_the_data_folder_is_found_there(tmp_path, monkeypatch, caplog):
    """`geoloc ingest DIR --manifest m.csv`, m.csv in DIR: was `[Errno 2] No such file or directory: 'm.csv'`."""
    folder = write_manifest_photos(tmp_path / "DIR", 12)
    (folder / "manifest.csv").rename(folder / "m.csv")
    monkeypatch.chdir(tmp_path)
    assert main(["ingest", "DIR", "--manifest", "m.csv", "--run", "r"]) == 0
    assert len(Run(tmp_path / "r").photo_table()) == 24
    assert main(["ingest", "DIR", "--manifest", "nowhere.csv", "--run", "r"]) == 2
    message = user_error(caplog)
    assert str(tmp_path / "nowhere.csv") in message and str(tmp_path / "DIR" / "nowhere.csv") in message


# wrong inputs ------------------------------------------------------------------------------------------------------

def _inputs(tmp_path: Path) -> dict[str, list[str]]:
    """`geoloc ingest` given each of the usual wrong inputs."""
    good = write_manifest_photos(tmp_path / "good", 12)
    cases = {"a photo for a folder": [good / "images" / "l00_0.jpg"]}
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    cases["a folder with no photos"] = [tmp_path / "empty"]
    untagged = tmp_path / "untagged"
    untagged.mkdir()
    for i in range(3):
        (untagged / f"u{i}.jpg").write_bytes(jpeg_bytes(textured(50 + i)))
    cases["only untagged photos"] = [untagged]
    dupes = tmp_path / "dupes"
    dupes.mkdir()
    for i in range(3):
        (dupes / f"d{i}.jpg").write_bytes(jpeg_bytes(textured(7), gps=(45.8, 15.9)))
    cases["only duplicates"] = [dupes]
    one = tmp_path / "one"
    one.mkdir()
    for i in range(3):
        (one / f"o{i}.jpg").write_bytes(jpeg_bytes(textured(60 + i), gps=(45.8, 15.9)))
    cases["one location"] = [one]
    bad = tmp_path / "bad"
    bad.mkdir()
    pd.DataFrame({"path": ["a.jpg", "b.jpg"], "lat": ["north", ""], "lon": ["x", "y"]}).to_csv(bad / "manifest.csv")
    cases["a manifest with all rows bad"] = [bad]
    cases["a manifest relative to the wrong folder"] = [good / "images", "--manifest", "manifest.csv"]  # it is in good/
    (tmp_path / "t.gpx").write_text('<?xml version="1.0"?><gpx version="1.1" creator="t"><trk><trkseg>'
                                    '<trkpt lat="45.8" lon="15.9"></trkpt><trkpt lat="45.9" lon="16.0"></trkpt>'
                                    "</trkseg></trk></gpx>")
    cases["a GPX without times"] = [untagged, "--gpx", tmp_path / "t.gpx"]
    return cases


@pytest.mark.parametrize("case", ["a photo for a folder", "a folder with no photos", "only untagged photos",
                                  "only duplicates", "one location", "a manifest with all rows bad",
                                  "a manifest relative to the wrong folder", "a GPX without times"])
def test_wrong_inputs_say_what_next(case, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    args = _inputs(tmp_path)[case]
    run = tmp_path / "run"
    rc = works_or_says_what_next(["ingest", *args, "--run", run], caplog)
    if rc == 0:  # ingested: the stage that cannot use it says so
        works_or_says_what_next(["graph", "--run", run], caplog)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["only duplicates", "one location"])
def test_a_run_on_one_location_stops_with_a_message(case, tmp_path, tiny_checkpoint, isolated_cache, caplog):
    rc = works_or_says_what_next(["run", *_inputs(tmp_path)[case], "--run", tmp_path / "run", *tiny(tiny_checkpoint)],
                                 caplog)
    assert rc == 2


def test_an_unexpected_error_is_one_line_and_verbose_shows_where(tmp_path, monkeypatch, caplog):
    """A defect (not the user's doing) exits 1 with its cause in one line, never a traceback; -v logs the traceback."""
    from geoloc_core.runs import stages

    def broken(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(stages, "summary_rows", broken)
    assert main(["show", "--run", str(tmp_path)]) == 1
    assert "OutOfMemoryError: CUDA out of memory" in user_error(caplog)
    assert not any(r.exc_info for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="geoloc"):
        assert main(["-v", "show", "--run", str(tmp_path)]) == 1
    assert any(r.exc_info for r in caplog.records)


def test_a_manifests_absolute_rows_may_point_into_the_data_folder_and_no_further(tmp_path):
    """The rule's other half: absolute rows are read as written, within the data folder or the manifest's own."""
    folder = write_manifest_photos(tmp_path / "FOLDER", 12)
    (tmp_path / "lists").mkdir()
    rows = pd.read_csv(folder / "manifest.csv")
    rows["path"] = [str(folder / p) for p in rows["path"]]
    rows.loc[0, "path"] = str(tmp_path / "outside.jpg")
    (tmp_path / "outside.jpg").write_bytes((folder / "images" / "l00_0.jpg").read_bytes())
    rows.to_csv(tmp_path / "lists" / "m.csv", index=False)
    manifest = tmp_path / "lists" / "m.csv"
    assert main(["ingest", str(folder), "--manifest", str(manifest), "--run", str(tmp_path / "r")]) == 0
    run = Run(tmp_path / "r")
    assert len(run.photo_table()) == 23
    assert run.read_rejected()["reason"].str.contains("outside the dataset root").tolist() == [True]


# the app's pages -------------------------------------------------------------------------------------------------

PAGES = ("data", "evaluate", "predict", "regions", "similar", "train")


@pytest.mark.parametrize(("state_name", "page_name"), [
    pytest.param(s, p, marks=[] if s in EARLY else [pytest.mark.slow], id=f"{s}-{p}") for s in STATES for p in PAGES])
def test_every_page_on_every_run_state_says_what_is_missing(state_name, page_name, state):
    """A page on a run that lacks a stage says which and how to build it; it never shows an exception."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "views" / f"{page_name}.py"), default_timeout=120)
    at.session_state["run_dir"] = str(state(state_name))
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    if state_name in EARLY and (page_name, state_name) != ("data", "ingested"):  # the Data page shows those photos
        said = [m.value for m in (*at.info, *at.warning, *at.error)]
        assert any("`geoloc " in m for m in said), said
