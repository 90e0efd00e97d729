"""What every page shares: the run being looked at and cached loaders over its artefacts (read through `runs.Run`)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image
from streamlit.runtime.scriptrunner import get_script_run_ctx

from geoloc_core.base.images import thumbnail_uri, upright
from geoloc_core.base.places import region_places
from geoloc_core.config import PredictConfig
from geoloc_core.features.embed import TTA_AUGMENTATIONS
from geoloc_core.locate.store import open_predictor, predictor_inputs, predictor_store, predictor_version
from geoloc_core.regions.boundaries import ClipArea, boundary_area
from geoloc_core.runs import provenance
from geoloc_core.runs.folders import Folder, RegionFiles, Run, fingerprint
from geoloc_core.runs.provenance import Stale
from geoloc_core.server import access, jobqueue, jobs
from views import figures, login


def choose_run() -> None:
    """Sidebar: pick a run folder (one `geoloc run` made); remembered in the session. Editors log in where the server
    has logins, else may give their name."""
    if access.is_viewer():
        st.sidebar.caption("Viewer mode: runs, regions, predictions and metrics; nothing can be started or stopped "
                           "here.")
    elif login.enabled():
        login.login_box()
    else:
        user_label()  # the session's own label, until the user gives a name
        st.sidebar.text_input("Your name", key="user", placeholder=st.session_state["session_label"],
                              help="shown on the jobs you start")
    found = sorted(str(p) for p in access.runs_dir().glob("*") if Run(p).photos.exists())
    default = os.environ.get("GEOLOC_RUN")
    options = ([default] if default and default not in found else []) + found
    if not options:
        st.sidebar.warning("No run yet: `.venv/bin/geoloc run` builds one from ../shared/data/croatia-streetview.")
        st.session_state["run_dir"] = None
        return
    st.session_state["run_dir"] = st.sidebar.selectbox("Run", options,
                                                       index=options.index(default) if default in options else 0)


def editor() -> bool:
    """Whether this session may start, stop and delete work: not on a viewer server (`GEOLOC_MODE=viewer`), and on a
    server with logins only once logged in (a visitor is a viewer)."""
    return not access.is_viewer() and (not login.enabled() or login.signed_in() is not None)


def user_label() -> str:
    """Who this session is: the logged-in username where the server has logins, else the name the user gave in the
    sidebar; a label of the session's own otherwise."""
    if "session_label" not in st.session_state:
        ctx = get_script_run_ctx()
        st.session_state["session_label"] = f"session {(ctx.session_id if ctx else os.urandom(3).hex())[:6]}"
    if login.enabled():  # typing a name names nobody here
        return login.signed_in() or st.session_state["session_label"]
    return (st.session_state.get("user") or "").strip() or st.session_state["session_label"]


def confirmed(action: str, folder: Folder, key: str | None = None) -> bool:
    """A button for `action` on a folder's job; True once clicked and, for another person's job (or one started from a
    shell), once the user has said yes to a second question. Never shown to viewers."""
    if not editor():
        return False
    job, key = jobqueue.job_of(folder), key or f"{action} {folder.root}"
    box = st.container()
    if st.session_state.get("confirm") == key:
        answer = _ask(box, action, folder, job, key)
        if answer is not None:
            return answer
    if not box.button(action, key=key):
        return False
    if job is not None and job.user == user_label():
        return True
    st.session_state["confirm"] = key
    return bool(_ask(box, action, folder, job, key))


def _ask(box, action: str, folder: Folder, job: jobqueue.Job | None, key: str) -> bool | None:
    """Yes (True), no (None: the question goes, the action's button comes back), or not answered yet (False)."""
    yes, no = box.columns(2)
    if yes.button(f"Yes, {action.lower()}", key=f"yes {key}", type="primary"):
        st.session_state.pop("confirm", None)
        return True
    if no.button("No, leave it", key=f"no {key}"):
        st.session_state.pop("confirm", None)
        return None
    started = (f"{job.user} started it at {time.strftime('%Y-%m-%d %H:%M', time.localtime(job.submitted))}" if job else
               "it was started outside this app")
    box.warning(plain(f"{folder.root.name} is not your job: {started}. {action}?"))
    return False


@st.fragment(run_every=3)
def job_queue() -> None:
    """The server's job queue (every 3 s), moved on first (ended jobs make room for waiting ones): what runs and what
    waits, who started each and when; an editor can take a waiting job out of the line."""
    jobqueue.dispatch()
    active = jobqueue.active()
    running = sum(j.state == "started" for j in active)
    st.caption(f"Job queue: {running} running ({access.max_jobs()} at once), {len(active) - running} waiting.")
    if not active:
        return
    waiting = [j for j in active if j.state == "queued"]
    st.dataframe(pd.DataFrame([{"place": waiting.index(j) + 1 if j in waiting else None, "job": j.name, "kind": j.kind,
                                "started by": j.user,
                                "queued at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.submitted)),
                                "state": "waiting" if j in waiting else "running"} for j in active]),
                 hide_index=True, width="stretch")
    for job in waiting:
        if confirmed(f"Take {job.name} out of the queue", Folder(job.folder)):
            st.info(jobs.stop(Folder(job.folder)))


