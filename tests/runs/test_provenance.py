"""Provenance: every derived artefact records what it was computed from, and every read checks it.

The staleness matrix builds one tiny run (photos, embeddings, a test-time augmentation's pass, split, DT and GG graphs,
regions, the w/o answers, a fine-tuning folder, a saved predictor, a table), copies it for each case, changes one input,
and asserts that exactly the artefacts downstream of it read as stale (and are rebuilt or refused), while everything
upstream is byte-for-byte what it was and still reads as current.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, TINY, write_manifest_photos
from geoloc_core.base import storage
from geoloc_core.config import (
    EmbedConfig,
    EvalConfig,
    FinetuneConfig,
    GraphConfig,
    IngestConfig,
    PredictConfig,
    RegionConfig,
)
from geoloc_core.features.encoders import load_encoder
from geoloc_core.learn.classifier import load_region_head
from geoloc_core.learn.finetune import finetune_rounds
from geoloc_core.locate.build import photo_regions
from geoloc_core.locate.store import open_predictor, predictor_inputs, predictor_store, predictor_version
from geoloc_core.runs import provenance, stages
from geoloc_core.runs.folders import Run
from geoloc_core.runs.provenance import Stale

FT = FinetuneConfig(graph="dt", rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")
QUICK = replace(PredictConfig().predictor, locator=replace(PredictConfig().predictor.locator, epochs=5))
PREDICT = PredictConfig(predictor=QUICK, device="cpu")
ARTEFACTS = ("photos", "embeddings", "augmentation:mirror", "split", "graph:dt", "graph:gg", "regions:dt", "regions:gg",
             "held_out:dt", "finetune", "predictor", "table")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_checkpoint) -> Path:
    """The run every case starts from (built once; each case works on a copy)."""
    base = tmp_path_factory.mktemp("provenance")
    previous = os.environ.get("GEOLOC_CACHE_DIR")
    os.environ["GEOLOC_CACHE_DIR"] = str(base / "cache")
    try:
        checkpoint = base / "weights" / "tiny.safetensors"
        checkpoint.parent.mkdir()
        shutil.copy2(tiny_checkpoint, checkpoint)
        run = Run(base / "run")
        stages.run_ingest(run.root, IngestConfig(data=str(write_manifest_photos(base / "photos", 16)), workers=2))
        stages.run_embed(run.root, EmbedConfig(model=TINY.name, checkpoint=str(checkpoint), device="cpu", workers=1))
        stages.tta_embeddings(run.root, "flip")
        stages.run_graph(run.root, GraphConfig(kinds=("dt", "gg"), test_frac=0.25))
        stages.cut_regions(run.root, RegionConfig(clip="hull"))
        stages.run_evaluate(run.root, EvalConfig())
        list(finetune_rounds(run.root, FT, run.root / "finetune_dt"))
        open_predictor(run.root, PREDICT)
        storage.write_csv(run.compare_table, pd.DataFrame({"method": ["a"], "median_km": [1.0]}))
        upstream = ["photos", "embeddings", "split", "regions:dt", "finetune:finetune_dt"]
        run.record_table([run.compare_table], upstream, {"k": 1})
    finally:
        if previous is None:
            os.environ.pop("GEOLOC_CACHE_DIR")
        else:
            os.environ["GEOLOC_CACHE_DIR"] = previous
    return base


@pytest.fixture
def case(built, tmp_path, monkeypatch) -> Run:
    """A copy of the built run (stamps kept), with the embedding cache of the build."""
    monkeypatch.setenv("GEOLOC_CACHE_DIR", str(built / "cache"))
    shutil.copytree(built / "run", tmp_path / "run", symlinks=True)
    return Run(tmp_path / "run")


def _current(run: Run, name: str) -> bool:
    """Whether artefact `name` of the matrix reads as current."""
    if name == "finetune":
        return (run.root / "finetune_dt").exists() and run.finetune_dirs("dt")[0].is_current()
    if name == "predictor":
        store = predictor_store(run.root, PREDICT.predictor, "all", PREDICT.graph)
        try:
            return provenance.is_current(store.root.name, store.record, store.files,
                                         predictor_inputs(run.root, PREDICT.predictor, "all", PREDICT.graph))
        except (Stale, FileNotFoundError):
            return False
    if name == "table":
        try:
            run.check_table([run.compare_table])
        except Stale:
            return False
        return True
    return run.is_current(name)


def _files(run: Run, name: str) -> dict[str, str]:
    """The content of an artefact's files (and its record), to show nothing upstream was rewritten."""
    if name in ("finetune", "predictor", "table"):
        return {}
    _, record, files, _, _ = run.artefact(name)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in [*files, record] if p.exists()}


