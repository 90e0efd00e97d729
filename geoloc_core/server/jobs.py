"""Background jobs: a run or a fine-tuning run as its own process, queued, started, resumed and stopped from the app.

Every job goes through the server's one queue (`jobqueue.submit`): it starts at once where a slot is free, else it
waits its turn. The job writes its own state (`Folder.write_status`); this module builds its command, queues it, and
stops it.
"""

from __future__ import annotations

import getpass
import os
import signal
from dataclasses import replace

from geoloc_core.config import FinetuneConfig, PredictConfig, PredictorConfig, config_argv
from geoloc_core.learn.finetune import is_finished
from geoloc_core.runs.folders import FinetuneRun, Folder, Run
from geoloc_core.server import jobqueue
from geoloc_core.server.jobqueue import Job


def default_user() -> str:
    """Who starts a job when no page says (a script, a test): the login name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def start_run(run: Run, source: str, user: str | None = None, gpx: str | None = None, time_offset: str | None = None,
              replace: bool = False) -> Job:
    """Ingest, embed and cut regions for the photos at `source` into `run` (`geoloc run`), through the queue, placing
    photos without GPS on the `gpx` track if one is given; a finished run is built again only with `replace`
    (`jobqueue.Occupied` otherwise, and always while the run is queued or running)."""
    created = not run.root.exists()
    track = [f"--gpx={gpx}"] + ([f"--time-offset={time_offset}"] if time_offset else []) if gpx else []
    return jobqueue.submit("run", run, ["run", "--run", str(run.root.resolve()), *track, "--", str(source)],
                           user or default_user(), created, replace=replace)


STAGES = {"embed": "embed", "graph": "graph", "regions": "regions", "evaluate": "eval"}  # stage -> its config section


def start_stage(run: Run, stage: str, user: str | None = None, graph: str | None = None) -> Job:
    """`geoloc STAGE --run RUN` with the run's own recorded settings, through the queue: the one stage a page lacks
    (`graph`: regions or evaluate over that graph alone, so the others' results stay). A run's photos are not ingested
    here (that needs the data folder: `start_run`); refused (`jobqueue.Occupied`) while the run's job is queued or
    running."""
    if stage not in STAGES:
        raise ValueError(f"a page queues only the stages after ingest ({', '.join(STAGES)}), not {stage!r}")
    recorded = getattr(run.pipeline_config(), STAGES[stage])
    only = [f"--graphs={graph}"] if graph and stage in ("regions", "evaluate") else []
    return jobqueue.submit(stage, run, [stage, "--run", str(run.root.resolve()), *only, *config_argv(recorded)],
                           user or default_user(), replace=True)


def start_predictor(run: Run, cfg: PredictConfig, user: str | None = None) -> Job:
    """`geoloc predictor` for the app's settings `cfg` (its database without the held-out locations), through the queue:
    the page that lacks it never builds it in its own thread. Refused (`jobqueue.Occupied`) while the run's job is
    queued or running."""
    argv = [*config_argv(cfg.predictor), *config_argv(replace(cfg, predictor=PredictorConfig()))]
    return jobqueue.submit("predictor", run, ["predictor", "--run", str(run.root.resolve()), "--database=train", *argv],
                           user or default_user(), replace=True)


def start_coverage(run: Run, user: str | None = None) -> Job:
    """`geoloc coverage` over the run, through the queue: its leave-location-out pass over every photo, kept in the run
    for the coverage map (a page never runs it in its own thread). Refused (`jobqueue.Occupied`) while the run's job is
    queued or running."""
    return jobqueue.submit("coverage", run, ["coverage", "--run", str(run.root.resolve()), "--errors=loo"],
                           user or default_user(), replace=True)


def start_finetune(run: Run, cfg: FinetuneConfig, user: str | None = None) -> FinetuneRun:
    """A new fine-tuning run over `cfg.graph` in a folder of its own (never an earlier run's), through the queue."""
    with jobqueue.locked():  # two sessions asking at once get two folders
        ft = run.new_finetune(cfg.graph)
        ft.root.mkdir(parents=True)
    jobqueue.submit("finetune", ft,
                    ["finetune", "--run", str(run.root.resolve()), "--out", str(ft.root.resolve()), *config_argv(cfg)],
                    user or default_user(), created=True)
    return ft


def can_resume(ft: FinetuneRun) -> bool:
    """A fine-tuning run that stopped or failed before its last round (not one running, nor one that never said)."""
    return ft.last_checkpoint.exists() and ft.state() in ("stopped", "failed") and not is_finished(ft)


def resume_finetune(ft: FinetuneRun, user: str | None = None) -> Job:
    """Continue a stopped or failed fine-tuning run with the settings it was started with, through the queue."""
    if not can_resume(ft):
        raise ValueError(f"{ft.root} has nothing to resume (state: {ft.state()})")
    return jobqueue.submit("resume", ft, ["resume", str(ft.root.resolve())], user or default_user(),
                           replace=True)  # it goes on with the folder's work: nothing is replaced


def stop(folder: Folder) -> str:
    """Stop the folder's job, whoever started it: take it out of the queue if it is waiting, else signal its process;
    returns what happened, in words (never raises)."""
    status = folder.read_status()
    if status is not None and folder.state() == "queued":
        job = jobqueue.job_of(folder)
        if job is not None and jobqueue.cancel(job):
            return f"Took {folder.root.name} out of the queue."
        status = folder.read_status()  # it started meanwhile
    if status is None or folder.state() != "running":
        return f"{folder.root.name} is not running."
    pid = int(status["pid"])
    if not jobqueue.is_geoloc(pid):
        return f"Process {pid} is no longer {folder.root.name}'s job; nothing was stopped."
    try:
        if os.getsid(pid) == pid:  # it leads its own session (started by the app): stop its workers with it
            os.killpg(pid, signal.SIGTERM)
        else:  # started from a shell, say: stop that process alone
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"{folder.root.name} had already ended."
    except PermissionError:
        return f"Process {pid} belongs to another user; stop it there."
    return f"Asked {folder.root.name} (process {pid}) to stop."
