"""One queue for the server's background jobs: at most `access.max_jobs()` run at once, the rest wait in order, on disk.

A job is `python -m geoloc_core COMMAND ...` in a process session of its own, logging into its folder (a run, or a
fine-tuning folder). Each job is one JSON record in the queue folder (`access.state_dir()`), written atomically:

    {id, kind, folder, argv, user, submitted, state, pid, started, ended, created, previous}
    state: queued -> started -> ended, or queued -> cancelled

`submit` records a job (its folder says "queued" at once) and dispatches. `dispatch` marks started jobs whose process
is gone as ended and starts waiting ones, oldest first, while fewer than the limit are alive; it holds an exclusive
lock on the queue folder (`fcntl.flock`), so two sessions, or a page and a job that has just ended, never start the
same job or one too many. Pages dispatch on every rerun, and every queued job dispatches as it ends (`job_ended`,
called by `cli.main`), so the queue moves on with no app open. Records and processes outlive the app.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from geoloc_core.base import storage
from geoloc_core.config import PROJECT_DIR
from geoloc_core.runs.folders import Folder
from geoloc_core.server import access

log = logging.getLogger(__name__)

JOB_COMMAND = (sys.executable, "-m", "geoloc_core")  # what a job's argv is given to
KEEP_FINISHED_S = 30 * 24 * 3600  # records of ended and cancelled jobs are kept this long


@dataclass(frozen=True)
class Job:
    """One job of the queue, as its record says."""

    id: str  # sortable: submission order
    kind: str  # run / finetune / resume, or a stage a page queued (embed / graph / regions / evaluate / predictor /
    # coverage)
    folder: str  # the job's folder, absolute
    argv: tuple[str, ...]
    user: str  # who started it: the session's label or the name the user gave
    submitted: float
    state: str = "queued"  # queued / started / ended / cancelled
    pid: int | None = None
    started: float | None = None
    ended: float | None = None
    created: bool = False  # the folder was made for this job (a cancelled job takes it away again)
    previous: dict | None = None  # the folder's status before it was queued (put back when the job is cancelled)

    @property
    def name(self) -> str:
        """The name of the job's folder."""
        return Path(self.folder).name


# the queue folder ----------------------------------------------------------------------------------

def _records(cfg=None) -> Path:
    return access.state_dir(cfg) / "jobs"


def _record(job_id: str, cfg=None) -> Path:
    return _records(cfg) / f"{job_id}.json"


@contextlib.contextmanager
def locked(cfg=None) -> Iterator[None]:
    """The queue's exclusive lock (released by the kernel if the holder dies)."""
    folder = access.state_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write(job: Job, cfg=None) -> Job:
    storage.write_json(_record(job.id, cfg), dataclasses.asdict(job))
    return job


def _read(path: Path) -> Job | None:
    try:
        data = storage.read_json(path)
        return Job(**{**data, "argv": tuple(data["argv"])})
    except (OSError, ValueError, TypeError, KeyError):  # a foreign or damaged file is no job
        return None


def all_jobs(cfg=None) -> list[Job]:
    """Every recorded job, oldest first."""
    return [j for p in sorted(_records(cfg).glob("*.json")) if (j := _read(p)) is not None]


def get(job_id: str, cfg=None) -> Job | None:
    """The job with this id, as its record says; None if there is none."""
    return _read(_record(job_id, cfg))


def waiting(cfg=None) -> list[Job]:
    """The queued jobs in the order they will start."""
    return [j for j in all_jobs(cfg) if j.state == "queued"]


def active(cfg=None) -> list[Job]:
    """Jobs running (started, process alive) and waiting, in submission order."""
    return [j for j in all_jobs(cfg) if j.state == "queued" or (j.state == "started" and _alive(j))]


def position(job: Job, cfg=None) -> int | None:
    """A queued job's place in line (1: next to start), else None."""
    ids = [j.id for j in waiting(cfg)]
    return ids.index(job.id) + 1 if job.id in ids else None


def job_of(folder: Folder | Path, cfg=None) -> Job | None:
    """The latest job recorded for a folder (who started it, and when), or None (a job started from a shell)."""
    root = str(Path(getattr(folder, "root", folder)).resolve())
    return next((j for j in reversed(all_jobs(cfg)) if j.folder == root), None)


# submitting, dispatching, cancelling -------------------------------------------------------------

class Occupied(access.Refused):
    """A folder whose job is queued or running, or whose finished work a new job would replace unasked (`replaceable`:
    building it again with `replace` is what the user may be asked)."""

    def __init__(self, message: str, replaceable: bool = False):
        super().__init__(message)
        self.replaceable = replaceable


