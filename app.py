"""geoloc's Streamlit app. The pages (Predict, Regions, Train, Evaluate, Data) come with the app issue;
until then this entry point shows the regions and figures of the command line's runs."""

from pathlib import Path

import streamlit as st

st.set_page_config(page_title="geoloc", layout="wide")
st.title("geoloc")
st.write("Image geolocation over proximity-graph regions. Build a run first: `.venv/bin/geoloc run` (see README).")
for run in sorted(Path("runs").glob("*/metrics.jsonl")):
    st.subheader(run.parent.name)
    st.code(run.read_text()[-4000:], language="json")
