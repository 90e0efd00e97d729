"""Data: what a run ingested and rejected (and why), where its photos are, and new runs from a folder under the data roots."""

import streamlit as st

from geoloc_core.config import IngestConfig, help_of
from geoloc_core.ingest.tracks import parse_utc_offset
from geoloc_core.runs.folders import Run, run_in
from geoloc_core.server import access, jobs
from views import figures
from views.common import basemap_online, current_run, editor, job_queue, photos, queue_place, require, user_label

st.header("Data")
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
            st.error(str(exc))
        else:
            if target.exists() and target.state() in ("running", "queued"):
                st.error(f"{name} is being built already.")
            else:
                job = jobs.start_run(target, str(path), user_label(), str(track) if track else None, time_offset or None)
                if job.state == "queued":
                    st.success(f"Queued {target.root.name} ({queue_place(target)}): it starts when a running job ends.")
                else:
                    st.success(f"Started {target.root}; it appears in the sidebar once photos are ingested.")
job_queue()

run = current_run()
if run is None:
    st.stop()


@st.fragment(run_every=3)
def progress(run: Run):
    state = run.state()
    if state is not None:
        stages = [r["stage"] for r in run.read_metrics() if "stage" in r]
        st.caption(f"{run.root.name}: {state} · stages done: {', '.join(dict.fromkeys(stages)) or 'none yet'}")
    if state == "failed":
        st.error((run.read_status() or {}).get("error", "failed"))


progress(run)
require(run, run.ingest_meta, run.photos)
meta = run.read_ingest_meta()
c1, c2, c3 = st.columns(3)
c1.metric("Photos accepted", meta["n_accepted"])
c2.metric("Rejected", meta["n_rejected"])
c3.metric("Locations", photos(run)["group"].nunique())
st.caption(f"Source: {meta['root']}")
for warning in meta.get("warnings", []):
    st.warning(warning)
st.pydeck_chart(figures.regions_deck(photos(run).assign(region=0), online=basemap_online()), height=460)
rejected = run.read_rejected()
if len(rejected):
    st.subheader("Rejected files and why")
    st.dataframe(rejected, hide_index=True, width="stretch")