def _reingest_without_one_photo(run: Run) -> None:
    source = Path(run.read_ingest_meta()["root"])
    manifest = pd.read_csv(source / "manifest.csv")
    manifest.iloc[1:].to_csv(source / "fewer.csv", index=False)  # its rows are read from its own folder
    stages.run_ingest(run.root, IngestConfig(data=str(source), manifest=str(source / "fewer.csv"), workers=2))


def _other_graph(run: Run) -> None:
    """A graph written again with other edges (as a changed graph builder would), through its writer."""
    edges = storage.read_npy(run.graph("dt"))
    storage.write_npy(run.graph("dt"), edges[: len(edges) - 1])
    run.record("graph:dt")


def _other_checkpoint(run: Run) -> None:
    """The encoder's weights file replaced in place (same path, other weights)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = Path(run.pipeline_config().embed.checkpoint)
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    save_file({k: v + 0.01 for k, v in load_file(path).items()}, path, metadata=metadata)


EVERYTHING = set(ARTEFACTS) - {"photos"}
RESPLIT = GraphConfig(kinds=("dt", "gg"), test_frac=0.25)
CUT_FROM_THE_SPLIT = {"regions:dt", "regions:gg", "held_out:dt", "finetune", "predictor", "table"}
CASES = {
    # input changed: (how, the artefacts that must read as stale)
    "photos": (_reingest_without_one_photo, EVERYTHING),
    "split seed": (lambda run: stages.run_graph(run.root, replace(RESPLIT, split_seed=1)), CUT_FROM_THE_SPLIT),
    "graph": (_other_graph, {"regions:dt", "held_out:dt", "finetune", "predictor", "table"}),
    "regions": (lambda run: stages.cut_regions(run.root, RegionConfig(clip="hull", resolution=3.0), ("dt",)),
                {"regions:gg", "held_out:dt", "finetune", "predictor", "table"}),
    "embeddings": (lambda run: stages.run_embed(run.root, replace(run.pipeline_config().embed, patches=True)),
                   {"augmentation:mirror", "regions:dt", "regions:gg", "held_out:dt", "finetune", "predictor",
                    "table"}),
    "encoder checkpoint": (_other_checkpoint, EVERYTHING - {"split", "graph:dt", "graph:gg"}),
    "evaluation seed": (lambda run: stages.run_evaluate(run.root, EvalConfig(seed=1), ("dt",)), set()),
    "test share": (lambda run: stages.run_graph(run.root, replace(RESPLIT, test_frac=0.4)), CUT_FROM_THE_SPLIT),
}
UPSTREAM = {  # what each change must leave untouched, byte for byte
    "photos": (), "split seed": ("photos", "embeddings", "augmentation:mirror"),
    "graph": ("photos", "embeddings", "split", "graph:gg"),
    "regions": ("photos", "embeddings", "split", "graph:dt", "graph:gg"), "embeddings": ("photos", "split", "graph:dt"),
    "encoder checkpoint": ("photos", "split", "graph:dt"),
    "test share": ("photos", "embeddings", "augmentation:mirror"),
    "evaluation seed": ("photos", "embeddings", "split", "graph:dt", "regions:dt"),
}


def test_the_built_run_reads_as_current(built, case):
    assert {name: _current(case, name) for name in ARTEFACTS} == dict.fromkeys(ARTEFACTS, True)


@pytest.mark.parametrize("change", CASES)
def test_a_changed_input_makes_exactly_its_downstream_stale(case, change):
    how, stale = CASES[change]
    before = {name: _files(case, name) for name in UPSTREAM[change]}
    checkpoint = Path(case.pipeline_config().embed.checkpoint)
    saved = (checkpoint.read_bytes(), checkpoint.stat().st_mtime_ns)
    try:
        how(case)
        assert {name for name in ARTEFACTS if not _current(case, name)} == stale
        assert {name: _files(case, name) for name in UPSTREAM[change]} == before
        _stale_is_refused_or_rebuilt(case, stale)
    finally:
        checkpoint.write_bytes(saved[0])
        os.utime(checkpoint, ns=(saved[1], saved[1]))


def _stale_is_refused_or_rebuilt(run: Run, stale: set[str]) -> None:
    """Each stale artefact's reader refuses it, naming what changed, or its caller rebuilds it."""
    encoder = lambda: load_encoder(TINY.name, run.pipeline_config().embed.checkpoint, None, "cpu")  # noqa: E731
    readers = {"embeddings": run.read_embeddings, "regions:dt": lambda: run.regions("dt").labels(),
               "regions:gg": lambda: run.regions("gg").read_summary(),
               "table": lambda: run.check_table([run.compare_table]),
               "finetune": lambda: load_region_head(run.finetune_dirs("dt")[0], 1, encoder())}
    for name in stale & readers.keys():
        with pytest.raises(Stale, match="changed"):
            readers[name]()
    if "finetune" in stale:
        assert run.latest_round("dt") is None and run.finished_rounds("dt") == []  # never offered as the default head
    if "augmentation:mirror" in stale and "embeddings" not in stale:
        stages.tta_embeddings(run.root, "flip")  # made again
        assert run.is_current("augmentation:mirror")
    if "predictor" in stale:
        upstream_stale = stale & {"embeddings", "regions:dt"}
        if upstream_stale:
            with pytest.raises(Stale):
                open_predictor(run.root, PREDICT)
        else:
            open_predictor(run.root, PREDICT)
            assert _current(run, "predictor")


