"""Safe by default on a team server (issue 27): local by default, no home folder, nothing executable in what is shared.

Each test names the attack that worked before its fix."""

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import LOGIN_PASSWORDS, log_in, open_app
from geoloc_core.base import storage
from geoloc_core.cli import main
from geoloc_core.locate.predict import read_predictions
from geoloc_core.runs.folders import Folder, Run
from geoloc_core.server import access, jobqueue, jobs
from geoloc_core.share.maps import prediction_map, standalone_html

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>.jpg"


def test_the_default_data_roots_never_hold_a_home_folder():
    roots = access.data_roots()  # before: ../shared/data and Path.home(): a visitor could ingest and browse ~
    assert Path.home().resolve() not in roots and all(not Path.home().resolve().is_relative_to(r) for r in roots)


def test_main_serves_on_this_machine_only_unless_a_server_config_says_otherwise():
    script = (REPO / "scripts" / "main.sh").read_text()
    assert 'ADDRESS=${GEOLOC_ADDRESS:-127.0.0.1}' in script  # before: every interface, Streamlit's "Network URL"
    assert re.search(r'streamlit run app\.py --server\.address "\$ADDRESS"', script)
    assert "needs a server config" in script and "exit 2" in script


def _predictions(path: str) -> pd.DataFrame:
    neighbours = json.dumps([{"path": path, "lat_deg": 45.1, "lon_deg": 15.1, "similarity": 0.9, "dist_km": 1.0}])
    return pd.DataFrame([{"path": path, "lat_deg": 45.0, "lon_deg": 15.0, "radius_km": 2.0, "coverage": 0.9,
                          "region": 1,
                          "region_prob": 0.8, "true_lat_deg": 45.01, "true_lon_deg": 15.01, "error_km": 1.3,
                          "familiarity": 0.5, "unfamiliar": False, "region_agrees": True, "group": HOSTILE,
                          "neighbours": neighbours}])


def test_a_hostile_file_name_is_text_in_the_shared_html_map():
    page = standalone_html(prediction_map(_predictions(HOSTILE), tiles=False))
    # as the browser's JSON.parse
    decoded = page.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&")
    # before: this string went into GeoJsonPopup's innerHTML, and the image's onerror ran
    assert "<img src=x" not in decoded
    assert "&lt;img src=x onerror=alert(1)&gt;" in decoded  # shown, as text


def test_csv_exports_guard_formula_cells_and_read_back_unchanged(tmp_path):
    frame = _predictions('=HYPERLINK("http://x","open")').assign(group="@SUM(A1)")
    csv = storage.write_csv(tmp_path / "predictions.csv", frame, spreadsheet=True)
    cells = pd.read_csv(csv, dtype=str)
    assert cells.loc[0, "path"].startswith("'=") and cells.loc[0, "group"].startswith("'@")  # before: Excel ran them
    assert cells.loc[0, "lat_deg"] == "45.0"  # numbers stay numbers
    back = read_predictions(csv)
    assert back.loc[0, "path"] == frame.loc[0, "path"] and back.loc[0, "group"] == "@SUM(A1)"


