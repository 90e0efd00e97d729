"""The app as a user meets it, through streamlit.testing (AppTest) over a tiny finished run."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO
from geoloc_core.analysis.experiment import cross_validate
from geoloc_core.cli import main
from geoloc_core.config import CrossValConfig, FinetuneConfig
from geoloc_core.learn.finetune import finetune_rounds
from geoloc_core.regions.partition import match_labels
from geoloc_core.runs.folders import FinetuneRun, Folder, PredictorStore, Run
from geoloc_core.server import access, jobqueue, jobs


def page(path: str, run: Path, user: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / path), default_timeout=120)
    at.session_state["run_dir"] = str(run)
    if user:
        at.session_state["user"] = user
    return at.run()


def build_with_the_button(at: AppTest, run: Path) -> jobqueue.Job:
    """The Predict page lacks the predictor for its settings: it says so, writes nothing, and its button queues the
    job that builds it (a real `geoloc predictor` process); once done, the page answers. Returns the job."""
    before = sorted(p.name for p in run.iterdir())
    assert not at.exception and any("not built yet" in i.value for i in at.info) and not at.subheader
    assert sorted(p.name for p in run.iterdir()) == before  # the page built nothing itself
    at.button(key="queue-predictor").click().run()
    assert not at.exception and "`geoloc predictor` started" in at.success[0].value
    job = max(jobqueue.all_jobs(), key=lambda j: j.submitted)
    assert job.kind == "predictor" and "--database=train" in job.argv
    assert _wait(Run(run), 300) == "done", Run(run).log.read_text()[-2000:]
    at.run()
    assert not any("not built yet" in i.value for i in at.info)
    return job


def test_a_fresh_run_answers_its_first_photo_with_the_predictor_it_built(tiny_run):
    """`geoloc run` builds the Predict page's default predictor in its job: the page's first answer loads, builds
    nothing (issue 26: the first upload took 41 s, the predictor being built in the page)."""
    stores = sorted(p.name for p in tiny_run.glob("predictor_cls_train_*"))
    assert len(stores) == 1
    at = page("views/predict.py", tiny_run)
    at.multiselect[0].set_value(at.multiselect[0].options[:1]).run()
    assert not at.exception and len(at.subheader) == 1 and not at.button
    assert sorted(p.name for p in tiny_run.glob("predictor_cls_train_*")) == stores


def test_app_opens_on_the_predict_page_with_the_run_picker(tiny_run, monkeypatch):
    monkeypatch.setenv("GEOLOC_RUN", str(tiny_run))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == str(tiny_run)
    assert "Where was this photo taken?" in at.header[0].value


@pytest.mark.slow  # `geoloc predictor` processes
def test_predict_page_labels_regions_with_the_fine_tuned_classifier_or_the_nearest_photo(tiny_run):
    list(finetune_rounds(tiny_run, FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")))
    at = page("views/predict.py", tiny_run)
    at.multiselect[0].set_value(at.multiselect[0].options[:2]).run()
    assert not at.exception and len(at.subheader) == 2
    region_lines = [m.value for m in at.markdown if "region **" in m.value]
    assert len(region_lines) == 2 and all("(DT FT1 classifier, p = " in line for line in region_lines)
    polygons = json.loads((tiny_run / "finetune_dt" / "regions_r0.geojson").read_text())["features"]
    for deck in at.get("deck_gl_json_chart"):  # the predicted region's polygon, from the classifier's own regions
        [drawn] = [layer["data"]["features"] for layer in json.loads(deck.proto.json)["layers"]
                   if layer["@@type"] == "GeoJsonLayer" and layer.get("lineWidthMinPixels") == 2]
        assert drawn[0]["geometry"] in [f["geometry"] for f in polygons]
    at.sidebar.toggle[0].set_value(False).run()
    assert not at.exception
    assert all("(DT w/o, nearest photo)" in m.value for m in at.markdown if "region **" in m.value)
    # retrieving with the FT1 backbone: that round's predictor is built by a job (never by the page), then answers
    at.sidebar.toggle[0].set_value(True).run()
    assert at.sidebar.selectbox[1].options == ["pretrained backbone", "FT1 backbone (DT)"]
    at.sidebar.selectbox[1].set_value(1).run()
    assert "--ft-round=1" in build_with_the_button(at, tiny_run).argv
    assert not at.exception and len(at.subheader) == 2
    built = [PredictorStore(p).read_meta()["config"]["ft_round"] for p in tiny_run.glob("predictor_cls_train_*")]
    assert sorted(built) == [0, 1]


def test_regions_page_switches_graph_iteration_and_edges(tiny_run):
    list(finetune_rounds(tiny_run, FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")))
    at = page("views/regions.py", tiny_run)
    assert not at.exception
    graph, iteration = at.selectbox[0], at.selectbox[1]
    assert graph.options == ["DT", "GG", "RNG"] and iteration.options == ["w/o", "w/o (fine-tuning run)", "after FT1"]
    regions_table = at.dataframe[0].value
    assert {"training photos", "area (km²)", "places", "photo 1"} <= set(regions_table.columns)
    assert (regions_table["area (km²)"] > 0).all() and regions_table["photo 1"].str.startswith("data:image/jpeg").all()
    layers_before = len(at.get("deck_gl_json_chart")[0].proto.json)
    at.toggle[0].set_value(True).run()
    assert not at.exception and len(at.get("deck_gl_json_chart")[0].proto.json) > layers_before  # edges drawn
    a = pd.read_csv(tiny_run / "regions_dt.csv")["region"].to_numpy()
    ft1 = pd.read_csv(tiny_run / "finetune_dt" / "regions_r1.csv")
    b = (ft1["region"].to_numpy() + 1) % (a.max() + 1)  # FT1 renumbered its regions ...
    b[:3] = (b[:3] + 1) % (a.max() + 1)  # ... and moved three photos
    ft1.assign(region=b).to_csv(tiny_run / "finetune_dt" / "regions_r1.csv", index=False)
    at.selectbox[1].set_value("after FT1").run()
    assert not at.exception
    [changed] = [m for m in at.metric if m.label == "Photos that changed region"]
    n_moved = int((match_labels(a, b)[b] != a).sum())
    assert changed.value == f"{n_moved} of 40" and 0 < n_moved < 10  # the renumbering is not mistaken for moves
    decks = [json.loads(d.proto.json) for d in at.get("deck_gl_json_chart")]
    # the iteration, its stability (no round learnt FT1's regions: no confusion map), From and To
    assert len(decks) == 4
    rings = [sum(not layer.get("filled", True) for layer in deck["layers"]) for deck in decks[-2:]]
    assert rings == ([1, 1] if n_moved else [0, 0])  # the photos that moved are circled on both maps
    at.selectbox[0].set_value("rng").run()
    assert not at.exception and at.selectbox[1].options == ["w/o"]


def test_regions_page_offers_the_offline_map_and_gis_files_and_names_photos_outside_the_land(tiny_run):
    labels = pd.read_csv(tiny_run / "regions_dt.csv")
    # as a coastal run's at-sea photos
    labels.assign(outside=labels.index < 3).to_csv(tiny_run / "regions_dt.csv", index=False)
    Run(tiny_run).record("regions:dt")  # as the regions stage records what it wrote
    at = page("views/regions.py", tiny_run)
    assert not at.exception
    buttons = [b.proto.label for b in at.get("download_button")]
    assert any(b.startswith("Map of every graph and iteration (HTML") for b in buttons)
    assert any(b.startswith("Regions as gpkg") for b in buttons)
    assert any("3 of 40 photos lie outside" in w.value for w in at.warning)
    assert sorted(at.dataframe[0].value["path"]) == sorted(labels["path"][:3])


def test_predict_page_offers_the_batch_as_an_offline_map_and_a_gis_file(tiny_run):
    at = page("views/predict.py", tiny_run)
    at.multiselect[0].set_value(at.multiselect[0].options[:1]).run()
    assert not at.exception
    buttons = [b.proto.label for b in at.get("download_button")]
    assert "Map of the batch (HTML, opens offline)" in buttons and any(b.startswith("As gpkg") for b in buttons)


def test_predict_page_locates_the_picked_photos_together_as_one_place(tiny_run):
    at = page("views/predict.py", tiny_run)
    options = at.multiselect[0].options
    at.multiselect[0].set_value([options[0], options[-1]]).run()  # photos of two held-out locations
    [locate] = [s for s in at.sidebar.selectbox if s.label == "Locate"]
    locate.set_value("all").run()
    assert not at.exception
    assert len([i for i in at.info if "Located together with 1 other photo(s)" in i.value]) == 2
    together = [m.value for m in at.metric]
    assert together[0] == together[1]  # one answer for the place


@pytest.mark.slow  # `geoloc predictor` processes
def test_predict_page_switches_the_region_prior_and_the_test_time_augmentations(tiny_run):
    at = page("views/predict.py", tiny_run)
    at.multiselect[0].set_value(at.multiselect[0].options[:1]).run()
    [prior] = [t for t in at.sidebar.toggle if t.label == "Region prior"]
    [tta] = [s for s in at.sidebar.selectbox if s.label == "Test-time augmentations"]
    assert prior.value and tta.value == "none"
    prior.set_value(False).run()
    assert "--region-weight=0.0" in build_with_the_button(at, tiny_run).argv
    tta.set_value("crops").run()
    assert "--tta=crops" in build_with_the_button(at, tiny_run).argv
    assert not at.exception and len(at.subheader) == 1
    built = {(c["region_weight"], c["tta"])
             for c in (PredictorStore(p).read_meta()["config"] for p in tiny_run.glob("predictor_cls_train_*"))}
    # each choice builds (and is answered by) its own predictor
    assert built == {(1.0, "none"), (0.0, "none"), (0.0, "crops")}


@pytest.mark.slow  # a `geoloc coverage` process
def test_evaluate_page_shows_the_wo_rows_and_queues_the_coverage_pass_it_lacks(tiny_run):
    at = page("views/evaluate.py", tiny_run)
    assert not at.exception
    assert any("w/o" in s.value for s in at.subheader)
    assert len(at.dataframe) == 1  # no experiment yet: only the run's own rows
    before = sorted(p.name for p in tiny_run.iterdir())
    assert any("Not built yet: the leave-location-out map" in i.value for i in at.info)
    assert sorted(p.name for p in tiny_run.iterdir()) == before  # the page ran no pass over every photo itself
    at.button(key="queue-coverage").click().run()
    assert not at.exception and "`geoloc coverage` started" in at.success[0].value
    [job] = jobqueue.all_jobs()
    assert job.kind == "coverage" and "--errors=loo" in job.argv
    assert _wait(Run(tiny_run), 300) == "done", Run(tiny_run).log.read_text()[-2000:]
    at = page("views/evaluate.py", tiny_run)
    assert not at.exception and len(at.dataframe) == 2  # and the coverage's worst cells, from the job's answers
    assert Run(tiny_run).coverage_map.exists()


def test_regions_page_explains_the_partition_signatures_confusion_and_stability(tiny_run):
    at = page("views/regions.py", tiny_run)
    assert not at.exception
    [signatures] = [d.value for d in at.dataframe if "typical 1" in d.value.columns]
    n_regions = len(pd.read_csv(tiny_run / "regions_dt_summary.csv"))
    assert len(signatures) == n_regions and signatures["typical 1"].str.startswith("data:image/jpeg").all()
    assert any("nearest region mean" in c.value for c in at.caption)
    held_out = len(pd.read_csv(Run(tiny_run).held_out("dt")))
    assert any(f"of {held_out} held-out photos in the right region" in c.value for c in at.caption)
    [count] = [m for m in at.metric if m.label == "Regions per seed"]
    [resolution] = [s for s in at.slider if s.label == "Resolution"]
    low = int(count.value.split()[0])
    resolution.set_value(3.0).run()
    assert not at.exception
    [count] = [m for m in at.metric if m.label == "Regions per seed"]
    assert int(count.value.split()[0]) > low  # the region count follows the slider


def test_evaluate_page_coverage_hexagons_hold_every_photo(tiny_run):
    assert main(["coverage", "--run", str(tiny_run)]) == 0  # the job an editor queues: the answers the page reads
    at = page("views/evaluate.py", tiny_run)
    [size] = [n for n in at.number_input if n.label.startswith("Hexagon size")]
    size.set_value(15.0).run()
    assert not at.exception
    assert any("hexagons of 15 km" in c.value and "over 40 photos" in c.value for c in at.caption)
    assert any(d.value.columns.tolist()[:3] == ["lat_deg", "lon_deg", "n_photos"] for d in at.dataframe)


def test_match_labels_ignores_renumbering_and_numbers_new_regions_freshly():
    a = np.array([0, 0, 1, 1, 2])
    b = np.array([2, 2, 0, 0, 1])  # the same partition, renumbered
    assert (match_labels(a, b)[b] == a).all()
    a, split = np.array([0, 0, 1, 1, 1, 2]), np.array([1, 1, 0, 0, 3, 2])  # region 1 of `a` split in two
    mapping = match_labels(a, split)
    # a fresh number
    assert (mapping[split] != a).tolist() == [False, False, False, False, True, False] and mapping[3] == 3


def _wait(folder: Folder, timeout: float = 180) -> str:
    deadline = time.time() + timeout
    while folder.state() in (None, "running") and time.time() < deadline:
        time.sleep(0.5)
    return folder.state()


@pytest.mark.slow  # two fine-tuning processes
def test_train_page_shows_a_new_run_at_once_and_never_resumes_an_old_one_instead(tiny_run):
    at = page("views/train.py", tiny_run)
    assert not at.exception and not at.selectbox[1:]  # nothing to watch yet
    at.number_input[0].set_value(1)  # rounds
    at.number_input[1].set_value(1)  # epochs
    at.number_input[2].set_value(1)  # unfrozen blocks
    at.button[0].click().run()
    assert not at.exception and "Started finetune_dt" in at.success[0].value
    first = Run(tiny_run).finetune_dirs("dt")[0]
    # the run shows in the same script run, with a progress bar, before the child process has written anything itself
    assert any("finetune_dt" in m.value and "running" in m.value for m in at.markdown)
    assert at.get("progress")
    assert _wait(first) == "done", first.log.read_text()[-2000:]
    again = page("views/train.py", tiny_run)  # a reload re-attaches to what is on disk
    assert not again.exception
    assert any("finetune_dt" in m.value and "done" in m.value for m in again.markdown)
    assert not [b for b in again.button if b.label.startswith("Resume")]  # a finished run has nothing to resume
    again.number_input[0].set_value(2)
    again.number_input[1].set_value(1)
    again.number_input[2].set_value(1)
    again.button[0].click().run()  # the form's settings start a new run; the finished one stays as it was
    second = FinetuneRun(tiny_run / "finetune_dt-2")
    assert "Started finetune_dt-2" in again.success[0].value
    assert _wait(second) == "done", second.log.read_text()[-2000:]
    assert second.read_config()["finetune"]["rounds"] == 2
    assert [r["name"] for r in second.read_metrics() if r["kind"] == "round"] == ["w/o", "FT1", "FT2"]
    assert [r["name"] for r in first.read_metrics() if r["kind"] == "round"] == ["w/o", "FT1"]


@pytest.mark.slow  # fine-tuning processes
def test_train_page_stops_a_run_and_resumes_it_with_its_own_settings(tiny_run):
    ft = jobs.start_finetune(Run(tiny_run),
                             FinetuneConfig(rounds=20, epochs=2, unfrozen_blocks=1, batch_size=8, device="cpu"),
                             user="tester")
    deadline = time.time() + 120
    while not any(r.get("kind") == "epoch" for r in ft.read_metrics()) and time.time() < deadline:
        time.sleep(0.2)
    at = page("views/train.py", tiny_run, user="tester")  # their own job: no question asked
    [stop] = [b for b in at.button if b.label == "Stop"]
    stop.click().run()
    assert not at.exception and "to stop" in at.info[0].value
    assert _wait(ft, 30) == "stopped"
    stopped_at = len([r for r in ft.read_metrics() if r["kind"] == "round"])
    assert stopped_at < 21, "the run ended before Stop: nothing left to resume"
    at = page("views/train.py", tiny_run, user="tester")
    [resume] = [b for b in at.button if b.label.startswith("Resume")]
    resume.click().run()
    assert not at.exception and "Resuming" in at.info[0].value
    assert _wait(ft, 180) == "done", ft.log.read_text()[-2000:]
    rounds = [r["name"] for r in ft.read_metrics() if r["kind"] == "round"]
    # every round once: resumed where it stopped, with its settings
    assert rounds == ["w/o"] + [f"FT{r}" for r in range(1, 21)]
    assert not [b for b in page("views/train.py", tiny_run).button if b.label.startswith("Resume")]


def _roots(monkeypatch, *roots: Path) -> None:
    monkeypatch.setenv("GEOLOC_DATA_ROOTS", ":".join(map(str, roots)))
    access.server_config.cache_clear()


def test_data_page_shows_ingest_counts_rejections_and_refuses_a_missing_folder(tiny_run, monkeypatch, tmp_path):
    pd.DataFrame([{"path": "bad.jpg",
                   "reason": "not an image (no known image format)"}]).to_csv(tiny_run / "rejected.csv", index=False)
    Run(tiny_run).record("photos")  # as the ingest stage does once its files are written
    _roots(monkeypatch, tmp_path)
    at = page("views/data.py", tiny_run)
    assert not at.exception
    assert [m.value for m in at.metric] == ["40", "20", "2 photos", "0", "0"]  # ingest.json counts: photos, places (the
    # manifest's location_id), the largest place, photos to locate, rejected
    assert at.dataframe[-1].value["reason"].tolist() == ["not an image (no known image format)"]
    at.text_input[0].set_value(str(tmp_path / "no" / "such" / "folder"))
    at.text_input[1].set_value("x")
    at.button[0].click().run()
    assert "no such folder" in at.error[0].value


def test_data_page_refuses_paths_outside_the_data_roots_and_starts_none(tiny_run, manifest_folder, monkeypatch,
                                                                        tmp_path):
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    (allowed / "photos").symlink_to(manifest_folder)  # a link inside the root to photos outside it
    _roots(monkeypatch, allowed)
    for path, why in ((str(manifest_folder), "outside the data roots"), (str(allowed / "photos"), "symbolic link"),
                      ("photos", "symbolic link"), (f"{allowed}/../manifest_photos", "'..' is not allowed"),
                      ("../manifest_photos", "'..' is not allowed"), (str(elsewhere), "outside the data roots")):
        at = page("views/data.py", tiny_run)
        at.text_input[0].set_value(path)
        at.text_input[1].set_value("new-run")
        at.button[0].click().run()
        assert not at.exception and why in at.error[0].value and not at.success, path
    assert not (tmp_path / "runs").exists() and jobqueue.all_jobs() == []  # nothing was queued, no folder made


@pytest.mark.slow  # a `geoloc run` process
def test_data_page_builds_a_run_from_a_folder_under_a_root_given_relative_to_it(tiny_run, manifest_folder, monkeypatch,
                                                                                tmp_path, tiny_checkpoint):
    _roots(monkeypatch, tmp_path)
    monkeypatch.setenv("GEOLOC_RUNS", str(tmp_path / "runs"))
    at = page("views/data.py", tiny_run)
    at.session_state["user"] = "ana"  # the name given in the sidebar
    at.text_input[0].set_value(manifest_folder.name)  # relative: looked up under each root
    at.text_input[1].set_value("from-root")
    at.button[0].click().run()
    assert not at.exception and "Started" in at.success[0].value
    [job] = jobqueue.all_jobs()
    assert job.user == "ana" and job.kind == "run" and job.argv[-1] == str(manifest_folder.resolve())
    built = Run(tmp_path / "runs" / "from-root")
    assert _wait(built, 300) == "done", built.log.read_text()[-2000:]
    assert built.read_ingest_meta()["n_accepted"] == 40


def test_data_page_refuses_a_run_name_that_leaves_the_runs_folder(tiny_run, tmp_path):
    for name in ("..", "../elsewhere", ".", "a/b"):
        at = page("views/data.py", tiny_run)
        at.text_input[0].set_value(str(tiny_run))  # a folder that exists
        at.text_input[1].set_value(name)
        at.button[0].click().run()
        assert not at.exception and "run name" in at.error[0].value and not at.success, name


def test_data_page_refuses_a_missing_gpx_track_and_an_unreadable_time_offset(tiny_run, tmp_path, monkeypatch):
    (tmp_path / "track.gpx").write_text("<gpx/>")
    _roots(monkeypatch, tmp_path)
    for gpx, offset, error in ((tmp_path / "nope.gpx", "", "nope.gpx: no such folder or file"),
                               (tmp_path / "track.gpx", "CEST", "time offset 'CEST'"),
                               ("/etc/passwd", "", "outside the data roots")):
        at = page("views/data.py", tiny_run)
        at.text_input[0].set_value(str(tiny_run))
        at.text_input[1].set_value("trip")
        at.text_input[2].set_value(str(gpx))
        at.text_input[3].set_value(offset)
        at.button[0].click().run()
        assert not at.exception and error in at.error[0].value and not at.success


CONTROLS = ("Start a new fine-tuning run", "Ingest, embed and cut regions", "Stop", "Resume from the last checkpoint",
            "Take it out of the queue")


def _ana_running_and_waiting(tiny_run: Path, monkeypatch) -> tuple[FinetuneRun, FinetuneRun]:
    """Two fine-tuning jobs ana started on a server that runs one job at a time: the first runs, the second waits."""
    monkeypatch.setenv("GEOLOC_MAX_JOBS", "1")
    access.server_config.cache_clear()
    run = Run(tiny_run)
    return (jobs.start_finetune(run, FinetuneConfig(rounds=1, epochs=1), user="ana"),
            jobs.start_finetune(run, FinetuneConfig(rounds=1, epochs=1), user="ana"))


def _controls(at: AppTest) -> set[str]:
    return {b.label for b in at.button if any(b.label.startswith(c) for c in CONTROLS) or "out of the queue" in b.label}


def test_viewer_mode_shows_runs_and_jobs_but_no_control_that_starts_stops_or_deletes_work(tiny_run, sleeper_jobs,
                                                                                          monkeypatch):
    running, waiting = _ana_running_and_waiting(tiny_run, monkeypatch)
    assert running.state() == "running" and waiting.state() == "queued"
    editor_pages = {p: page(f"views/{p}.py", tiny_run, user="ana") for p in ("train", "data")}
    assert {"Start a new fine-tuning run", "Take it out of the queue",
            f"Take {waiting.root.name} out of the queue"} <= \
        _controls(editor_pages["train"])  # the watched one is the newest: the waiting job
    assert "Ingest, embed and cut regions" in _controls(editor_pages["data"])
    monkeypatch.setenv("GEOLOC_MODE", "viewer")
    access.server_config.cache_clear()
    for name in ("predict", "regions", "train", "evaluate", "data"):
        at = page(f"views/{name}.py", tiny_run)
        assert not at.exception and not _controls(at), (name, _controls(at))
        if name == "train":
            at.selectbox[-1].set_value(str(running.root)).run()  # the running job, watched: its state, no Stop
            assert any("running" in m.value and "started by ana" in m.value for m in at.markdown) and not _controls(at)
            queue = at.dataframe[0].value
            assert queue["started by"].tolist() == ["ana", "ana"] and queue["place"].tolist()[1] == 1
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    app.session_state["run_dir"] = str(tiny_run)
    app.run()
    assert (not app.exception and any("Viewer mode" in c.value for c in app.sidebar.caption)
            and not app.sidebar.text_input)


def test_stopping_or_cancelling_another_persons_job_asks_first(tiny_run, sleeper_jobs, monkeypatch):
    running, waiting = _ana_running_and_waiting(tiny_run, monkeypatch)
    at = page("views/train.py", tiny_run, user="ana")  # ana takes her own waiting job out of the queue: no question
    [cancel] = [b for b in at.button if b.label == "Take it out of the queue"]
    cancel.click().run()
    assert not at.exception and any("out of the queue" in i.value for i in at.info)
    assert not waiting.root.exists() and jobqueue.get(jobqueue.job_of(waiting).id).state == "cancelled"
    at = page("views/train.py", tiny_run, user="ben")
    at.selectbox[-1].set_value(str(running.root)).run()
    [stop] = [b for b in at.button if b.label == "Stop"]
    stop.click().run()
    assert not at.exception and running.state() == "running"  # not yet: ben is asked first
    assert any("not your job: ana started it" in w.value for w in at.warning)
    [no] = [b for b in at.button if b.label == "No, leave it"]
    no.click().run()
    assert running.state() == "running" and not at.warning
    [stop] = [b for b in at.button if b.label == "Stop"]
    stop.click().run()
    [yes] = [b for b in at.button if b.label == "Yes, stop"]
    yes.click().run()
    assert not at.exception and any("to stop" in i.value for i in at.info)
    assert _wait(running, 30) == "stopped"


@pytest.mark.slow  # a K-fold compare first
def test_evaluate_page_shows_intervals_and_verdicts_of_a_k_fold_compare(tiny_run):
    assert main(["compare", "--run", str(tiny_run), "--descriptors", "cls", "--folds", "3", "--k", "5"]) == 0
    at = page("views/evaluate.py", tiny_run)
    assert not at.exception
    tables = [d.value for d in at.dataframe]
    compare = next(t for t in tables if "method" in t and "regression (lat/lon MLP)" in set(t["method"]))
    assert compare["median_km"].str.match(r"[\d.e+-]+ \[[\d.e+-]+, [\d.e+-]+\]").all()  # each figure with its interval
    verdicts = next(t for t in tables if "verdict" in t)
    assert set(verdicts["verdict"]) <= {"better", "worse", "no detectable difference"} and len(verdicts) >= 4
    folds = next(t for t in tables if "within_radius" in t and "fold" in t)
    assert folds["fold"].tolist() == [0, 1, 2]
    [chart] = [c for c in at.get("plotly_chart") if "error_x" in c.proto.spec]  # the bars carry error bars


@pytest.mark.slow  # a K-fold experiment first
def test_evaluate_page_prefers_the_cross_validated_experiment_with_its_verdicts(tiny_run):
    cfg = FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")
    cross_validate(tiny_run, cfg, ("dt",), CrossValConfig(folds=3))
    at = page("views/evaluate.py", tiny_run)
    assert not at.exception and any("3-fold" in s.value for s in at.subheader)
    table = at.dataframe[0].value
    assert table["acc"].str.match(r"[\d.e+-]+ \[[\d.e+-]+, [\d.e+-]+\]").all() and "FT1" in set(table["method"])
    verdicts = at.dataframe[1].value
    assert "dt FT1 vs dt w/o (cosine head)" in set(verdicts["comparison"])


@pytest.mark.slow  # a `geoloc regions` process
def test_a_page_missing_a_stage_offers_an_editor_to_queue_it_with_the_runs_settings(tiny_run):
    run = Run(tiny_run)
    run.record_config("regions", {**run.read_config()["regions"], "resolution": 2.0})  # a setting of the run's own
    for path in [*run.regions("dt").files, run.artefact("regions:dt")[1]]:
        path.unlink()
    at = page("views/regions.py", tiny_run, user="ana")
    assert not at.exception and "has no regions_dt.csv yet" in at.info[0].value.replace("\\", "")
    at.button(key="queue-regions").click().run()
    assert not at.exception and "`geoloc regions` started" in at.success[0].value
    [job] = jobqueue.all_jobs()
    assert job.user == "ana" and job.kind == "regions" and {"--resolution=2.0", "--graphs=dt"} <= set(job.argv)
    assert _wait(run, 300) == "done", run.log.read_text()[-2000:]
    assert run.is_current("regions:dt") and run.read_config()["regions"]["resolution"] == 2.0
    assert run.held_out("gg").exists()  # the other graphs' answers were left as they were (cut over dt alone)
    at = page("views/regions.py", tiny_run)
    assert not at.exception and "Regions table" in [e.label for e in at.expander]


def test_a_viewer_is_offered_no_stage_to_queue(tiny_run, monkeypatch):
    monkeypatch.setenv("GEOLOC_MODE", "viewer")
    access.server_config.cache_clear()
    for path in [*Run(tiny_run).regions("dt").files, Run(tiny_run).artefact("regions:dt")[1]]:
        path.unlink()
    at = page("views/regions.py", tiny_run)
    assert not at.exception and "has no regions_dt.csv yet" in at.info[0].value.replace("\\", "") and not at.button


def test_predict_page_names_each_prediction_its_neighbours_and_region_by_their_towns(tiny_run):
    """Issue 26: the answer read "45.37625, 13.71084 · Within 262.95 km ..." with no place. Location L15's photo
    (Osekovo) is in the page's database (it is a training photo of the tiny run) or held out; either way every shown
    answer and neighbour is named from its coordinates, the region by its photos' towns."""
    from geoloc_core.base.places import place_labels

    at = page("views/predict.py", tiny_run)
    at.multiselect[0].set_value(at.multiselect[0].options[:2]).run()
    assert not at.exception and len(at.subheader) == 2
    coords = [tuple(float(x) for x in m.value.split(", ")) for m in at.metric if m.label == "Predicted location"]
    expected = place_labels(np.array([c[0] for c in coords]), np.array([c[1] for c in coords]))[0]
    answers = [m.value.replace("\\", "") for m in at.markdown if "calibration photos" in m.value]
    assert len(answers) == 2 and all(a.startswith(f"**{e}** · within ") for a, e in zip(answers, expected))
    assert all(e.startswith("near ") and e.endswith(" km)") for e in expected)
    assert all("(HR) " in a.split("): ")[-1] or "(BA) " in a or "(SI) " in a for a in answers)  # the region's towns
    captions = [c.replace("\\", "") for i in at.image for c in i.captions if c.startswith("sim ")]
    assert len(captions) >= 2 and all(" km · near " in c for c in captions)


def test_forms_that_start_work_do_not_submit_on_enter(tiny_run):
    """Issue 26: Enter in the Train page's number fields queued a fine-tuning run each time. AppTest cannot press Enter
    (the browser submits a form on Enter, where the form's proto allows it); it checks that flag as the browser gets it,
    and that only the button starts the work."""
    train = page("views/train.py", tiny_run)
    data = page("views/data.py", tiny_run)
    assert not train.exception and not data.exception
    for at, form in ((train, "start"), (data, "new")):
        [block] = [f for f in at.get("form") if f.proto.form.form_id == form]
        assert block.proto.form.enter_to_submit is False, form
    train.number_input[0].set_value(1).run()  # a value typed, not sent: no run
    assert not Run(tiny_run).finetune_dirs() and not jobqueue.all_jobs()