def test_a_record_names_what_changed(case):
    stages.run_graph(case.root, GraphConfig(kinds=("dt", "gg"), test_frac=0.25, split_seed=1))
    message = r"regions_dt.csv was made from other inputs \(split.json changed, graph_dt.npy changed\); run `geoloc"
    with pytest.raises(Stale, match=message):
        case.regions("dt").labels()


def test_a_file_changed_behind_its_record_is_stale_and_a_touched_one_is_not(case):
    record = case.artefact("graph:dt")[1].read_bytes()
    os.utime(case.graph("dt"))  # touched: the content decides, and it is the same
    assert case.is_current("graph:dt") and case.is_current("regions:dt")
    assert case.artefact("graph:dt")[1].read_bytes() == record  # a read writes nothing (a viewer, a read-only run)
    storage.write_npy(case.graph("dt"), storage.read_npy(case.graph("dt"))[:-1])  # rewritten without a record
    with pytest.raises(Stale, match="changed after it was recorded"):
        case.check("graph:dt")


def test_an_artefact_without_a_record_is_refused(case):
    case.artefact("regions:dt")[1].unlink()
    with pytest.raises(Stale, match="no provenance record"):
        case.regions("dt").labels()


def test_the_predictor_version_follows_the_region_head_and_inputs(case):
    version = predictor_version(case.root, PREDICT)
    assert predictor_version(case.root, PREDICT) == version
    stages.run_graph(case.root, GraphConfig(kinds=("dt", "gg"), test_frac=0.25, split_seed=1))
    assert predictor_version(case.root, PREDICT) != version