def queue_place(folder: Folder) -> str:
    """Where a waiting folder's job is in the queue ("2nd in line"), else ""."""
    job = jobqueue.job_of(folder)
    place = jobqueue.position(job) if job is not None and job.state == "queued" else None
    return ("" if place is None
            else f"{place}{'th' if 10 <= place % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(place % 10, 'th')} in "
                 "line")


def current_run() -> Run | None:
    value = st.session_state.get("run_dir")
    return Run(Path(value)) if value else None


def missing_step(run: Run, *paths: Path) -> str | None:
    """What the run lacks of `paths` (its artefacts) and the command that builds it; None when it has them all."""
    return next((str(run.missing(p)) for p in paths if not p.exists()), None)


def require(run: Run, *paths: Path) -> None:
    """Stops the page with what the run lacks of `paths`, how to build it, and (for an editor) a button that queues
    it."""
    lacking = next((p for p in paths if not p.exists()), None)
    if lacking is not None:
        st.info(plain(run.missing(lacking) or f"{run.root.name} has no {lacking.name}"))
        offer_stage(run, run.made_by(lacking))
        st.stop()


def offer_stage(run: Run, stage: str | None, graph: str | None = None) -> None:
    """For an editor, a button that queues `geoloc STAGE` for the run (with its recorded settings; over `graph` alone
    where given), where the page lacks what that stage writes; the Data page follows the job. Ingest is not offered:
    it needs the photo folder."""
    if stage in jobs.STAGES and run.photos.exists():
        _queue_button(stage, "for this run", lambda: jobs.start_stage(run, stage, user_label(), graph))


def offer_predictor(run: Run, cfg: PredictConfig) -> None:
    """For an editor, a button that queues `geoloc predictor` for the settings `cfg`: building one takes minutes, a
    job's, never the page's."""
    _queue_button("predictor", "with these settings", lambda: jobs.start_predictor(run, cfg, user_label()))


def offer_coverage(run: Run) -> None:
    """For an editor, a button that queues `geoloc coverage`: every photo located by the others, kept in the run."""
    _queue_button("coverage", "for this run", lambda: jobs.start_coverage(run, user_label()))


def _queue_button(command: str, what: str, start: Callable[[], jobqueue.Job]) -> None:
    """An editor's button that queues `geoloc COMMAND` (`start`), and what became of it; nothing for a viewer."""
    if not editor() or not st.button(f"Build it: queue `geoloc {command}` {what}", key=f"queue-{command}"):
        return
    try:
        job = start()
    except jobqueue.Occupied as busy:
        st.warning(plain(busy))
    else:
        where = "started" if job.state == "started" else "queued behind other jobs"
        st.success(f"`geoloc {command}` {where}: the Data page shows its progress; open this page again once it is "
                   "done.")


def current_table(run: Run, files: list[Path]) -> bool:
    """Whether the table `files` may be shown; a stale one is named instead, with what changed and what to run."""
    why = run.stale_table(files)
    if why:
        st.warning(plain(f"{files[0].parent.name}/{files[0].name} is not shown: {why}"))
    return why is None


def run_with_graphs() -> tuple[Run, list[str]]:
    """The chosen run and the proximity graphs it has built; stops the page with a hint otherwise."""
    run = current_run()
    if run is None:
        st.stop()
    graphs = run.graphs()
    if not graphs:
        st.info("This run has no graphs yet: `geoloc run` (or `geoloc graph` and `geoloc regions`) makes them.")
        offer_stage(run, "graph" if run.embeddings.exists() else "embed")
        st.stop()
    return run, graphs


def photos(run: Run) -> pd.DataFrame:
    """The run's photos (path, lat_deg, lon_deg, group), read again when the run is re-ingested."""
    return _photos(run, fingerprint([run.photos]))


@st.cache_data(show_spinner=False)
def _photos(run: Run, version: str) -> pd.DataFrame:
    return run.photo_table().frame[["path", "lat_deg", "lon_deg", "group"]]


def predictor(run: Run, cfg: PredictConfig):
    """The run's predictor for `cfg`, shared by every session; loaded again when anything it depends on changes
    (photos, embeddings, the regions it labels with, a new fine-tuning round's classifier)."""
    return _predictor(run, cfg, predictor_version(run.root, cfg))


@st.cache_resource(show_spinner="Loading the predictor once for this run ...", max_entries=8)
def _predictor(run: Run, cfg: PredictConfig, version: str):
    """Read-only once loaded. Its database leaves out the run's held-out locations,
    so their photos are honest examples."""
    return open_predictor(run.root, cfg, database="train", build=False)  # building is a job's (`offer_predictor`)