def _tree(root: Path) -> dict[str, str]:
    """Every file under `root` with the SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.slow  # a tiny finished run, and the pages in AppTest
def test_a_viewer_changes_no_byte_of_the_run_through_the_predict_and_evaluate_pages(tiny_run, monkeypatch):
    monkeypatch.setenv("GEOLOC_MODE", "viewer")
    access.server_config.cache_clear()
    before = _tree(tiny_run)
    at = AppTest.from_file(str(REPO / "views" / "predict.py"), default_timeout=120)
    at.session_state["run_dir"] = str(tiny_run)
    at.run()
    # test-time augmentations: a predictor (and a pass of mirror images) to build
    at.sidebar.selectbox[-1].set_value("flip").run()
    at.multiselect[0].set_value(at.multiselect[0].options[:1]).run()
    assert not at.exception
    assert any("not built yet" in i.value for i in at.info)  # before: built and saved it, re-embedding every photo
    at = AppTest.from_file(str(REPO / "views" / "evaluate.py"), default_timeout=120)
    at.session_state["run_dir"] = str(tiny_run)
    at.run()
    assert not at.exception and any("Not built yet" in i.value for i in at.info)  # before: a leave-location-out pass
    assert _tree(tiny_run) == before


def test_a_finished_run_is_not_built_again_unasked_and_the_queue_decides_under_its_lock(tmp_path, sleeper_jobs,
                                                                                        monkeypatch):
    monkeypatch.setattr(access, "max_jobs", lambda cfg=None: 0)  # nothing starts: the folders stay queued
    done = Folder(tmp_path / "runs" / "survey")
    done.write_status("done")
    with pytest.raises(jobqueue.Occupied, match=r"survey is already built \(from a shell, \d{4}-\d\d-\d\d"):
        jobs.start_run(Run(done.root), str(tmp_path), user="ben")  # before: queued at once, every result went stale
    assert jobqueue.all_jobs() == [] and done.state() == "done"
    (done.root / "photos.provenance.json").write_text("{}")  # its finished work, as the stages record it
    done.write_status("failed")  # a later stage (`geoloc evaluate`, say) failed on it: its work is still there
    with pytest.raises(jobqueue.Occupied, match="survey is already built") as asked:
        jobs.start_run(Run(done.root), str(tmp_path), user="ben")
    assert asked.value.replaceable  # what the Data page offers to build again
    job = jobs.start_run(Run(done.root), str(tmp_path), user="ben", replace=True)  # once ben has said yes
    assert job.state == "queued" and done.state() == "queued"
    with pytest.raises(jobqueue.Occupied, match="being built already") as busy:
        jobs.start_run(Run(done.root), str(tmp_path), user="ana", replace=True)
    assert not busy.value.replaceable
    fresh = Run(tmp_path / "runs" / "fresh")
    with ThreadPoolExecutor(4) as pool:  # four sessions asking at once: one job, three refusals
        outcomes = list(pool.map(lambda user: _try(lambda: jobs.start_run(fresh, str(tmp_path), user=user)), "abcd"))
    assert sum(isinstance(o, jobqueue.Job) for o in outcomes) == 1  # before: the check sat outside the lock
    assert len([j for j in jobqueue.all_jobs() if j.folder == str(fresh.root.resolve())]) == 1


def _try(start):
    try:
        return start()
    except jobqueue.Occupied as exc:
        return exc


@pytest.mark.slow  # a tiny finished run, and the Data page in AppTest
@pytest.mark.parametrize("state", ["done", "failed"])  # failed: a later stage failed on it, its work still there
def test_the_data_page_asks_before_building_a_finished_run_again(tiny_run, manifest_folder, sleeper_jobs, monkeypatch,
                                                                 state):
    Run(tiny_run).write_status(state)
    monkeypatch.setenv("GEOLOC_DATA_ROOTS", str(manifest_folder.parent))
    monkeypatch.setenv("GEOLOC_RUNS", str(tiny_run.parent))
    access.server_config.cache_clear()
    before = _tree(tiny_run)
    at = AppTest.from_file(str(REPO / "views" / "data.py"), default_timeout=120)
    at.session_state["run_dir"] = str(tiny_run)
    at.run()
    at.text_input[0].set_value(manifest_folder.name)
    at.text_input[1].set_value(tiny_run.name)
    at.button[0].click().run()
    assert not at.exception and any("already built" in w.value for w in at.warning)  # before: queued with no question
    assert jobqueue.all_jobs() == [] and _tree(tiny_run) == before
    [no] = [b for b in at.button if b.label == "No, keep it"]
    no.click().run()
    assert jobqueue.all_jobs() == [] and not at.warning
    at.button[0].click().run()
    [yes] = [b for b in at.button if b.label.startswith("Yes, build")]
    yes.click().run()
    assert not at.exception and [j.user for j in jobqueue.all_jobs()] == [at.session_state["session_label"]]


@pytest.mark.slow  # a tiny finished run, its predictor built by an editor, then the Predict page as a viewer
def test_a_viewer_uses_a_predictor_an_editor_built_and_still_writes_nothing(tiny_run, monkeypatch):
    from geoloc_core.config import PredictConfig
    from geoloc_core.locate.store import open_predictor

    open_predictor(tiny_run, PredictConfig(device="cpu"), database="train")  # the editor's build, default settings
    monkeypatch.setenv("GEOLOC_MODE", "viewer")
    access.server_config.cache_clear()
    before = _tree(tiny_run)
    at = AppTest.from_file(str(REPO / "views" / "predict.py"), default_timeout=120)
    at.session_state["run_dir"] = str(tiny_run)
    at.run()
    at.multiselect[0].set_value(at.multiselect[0].options[:1]).run()  # a held-out photo, test-time augmentations "none"
    assert not at.exception
    assert not any("not built yet" in i.value for i in at.info)  # the saved, current predictor answers
    assert _tree(tiny_run) == before


START = "Ingest, embed and cut regions"  # the Data page's control that starts work


def _starts_work(at) -> bool:
    return any(b.label == START for b in at.main.button)


def test_typing_another_editors_name_names_nobody_on_a_server_with_logins(login_server, manifest_folder):
    at = open_app()
    at.session_state["user"] = "ana"  # what the sidebar's "Your name" field held: before, the visitor was editor "ana"
    at.run()
    assert not at.exception and not _starts_work(at)
    log_in(at, "ben", LOGIN_PASSWORDS["ben"])
    at.session_state["user"] = "ana"
    at.main.text_input[0].set_value(manifest_folder.name)
    at.main.text_input[1].set_value("survey")
    [go] = [b for b in at.main.button if b.label == START]
    go.click().run()
    assert not at.exception and [j.user for j in jobqueue.all_jobs()] == ["ben"]  # before: "ana", as typed


def test_guessing_passwords_is_refused_for_a_cooldown_even_with_the_right_one(login_server, login_clock):
    at = open_app()
    for guess in range(5):
        log_in(at, "ana", f"guess number {guess}")
        assert "Wrong username or password." in at.sidebar.error[0].value
    log_in(at, "ana", LOGIN_PASSWORDS["ana"])  # the sixth attempt, right: refused all the same
    refusal = at.sidebar.error[0].value
    assert "Too many wrong passwords" in refusal and "try again in 15 min" in refusal and not _starts_work(at)
    reloaded = log_in(open_app(), "ana", LOGIN_PASSWORDS["ana"])  # a reload is a new session: the username still waits
    assert "Too many wrong passwords" in reloaded.sidebar.error[0].value and not _starts_work(reloaded)
    assert _starts_work(log_in(open_app(), "ben", LOGIN_PASSWORDS["ben"]))  # another editor is not locked out
    spraying = open_app()  # one session, one guess for each of many usernames
    for user in ("carl", "dora", "emil", "fran", "goran"):
        log_in(spraying, user, "correct horse 1")
    log_in(spraying, "ben", LOGIN_PASSWORDS["ben"])
    assert "Too many wrong passwords" in spraying.sidebar.error[0].value and not _starts_work(spraying)
    login_clock.t += 15 * 60  # the cool-down has passed
    assert _starts_work(log_in(open_app(), "ana", LOGIN_PASSWORDS["ana"]))


def test_an_editor_server_is_not_served_to_a_network_without_logins(login_server, monkeypatch, caplog):
    script = (REPO / "scripts" / "main.sh").read_text()
    assert "geoloc logins check --network" in script  # main.sh asks before it serves to a network
    assert main(["logins", "check", "--network"]) == 0  # logins: served
    monkeypatch.delenv("GEOLOC_LOGINS")
    access.server_config.cache_clear()
    assert main(["logins", "check", "--network"]) == 2 and "needs logins" in caplog.text  # before: served, no login
    assert main(["logins", "check"]) == 0  # this machine only: one analyst's laptop, as before
    monkeypatch.setenv("GEOLOC_MODE", "viewer")
    access.server_config.cache_clear()
    assert main(["logins", "check", "--network"]) == 0  # everyone a viewer: nothing to log in to
    monkeypatch.setenv("GEOLOC_MODE", "editor")
    monkeypatch.setenv("GEOLOC_LOGINS", str(login_server))
    monkeypatch.setenv("GEOLOC_COOKIE_KEY", "short")
    access.server_config.cache_clear()
    assert main(["logins", "check", "--network"]) == 2 and "cookie_key is 5 characters" in caplog.text
