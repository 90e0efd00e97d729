"""Data roots and server settings: a path outside the roots, a symlink out of one or `..` is refused, in the app's
check and in the job it would start."""

import os
import time
from pathlib import Path

import pytest

from geoloc_core.cli import main
from geoloc_core.runs.folders import Run
from geoloc_core.server import access, jobs
from geoloc_core.server.access import Refused, load_server_config, resolve_source


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two data roots (one with a photo folder, one with a link that leaves it) and a folder outside both."""
    a, b, outside = tmp_path / "a", tmp_path / "b", tmp_path / "outside"
    (a / "survey").mkdir(parents=True)
    (a / "survey" / "manifest.csv").write_text("path,lat,lon\n")
    b.mkdir()
    outside.mkdir()
    (b / "escape").symlink_to(outside)
    (b / "to-a").symlink_to(a / "survey")  # a link to another root stays inside the roots
    return a, b, outside


def test_a_path_under_a_root_absolute_or_relative_to_a_root_is_resolved(roots):
    a, b, _ = roots
    allowed = [a.resolve(), b.resolve()]
    assert resolve_source(str(a / "survey"), allowed) == (a / "survey").resolve()
    assert resolve_source("survey", allowed) == (a / "survey").resolve()  # looked up under each root
    assert resolve_source("survey/manifest.csv", allowed) == (a / "survey" / "manifest.csv").resolve()
    assert resolve_source(str(b / "to-a"), allowed) == (a / "survey").resolve()


@pytest.mark.parametrize(("given", "why"), [
    ("{outside}", "outside the data roots"),
    ("/etc", "outside the data roots"),
    ("{b}/escape", "symbolic link"),  # a link inside a root that leads out
    ("escape", "symbolic link"),
    ("{a}/../outside", "'..' is not allowed"),
    ("../outside", "'..' is not allowed"),
    ("{a}/survey/..", "'..' is not allowed"),
    ("{a}/nothing-here", "no such folder"),
    ("", "no folder"),
])
def test_a_path_outside_the_roots_a_link_out_or_dotdot_is_refused(roots, given, why):
    a, b, outside = roots
    with pytest.raises(Refused, match=why):
        resolve_source(given.format(a=a, b=b, outside=outside), [a.resolve(), b.resolve()])


def test_settings_come_from_the_environment_over_the_config_file_over_the_defaults(tmp_path):
    file = tmp_path / "geoloc.toml"
    file.write_text('data_roots = ["/srv/photos"]\nmode = "viewer"\nmax_jobs = 3\n')
    cfg = load_server_config({"GEOLOC_CONFIG": str(file), "GEOLOC_MAX_JOBS": "5"})
    assert (cfg.data_roots, cfg.mode, cfg.max_jobs, cfg.runs) == (("/srv/photos",), "viewer", 5, "runs")
    cfg = load_server_config({"GEOLOC_CONFIG": str(tmp_path / "none.toml"),
                              "GEOLOC_DATA_ROOTS": os.pathsep.join(["/x", "/y"])})
    assert (cfg.data_roots == ("/x", "/y") and cfg.mode == "editor" and access.max_jobs(cfg)
            == max(1, os.cpu_count() // 2))
    assert access.state_dir(cfg) == Path("runs") / ".queue"
    with pytest.raises(ValueError, match="editor or viewer"):
        load_server_config({"GEOLOC_CONFIG": str(file), "GEOLOC_MODE": "admin"})


def test_the_command_line_checks_the_roots_only_where_they_are_configured(roots, tmp_path, monkeypatch):
    a, b, outside = roots
    run = tmp_path / "run"
    monkeypatch.setenv("GEOLOC_DATA_ROOTS", os.pathsep.join(map(str, (a, b))))
    access.server_config.cache_clear()
    for source in (outside, b / "escape"):
        assert main(["run", str(source), "--run", str(run)]) == 2  # refused before anything is read
        status = Run(run).read_status()
        assert status["state"] == "failed" and "data roots" in status["error"], status
    assert not Run(run).photos.exists()
    monkeypatch.delenv("GEOLOC_DATA_ROOTS")
    access.server_config.cache_clear()
    assert access.check_source(outside) == outside  # a shell user's own machine: no roots, no check


@pytest.mark.slow  # a job process (imports torch)
def test_the_job_the_app_starts_refuses_a_path_outside_the_apps_roots_itself(tmp_path, manifest_folder):
    """The page checks first; the job checks again with the roots the app has (here the defaults, which leave out
    the test's temporary folder), so a path that slipped past a page is refused in the job too."""
    assert not any(manifest_folder.resolve().is_relative_to(r) for r in access.data_roots())
    run = Run(tmp_path / "runs" / "sneaky")
    jobs.start_run(run, str(manifest_folder))
    deadline = time.time() + 120
    while run.state() in ("queued", "running") and time.time() < deadline:
        time.sleep(0.3)
    status = run.read_status()
    assert status["state"] == "failed" and "outside the data roots" in status["error"], run.log.read_text()[-2000:]
    assert not run.photos.exists()


def test_a_server_with_no_data_roots_passes_no_roots_to_its_jobs_not_no_check(tmp_path):
    """`data_roots = []` (nowhere allowed) reaches the job as an empty GEOLOC_DATA_ROOTS,
    which must still mean nowhere."""
    file = tmp_path / "geoloc.toml"
    file.write_text("data_roots = []\n")
    cfg = load_server_config({"GEOLOC_CONFIG": str(file)})
    env = access.job_environment(cfg)
    job_cfg = load_server_config({"GEOLOC_CONFIG": str(tmp_path / "none.toml"), **env})
    assert job_cfg.data_roots == ()
    with pytest.raises(Refused, match="outside the data roots"):
        access.check_source(tmp_path, job_cfg)


def test_a_server_with_no_data_roots_refuses_a_relative_path_instead_of_crashing():
    with pytest.raises(access.Refused, match="no data roots"):
        access.resolve_source("croatia-streetview", [])