def held_out_photos(run: Run) -> pd.DataFrame:
    """The run's held-out photos (name, absolute path, lat_deg, lon_deg): examples the predictor has never seen."""
    return _held_out_photos(run, fingerprint([run.photos, run.split]))


@st.cache_data(show_spinner=False)
def _held_out_photos(run: Run, version: str) -> pd.DataFrame:
    table = run.photo_table()
    _, is_test = run.read_split()
    return pd.DataFrame({"name": table.frame["path"][is_test].to_numpy(),
                         "path": [str(p) for p, t in zip(table.abs_paths(), is_test) if t],
                         "lat_deg": table.lat_deg[is_test], "lon_deg": table.lon_deg[is_test]})


@st.cache_data(show_spinner=False, max_entries=500)
def thumbnail(path: str, side: int = 320) -> Image.Image | None:
    """`upright` for database photos, cached: the same neighbours come back prediction after prediction."""
    return upright(path, side)


@st.cache_data(ttl=600, show_spinner=False)
def basemap_online() -> bool:
    """Whether tiles can be had (checked once per 10 minutes; offline machines get the outline map at once)."""
    return figures.tiles_reachable()


@st.cache_data(show_spinner="Naming places and making thumbnails ...")
def region_details(run: Run, regions: RegionFiles, version: str, thumbs: int = 3) -> pd.DataFrame:
    """Per region of one partition: the top places of its photos (offline geocoder) and a few thumbnails."""
    table = run.photo_table()
    frame = table.frame[["path", "lat_deg", "lon_deg"]].assign(abs_path=[str(p) for p in table.abs_paths()])
    frame = frame.merge(regions.labels()[["path", "region"]], on="path")
    places = region_places(frame["region"].to_numpy(), frame["lat_deg"].to_numpy(), frame["lon_deg"].to_numpy())
    rows = []
    for region, members in frame.groupby("region"):
        picks = members["abs_path"].iloc[np.linspace(0, len(members) - 1, min(thumbs, len(members))).astype(int)]
        rows.append({"region": region, "places": places[int(region)],
                     **{f"photo {i + 1}": thumbnail_uri(p) for i, p in enumerate(picks)}})
    return pd.DataFrame(rows)


@st.cache_data(show_spinner=False)
def region_polygon(regions: RegionFiles | None, region: int | None, version: str) -> dict | None:
    """One region's polygon (GeoJSON) from the partition a predictor labels with (`Predictor.regions`)."""
    if region is None or regions is None or not regions.geojson.exists():
        return None
    features = [f for f in regions.polygons()["features"] if f["properties"]["region"] == region]
    return {"type": "FeatureCollection", "features": features}


def boundary_upload(label: str) -> ClipArea | None:
    """A boundary file the analyst uploads (GeoPackage, GeoJSON, KML, zipped Shapefile), or None;
    a bad file is said, not raised."""
    upload = st.file_uploader(label, type=["gpkg", "geojson", "json", "kml", "zip"])
    if upload is None:
        return None
    try:
        return _boundary(Path(upload.name).name, upload.getvalue())
    except (ValueError, OSError, RuntimeError) as exc:  # `BoundaryError` names the file and what was wrong with it
        st.error(plain(f"{upload.name}: {exc}"))
        return None


@st.cache_resource(show_spinner="Reading the boundary ...", max_entries=4)
def _boundary(name: str, data: bytes) -> ClipArea:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return boundary_area(path, isolated=True)  # a visitor's file: read in a child with a memory cap


_MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-!|<>~$&/])|(?<=www)(\.)", re.IGNORECASE)  # no bare http:// or www. link


def plain(text: object) -> str:
    """`text` as Streamlit shows it, not as Markdown: every punctuation mark escaped, so a name, a column or a file name
    that a user chose (`[Session expired – sign in](http://x)`, `:red[...]`, `![](http://x/i.png)`) is only text."""
    return _MARKUP.sub(lambda m: "\\" + m.group(0), str(text))


def predictor_built(run: Run, cfg: PredictConfig) -> bool:
    """Whether the predictor `predictor(run, cfg)` opens is saved and current, so opening it writes nothing. A viewer
    gets only such a predictor: building one (two verifiers, a pass of test-time augmentations) writes into the run and
    takes minutes: a job's (`offer_predictor`), never the script thread's."""
    if cfg.predictor.tta != "none" and not all(run.augmented_embeddings(a).exists()
                                               for a in TTA_AUGMENTATIONS[cfg.predictor.tta] if a != "photo"):
        return False
    store = predictor_store(run.root, cfg.predictor, "train", cfg.graph)
    try:
        provenance.check(store.root.name, store.record, store.files, predictor_inputs(run.root, cfg.predictor, "train",
                                                                                         cfg.graph))
    except (Stale, FileNotFoundError):
        return False
    return True
