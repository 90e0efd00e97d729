"""Evaluate: the experiment table (w/o, FT1..FTn per graph, Mesh, CPlaNet) and the runs' own figures."""

import pandas as pd
import streamlit as st

from geoloc_core import viz
from geoloc_core.pipeline import summary_rows
from views.common import basemap_online, current_run

st.header("Evaluate")
run = current_run()
if run is None:
    st.stop()
if run.experiment.table_csv.exists():
    table = pd.read_csv(run.experiment.table_csv, keep_default_na=False)
    st.subheader("Experiment: region classification on held-out locations")
    st.plotly_chart(viz.experiment_figure(table), width="stretch")
    cols = [c for c in ("graph", "method", "acc", "macro_f1", "n_regions", "median_km", "acc@1km", "acc@25km", "acc@200km") if c in table]
    st.dataframe(table[cols], hide_index=True, width="stretch")
else:
    st.info("No experiment in this run yet: `geoloc experiment --run RUN` writes one.")

rows = summary_rows(run.root)
if rows:
    st.subheader("w/o (pretrained features), from `geoloc run`")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

if run.compare_predictions.exists():
    st.subheader("Error map: held-out photos, truth (green) to the verified prediction")
    errors = pd.read_csv(run.compare_predictions, keep_default_na=False)
    st.pydeck_chart(viz.error_deck(errors, online=basemap_online()), height=480)
    st.caption(f"{len(errors)} held-out photos; median error {errors['error_km'].median():.2f} km. Lines run green (close) to red (1,000+ km).")
if run.compare_table.exists():
    st.subheader("Locating photos: every method on the held-out locations (`geoloc compare`)")
    st.dataframe(pd.read_csv(run.compare_table), hide_index=True, width="stretch")
