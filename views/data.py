"""Data: what a run ingested (its places, its photos to locate and their answers) and rejected (and why), where its
photos are, and new runs from a folder under the data roots."""

import pandas as pd
import streamlit as st

from geoloc_core.config import IngestConfig, help_of
from geoloc_core.ingest.tracks import parse_utc_offset
from geoloc_core.runs.folders import Run, run_in
from geoloc_core.server import access, jobqueue, jobs
from views import figures
from views.common import (
    basemap_online,
    current_run,
    current_table,
    editor,
    job_queue,
    photos,
    plain,
    queue_place,
    require,
    user_label,
)

st.header("Data")


def start_run(root: str, path: str, track: str | None, time_offset: str | None) -> None:
    """Queue the run; a finished one is built again only once the user has said yes
    (the queue decides, under its lock)."""
    target = Run(root)
    replace = st.session_state.get("replace_run") == root
    try:
        job = jobs.start_run(target, path, user_label(), track, time_offset, replace=replace)
    except jobqueue.Occupied as exc:
        st.warning(plain(exc))
        if exc.replaceable:  # finished work (done, or a later stage failed): asked, not refused
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
    with st.form("new", enter_to_submit=False):  # Enter in a field must not start a run: only the button does
        st.write("Build a new run from a photo folder (GPS from EXIF, or a `manifest.csv` / `.xlsx` beside the "
                 "photos) or a manifest file (CSV, TSV or XLSX; `;` or tab separated, decimal commas and 45°54'03\"N "
                 f"coordinates are read). Photos may come from: {', '.join(f'`{r}`' for r in roots)}.")
        c1, c2 = st.columns([3, 1])
        source = c1.text_input("Folder or manifest", placeholder="croatia-streetview, or /a/folder/under/a/data/root",
                               help="a path under one of the data roots, or relative to one; no '..', no link that "
                                    "leads out")
        name = c2.text_input("Run name", placeholder="my-photos")
        c1, c2 = st.columns([3, 1])
        gpx = c1.text_input("GPX track (optional)", placeholder="/path/to/track.gpx", help=help_of(IngestConfig, "gpx"))
        time_offset = c2.text_input("Camera clock's UTC offset", placeholder="+01:00",
                                    help=help_of(IngestConfig, "time_offset"))
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
            st.session_state["new_run"] = (str(target.root), str(path), str(track) if track else None,
                                           time_offset or None)
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
require(run, run.ingest_meta, run.photos)
meta = run.read_ingest_meta()
places = meta.get("places") or {}
c1, c2, c3, c4, c5 = st.columns(5)
c1.metric("Photos with a location", meta["n_accepted"])
c2.metric("Places", places.get("n_places", photos(run)["group"].nunique()),
          help="Photos within the place radius of each other (and near-duplicates) are one place: every split, fold, "
               "calibration hold-out and bootstrap keeps a place on one side. "
               + help_of(IngestConfig, "place_radius_m"))
c3.metric("Largest place", f"{places['largest_place']} photos" if places else "-",
          help=f"the widest place spans {places['largest_diameter_m']:.0f} m" if places else None)
c4.metric("To locate", meta.get("n_to_locate", 0), help="photos without a usable location: the run locates them")
c5.metric("Rejected", meta["n_rejected"])
if places:
    st.caption(plain(f"Source: {meta['root']} · places: photos within {places['radius_m']:g} m of each other, none "
                     f"wider than {places['max_diameter_m']:g} m · {places['n_near_duplicates']} near-duplicates"))
else:
    st.caption(plain(f"Source: {meta['root']} · ingested before places: one location per exact coordinate "
                     "(ingest again for places)"))
for warning in meta.get("warnings", []):
    st.warning(plain(warning))
located = (pd.read_csv(run.located, keep_default_na=False)
           if run.located.exists() and current_table(run, [run.located]) else None)
st.pydeck_chart(figures.places_deck(photos(run), located, online=basemap_online()), height=460)
to_locate = run.read_to_locate()
if len(to_locate):
    st.subheader("Photos to locate")
    if located is None:
        st.caption("Located once the run's regions are cut (`geoloc run` does it last).")
        st.dataframe(to_locate, hide_index=True, width="stretch")
    else:
        columns = ["path", *(["place"] if "place" in located else []), "lat_deg", "lon_deg", "radius_km"]
        shown = to_locate.merge(located[columns], on="path", how="left")
        st.dataframe(shown, hide_index=True, width="stretch")
if meta.get("near_duplicates"):
    st.subheader("Near-duplicates")
    st.caption("The same picture saved again (re-compressed, resized): kept in the place of the photo it repeats.")
    repeats = pd.DataFrame(meta["near_duplicates"]).rename(columns={"of": "repeats"})
    st.dataframe(repeats, hide_index=True, width="stretch")
rejected = run.read_rejected()
if len(rejected):
    st.subheader("Rejected files and why")
    st.dataframe(rejected, hide_index=True, width="stretch")