def test_resuming_a_folder_of_another_split_is_refused_and_experiment_trains_it_again(case):
    ft = case.finetune_dirs("dt")[0]
    storage.write_json(ft.root / "checkpoints" / "keep.json", {})  # any work of the old folder
    stages.run_graph(case.root, GraphConfig(kinds=("dt", "gg"), test_frac=0.25, split_seed=1))
    with pytest.raises(Stale, match="split.json changed"):
        next(finetune_rounds(case.root, FT, ft.root))
    assert next(finetune_rounds(case.root, FT, ft.root, restart_stale=True)).name == "w/o"
    assert ft.is_current() and not (ft.root / "checkpoints" / "keep.json").exists()


def test_wrong_length_labels_are_refused_not_hidden(case):
    _reingest_without_one_photo(case)
    with pytest.raises(Stale, match="photos.csv changed"):
        photo_regions(case, "dt")


def test_a_run_written_before_records_is_recorded_as_found_where_its_evidence_agrees(case):
    regions = case.regions("gg")
    frame = pd.read_csv(regions.csv)
    storage.write_csv(regions.csv, frame.assign(test=~frame["test"]))  # cut for another split: its flags say so
    for record in [*case.root.glob("*.provenance.json"), *case.root.glob("*/provenance.json")]:
        record.unlink()
    assert case.is_current("regions:dt") and case.is_current("held_out:dt") and case.finetune_dirs("dt")[0].is_current()
    assert case.is_current("graph:gg") and not case.is_current("regions:gg")
    assert not _current(case, "predictor")  # no record: rebuilt on its next use


def test_a_viewers_read_of_a_run_written_before_records_writes_nothing(case, monkeypatch):
    from geoloc_core.config import server_config

    for record in [*case.root.glob("*.provenance.json"), *case.root.glob("*/provenance.json")]:
        record.unlink()
    monkeypatch.setenv("GEOLOC_MODE", "viewer")
    server_config.cache_clear()
    try:
        assert not case.is_current("regions:dt") and stages.summary_rows(case.root) == []  # unrecorded: not shown
        assert not list(case.root.glob("*.provenance.json"))  # and nothing was written into the run
    finally:
        monkeypatch.delenv("GEOLOC_MODE")
        server_config.cache_clear()
    assert case.is_current("regions:dt")  # an editor's read records it as found


def test_a_stale_table_is_shown_nowhere(case):
    """After a re-split, the Evaluate page, the report and the w/o summary leave out what was computed from the old
    split and say what changed, instead of showing it."""
    from streamlit.testing.v1 import AppTest

    from geoloc_core.share.report import report_html

    assert [row["graph"] for row in stages.summary_rows(case.root)] == ["dt", "gg"]
    stages.run_graph(case.root, GraphConfig(kinds=("dt", "gg"), test_frac=0.25, split_seed=1))
    assert stages.summary_rows(case.root) == []
    changed = "compare.csv was made from other inputs (finetune:finetune_dt changed, regions:dt changed, split changed)"
    assert f"compare.csv is left out: {changed}" in report_html(case, tiles=False)
    at = AppTest.from_file(str(REPO / "views" / "evaluate.py"), default_timeout=120)
    at.session_state["run_dir"] = str(case.root)
    at.run()
    assert not at.exception and not any("method" in frame.value for frame in at.dataframe)  # coverage cells only
    assert not any("geoloc compare (held-out)" in box.options for box in at.selectbox)  # nor its errors mapped
    assert any("compare.csv is not shown" in w.value and "split changed" in w.value for w in at.warning)


def test_a_folded_table_follows_the_region_settings_its_folds_cut_with(case):
    """A cross-validated table records the run's region settings that its folds' labels depend on; settings that only
    draw the polygons leave it current."""
    storage.write_csv(case.levers_table, pd.DataFrame({"method": ["a"], "median_km": [1.0]}))
    case.record_table(case.levers_files, ["photos", "embeddings", "config:regions"], {"k": 1})
    stages.cut_regions(case.root, RegionConfig(clip="hull", site_buffer_km=2.0), ("dt",))
    assert case.stale_table(case.levers_files) is None
    stages.cut_regions(case.root, RegionConfig(clip="hull", resolution=3.0), ("dt",))
    assert "config:regions changed" in case.stale_table(case.levers_files)
