"""Background jobs: stopped whoever started them, never a stranger's process, and never a zombie
taken for a live job."""

import subprocess
import sys
import time

from geoloc_core.runs.folders import Folder
from geoloc_core.server import jobs

SLEEPER = "import geoloc_core, time; time.sleep(60)"  # a geoloc process, as a CLI job is


def _running(folder: Folder, proc: subprocess.Popen) -> Folder:
    folder.write_status("running", pid=proc.pid)
    return folder


def test_stop_stops_a_job_that_does_not_lead_its_own_session(tmp_path):
    """A run started from a shell and re-attached by the app: killpg on its pid raised (no such group)."""
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER])  # same session and group as this test
    folder = _running(Folder(tmp_path), proc)
    assert folder.state() == "running"
    message = jobs.stop(folder)
    assert message.startswith("Asked") and proc.wait(timeout=20) != 0
    assert folder.state() == "stopped"


def test_stop_stops_a_session_leader_with_its_children(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER], start_new_session=True)
    folder = _running(Folder(tmp_path), proc)
    assert jobs.stop(folder).startswith("Asked") and proc.wait(timeout=20) != 0


def test_stop_says_why_it_did_nothing_and_never_raises(tmp_path):
    assert "not running" in jobs.stop(Folder(tmp_path / "never-started"))
    # a pid reused by another program
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = _running(Folder(tmp_path), stranger)
        assert "no longer" in jobs.stop(folder) and stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_killed_job_reads_as_stopped_even_before_anyone_reaps_it(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER])
    folder = _running(Folder(tmp_path), proc)
    proc.kill()
    time.sleep(0.5)  # dead, not yet waited for: a zombie that kill(pid, 0) still finds
    assert folder.state() == "stopped"
    proc.wait()
