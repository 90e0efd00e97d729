"""Data: what a run ingested and rejected (and why), where its photos are, and new runs from a folder."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from geoloc_core import runs, viz
from pages.common import RUNS, basemap_online, photos, run_dir

st.header("Data")
with st.form("new"):
    st.write("Build a new run from a photo folder (GPS from EXIF, or a `manifest.csv` beside the photos) or a manifest file.")
    c1, c2 = st.columns([3, 1])
    source = c1.text_input("Folder or manifest", placeholder="/path/to/photos")
    name = c2.text_input("Run name", placeholder="my-photos")
    go = st.form_submit_button("Ingest, embed and cut regions")
if go:
    if not source or not Path(source).exists():
        st.error(f"{source or 'nothing'}: no such folder or file")
    elif not name or "/" in name:
        st.error("Give the run a plain name (no slashes).")
    else:
        target = RUNS / name
        target.mkdir(parents=True, exist_ok=True)
        with open(target / "run.log", "ab") as log:
            subprocess.Popen([sys.executable, "-m", "geoloc_core", "run", source, "--run", str(target)],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        st.success(f"Started {target}; it appears in the sidebar once photos are ingested.")

run = run_dir()
if run is None:
    st.stop()


@st.fragment(run_every=3)
def progress(folder: Path):
    state = runs.job_state(folder)
    if state is not None:
        stages = [r["stage"] for r in runs.read_metrics(folder) if "stage" in r]
        st.caption(f"{folder.name}: {state} · stages done: {', '.join(dict.fromkeys(stages)) or 'none yet'}")


progress(run)
meta = runs.read_json(run / "ingest.json")
c1, c2, c3 = st.columns(3)
c1.metric("Photos accepted", meta["n_accepted"])
c2.metric("Rejected", meta["n_rejected"])
c3.metric("Locations", photos(str(run))["group"].nunique())
st.caption(f"Source: {meta['root']}")
for warning in meta.get("warnings", []):
    st.warning(warning)
table = photos(str(run))
st.pydeck_chart(viz.regions_deck(table.assign(region=0), online=basemap_online()), height=460)
rejected = pd.read_csv(run / "rejected.csv", keep_default_na=False)
if len(rejected):
    st.subheader("Rejected files and why")
    st.dataframe(rejected, hide_index=True, width="stretch")
