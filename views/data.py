"""Data: what a run ingested and rejected (and why), where its photos are, and new runs from a folder under the data roots."""

import streamlit as st

from geoloc_core.config import IngestConfig, help_of
from geoloc_core.ingest.tracks import parse_utc_offset
from geoloc_core.runs.folders import Run, run_in
from geoloc_core.server import access, jobqueue, jobs
from views import figures
from views.common import basemap_online, current_run, editor, job_queue, photos, plain, queue_place, user_label

st.header("Data")


def start_run(root: str, path: str, track: str | None, time_offset: str | None) -> None:
    """Queue the run; a finished one is built again only once the user has said yes (the queue decides, under its lock)."""
    target = Run(root)
    replace = st.session_state.get("replace_run") == root
    try:
        job = jobs.start_run(target, path, user_label(), track, time_offset, replace=replace)
    except jobqueue.Occupied as exc:
        st.warning(plain(exc))
        if target.state() == "done":
            yes, no = st.columns(2)
            if yes.button(plain(f"Yes, build {target.root.name} again"), type="primary"):
                st.session_state["replace_run"] = root
                st.rerun()
            if no.button("No, keep it"):
                st.session_state.pop("new_run", None)
                st.rerun()
            return
    else:
        if job.state == "queued":
            st.success(plain(f"Queued {target.root.name} ({queue_place(target)}): it starts when a running job ends."))
        else:
            st.success(plain(f"Started {target.root}; it appears in the sidebar once photos are ingested."))
    st.session_state.pop("new_run", None)
    st.session_state.pop("replace_run", None)


if editor():
    roots = access.data_roots()
    with st.form("new"):
        st.write("Build a new run from a photo folder (GPS from EXIF, or a `manifest.csv` / `.xlsx` beside the photos) or a manifest "
                 "file (CSV, TSV or XLSX; `;` or tab separated, decimal commas and 45°54'03\"N coordinates are read). "
                 f"Photos may come from: {', '.join(f'`{r}`' for r in roots)}.")
        c1, c2 = st.columns([3, 1])
        source = c1.text_input("Folder or manifest", placeholder="croatia-streetview, or /a/folder/under/a/data/root",
                               help="a path under one of the data roots, or relative to one; no '..', no link that leads out")
        name = c2.text_input("Run name", placeholder="my-photos")
        c1, c2 = st.columns([3, 1])
        gpx = c1.text_input("GPX track (optional)", placeholder="/path/to/track.gpx", help=help_of(IngestConfig, "gpx"))
        time_offset = c2.text_input("Camera clock's UTC offset", placeholder="+01:00", help=help_of(IngestConfig, "time_offset"))
        go = st.form_submit_button("Ingest, embed and cut regions")
    if go:
        try:
            target = Run(run_in(access.runs_dir(), name))
            path = access.resolve_source(source, roots)
            track = access.resolve_source(gpx, roots) if gpx else None
            if gpx:
                parse_utc_offset(time_offset or "Z")
        except ValueError as exc:  # a run name that leaves the runs folder, a path outside the data roots, a bad offset
            st.error(plain(exc))
        else:
            st.session_state["new_run"] = (str(target.root), str(path), str(track) if track else None, time_offset or None)
            st.session_state.pop("replace_run", None)
    if "new_run" in st.session_state:
        start_run(*st.session_state["new_run"])
job_queue()

run = current_run()
if run is None:
    st.stop()


@st.fragment(run_every=3)
def progress(run: Run):
    state = run.state()
    if state is not None:
        stages = [r["stage"] for r in run.read_metrics() if "stage" in r]
        st.caption(plain(f"{run.root.name}: {state} · stages done: {', '.join(dict.fromkeys(stages)) or 'none yet'}"))
    if state == "failed":
        st.error(plain((run.read_status() or {}).get("error", "failed")))


progress(run)
meta = run.read_ingest_meta()
c1, c2, c3 = st.columns(3)
c1.metric("Photos accepted", meta["n_accepted"])
c2.metric("Rejected", meta["n_rejected"])
c3.metric("Locations", photos(run)["group"].nunique())
st.caption(plain(f"Source: {meta['root']}"))
for warning in meta.get("warnings", []):
    st.warning(plain(warning))
st.pydeck_chart(figures.regions_deck(photos(run).assign(region=0), online=basemap_online()), height=460)
rejected = run.read_rejected()
if len(rejected):
    st.subheader("Rejected files and why")
    st.dataframe(rejected, hide_index=True, width="stretch")