def submit(kind: str, folder: Folder, argv: list[str], user: str, created: bool = False, cfg=None,
           replace: bool = False) -> Job:
    """Queue `geoloc argv` for `folder` (its status says "queued" at once) and start it if a slot is free.

    Decided under the queue's lock, so two sessions never queue two jobs into one folder: raises `Occupied` where the
    folder's job is queued or running, or, unless `replace`, where it holds finished work (the message names who built
    it and when, for the question a page asks before replacing it)."""
    with locked(cfg):
        state = folder.state()
        if state in ("queued", "running"):
            raise Occupied(f"{folder.root.name} is being built already ({state}).")
        finished = state == "done" or (state in ("failed", "stopped") and folder.holds_work())
        if finished and not replace:  # a later stage that failed leaves the run's finished work: still asked
            raise Occupied(f"{folder.root.name} is already built{_built_by(folder, cfg)}; building it again replaces "
                           "every result in it (a new split: its predictors, comparisons and fine-tuning runs go "
                           "stale).", replaceable=True)
        job = Job(id=f"{time.time_ns():020d}-{secrets.token_hex(3)}", kind=kind, folder=str(folder.root.resolve()),
                  argv=tuple(argv), user=user, submitted=time.time(), created=created, previous=folder.read_status())
        folder.root.mkdir(parents=True, exist_ok=True)
        _write(job, cfg)
        folder.write_status("queued", job=job.id, user=user)
        _dispatch(cfg)
    return get(job.id, cfg) or job


def _built_by(folder: Folder, cfg=None) -> str:
    """" (by ana, 2026-11-23 14:02)": who queued the folder's last job and when it finished,
    as far as the records say."""
    job, status = job_of(folder, cfg), folder.read_status() or {}
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(status["time"])) if "time" in status else None
    who = f"by {job.user}" if job is not None else "from a shell"
    return f" ({who}{', ' + when if when else ''})"


def dispatch(cfg=None) -> list[Job]:
    """Close jobs whose process has ended and start waiting ones while fewer than the limit run;
    returns those started."""
    with locked(cfg):
        return _dispatch(cfg)


def _dispatch(cfg=None) -> list[Job]:
    now, running, queued = time.time(), 0, []
    for job in all_jobs(cfg):
        if job.state == "started" and not _alive(job):
            _write(dataclasses.replace(job, state="ended", ended=now), cfg)
        elif job.state == "started":
            running += 1
        elif job.state == "queued":
            queued.append(job)
        elif job.ended and now - job.ended > KEEP_FINISHED_S:
            _record(job.id, cfg).unlink(missing_ok=True)
    started = []
    for job in queued[:max(0, access.max_jobs(cfg) - running)]:
        try:
            pid = spawn(Folder(job.folder), list(job.argv), job.id, cfg)
        except OSError as exc:  # the folder went away, say: the job fails, the queue goes on
            Folder(job.folder).write_status("failed", error=f"could not start: {exc}")
            _write(dataclasses.replace(job, state="ended", ended=now), cfg)
            continue
        started.append(_write(dataclasses.replace(job, state="started", pid=pid, started=time.time()), cfg))
    return started


def cancel(job: Job, cfg=None) -> bool:
    """Take a queued job out of the queue (its folder as it was before, or gone if it was made for the job); False if it
    has started meanwhile (stop it instead)."""
    with locked(cfg):
        current = get(job.id, cfg)
        if current is None or current.state != "queued":
            return False
        _write(dataclasses.replace(current, state="cancelled", ended=time.time()), cfg)
        folder = Folder(current.folder)
        if current.previous is not None:
            storage.write_json(folder.status, current.previous)
        else:
            folder.status.unlink(missing_ok=True)
        if current.created:
            with contextlib.suppress(OSError):  # only an empty folder goes
                folder.root.rmdir()
        return True


def job_ended() -> None:
    """Called by every job process as it ends (`cli.main`): close its own record and start the next waiting job.
    Nothing happens in a process the queue did not start; nothing here raises."""
    job_id = os.environ.get("GEOLOC_JOB_ID")
    if not job_id:
        return
    try:
        with locked():
            job = get(job_id)
            if job is not None and job.pid == os.getpid() and job.state == "started":
                _write(dataclasses.replace(job, state="ended", ended=time.time()))
            _dispatch()
    except Exception:  # noqa: BLE001 - a job's own result must not depend on the queue's bookkeeping
        log.exception("could not dispatch the next queued job")


# processes ---------------------------------------------------------------------------------------

def spawn(folder: Folder, argv: list[str], job_id: str | None = None, cfg=None) -> int:
    """Start `geoloc argv` as its own process session, logging to the folder's log; returns its pid.

    The job sees the server's settings as the app does, nothing else of the server's environment
    (`access.job_environment`), and its own id; its folder says "running" at once (so a page shows it before the child
    has even imported torch)."""
    folder.root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    env = {**access.job_environment(cfg), **({"GEOLOC_JOB_ID": job_id} if job_id else {})}
    with open(folder.log, "ab") as log_file:  # the child keeps its own handle
        proc = subprocess.Popen([*JOB_COMMAND, *argv], stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=PROJECT_DIR, env=env)
    status = folder.read_status()
    if status is None or status.get("time", 0) < started:  # unless the child already said something itself
        folder.write_status("running", pid=proc.pid, **({"job": job_id} if job_id else {}))
    threading.Thread(target=proc.wait, name=f"reap {proc.pid}", daemon=True).start()  # no zombie that looks alive
    return proc.pid


def _alive(job: Job) -> bool:
    return job.pid is not None and storage.pid_alive(job.pid) and is_geoloc(job.pid)


def is_geoloc(pid: int) -> bool:
    """Whether `pid` still runs geoloc (a recycled pid of another program must not be signalled, nor counted)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: trust the status file
        return True
    return b"geoloc_core" in cmdline or b"bin/geoloc\0" in cmdline

