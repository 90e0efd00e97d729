"""Evaluate: the experiment table (w/o, FT1..FTn per graph, Mesh, CPlaNet) and the runs' own figures."""

import pandas as pd
import streamlit as st

from geoloc_core import runs, viz
from pages.common import run_dir

st.header("Evaluate")
run = run_dir()
if run is None:
    st.stop()
table_csv = run / "experiment" / "table.csv"
if table_csv.exists():
    table = pd.read_csv(table_csv, keep_default_na=False)
    st.subheader("Experiment: region classification on held-out locations")
    st.plotly_chart(viz.experiment_figure(table), width="stretch")
    cols = [c for c in ("graph", "method", "acc", "macro_f1", "n_regions", "median_km", "acc@1km", "acc@25km", "acc@200km") if c in table]
    st.dataframe(table[cols], hide_index=True, width="stretch")
else:
    st.info("No experiment in this run yet: `geoloc experiment --run RUN` writes one.")

evals = [r for r in runs.read_metrics(run) if r.get("stage") == "evaluate"]
if evals:
    st.subheader("w/o (pretrained features), from `geoloc run`")
    st.dataframe(pd.DataFrame(evals).drop(columns=["time", "stage"]).drop_duplicates("graph", keep="last"), hide_index=True, width="stretch")
