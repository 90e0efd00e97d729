"""The job queue: at most the limit run, the rest wait in order and start as running jobs end, even with no app open."""

import os
import signal
import threading
import time

import pytest

from geoloc_core.base import storage
from geoloc_core.runs.folders import Folder
from geoloc_core.server import access, jobqueue


@pytest.fixture
def limit(monkeypatch):
    def set_limit(n: int) -> None:
        monkeypatch.setenv("GEOLOC_MAX_JOBS", str(n))
        access.server_config.cache_clear()
    return set_limit


def _ended(pid: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while storage.pid_alive(pid) and time.time() < deadline:
        time.sleep(0.1)


def test_the_queue_holds_the_third_job_until_one_ends(tmp_path, limit, sleeper_jobs):
    limit(2)
    folders = [Folder(tmp_path / f"job{i}") for i in range(3)]
    submitted = [jobqueue.submit("finetune", f, ["finetune"], user=f"user{i}") for i, f in enumerate(folders)]
    assert [j.state for j in submitted] == ["started", "started", "queued"]
    assert [f.state() for f in folders] == ["running", "running", "queued"]
    assert jobqueue.position(submitted[2]) == 1 and jobqueue.dispatch() == []  # no free slot: it keeps waiting
    third = jobqueue.job_of(folders[2])
    assert (third.user, third.kind) == ("user2", "finetune") and third.submitted <= time.time()
    os.killpg(submitted[0].pid, signal.SIGTERM)  # the first job ends
    _ended(submitted[0].pid)
    [started] = jobqueue.dispatch()  # what the page does on its next rerun
    assert started.id == third.id and folders[2].state() == "running" and jobqueue.waiting() == []
    assert jobqueue.get(submitted[0].id).state == "ended" and jobqueue.get(submitted[0].id).ended


def test_the_queue_survives_the_app_and_two_dispatchers_never_start_one_job_too_many(tmp_path, limit, sleeper_jobs):
    limit(2)
    for i in range(5):
        jobqueue.submit("run", Folder(tmp_path / f"job{i}"), ["run"], user="a")
    started = []
    threads = [threading.Thread(target=lambda: started.extend(jobqueue.dispatch())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert started == []  # the two slots were taken at submit time; nobody started a third
    records = jobqueue.all_jobs()  # read back from disk, as a restarted app would
    assert [j.state for j in records] == ["started", "started", "queued", "queued", "queued"]
    assert [jobqueue.position(j) for j in records] == [None, None, 1, 2, 3]


def test_a_cancelled_job_leaves_the_line_and_gives_its_folder_back(tmp_path, limit, sleeper_jobs):
    limit(1)
    jobqueue.submit("run", Folder(tmp_path / "first"), ["run"], user="a")
    old = Folder(tmp_path / "old")
    old.write_status("stopped")
    made = jobqueue.submit("run", Folder(tmp_path / "new"), ["run"], user="b", created=True)
    resumed = jobqueue.submit("resume", old, ["resume"], user="b")
    assert old.state() == "queued" and jobqueue.position(resumed) == 2
    assert jobqueue.cancel(made) and jobqueue.cancel(resumed)
    assert not (tmp_path / "new").exists() and old.read_status()["state"] == "stopped"  # as it was before it was queued
    assert jobqueue.waiting() == [] and not jobqueue.cancel(made)


@pytest.mark.slow  # two real job processes (each imports the CLI)
def test_a_job_that_ends_starts_the_next_one_with_no_app_open(tmp_path, limit):
    """Two real `geoloc` jobs, one slot: the second is started by the first as it exits, not by any page."""
    limit(1)
    first = jobqueue.submit("run", Folder(tmp_path / "a"), ["show", "--run", str(tmp_path / "a")], user="a")
    second = jobqueue.submit("run", Folder(tmp_path / "b"), ["show", "--run", str(tmp_path / "b")], user="a")
    assert (first.state, second.state) == ("started", "queued")
    deadline = time.time() + 120
    while jobqueue.get(second.id).state != "ended" and time.time() < deadline:  # nobody dispatches here
        time.sleep(0.5)
    done = jobqueue.get(second.id)
    assert done.state == "ended" and done.pid != first.pid, (Folder(tmp_path / "a").log.read_text(), done)
    assert jobqueue.get(first.id).state == "ended"
    assert "no recorded figures" in Folder(tmp_path / "b").log.read_text()  # it really ran, as its own job
