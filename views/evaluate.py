"""Evaluate: the experiment table (w/o, FT1..FTn per graph, Mesh, CPlaNet), the compare table with its intervals and
verdicts, and the runs' own figures."""

import pandas as pd
import streamlit as st

from geoloc_core.evaluate.stats import with_intervals
from geoloc_core.locate.auto import evidence_table
from geoloc_core.runs.stages import summary_rows
from views import analysis, figures
from views.common import basemap_online, current_run, current_table

st.header("Evaluate")
run = current_run()
if run is None:
    st.stop()
cross_validated = [x for x in run.cross_validations() if x.table_csv.exists()]
if cross_validated:
    chosen = cross_validated[-1] if len(cross_validated) == 1 else st.selectbox(
        "Cross-validation", cross_validated, index=len(cross_validated) - 1, format_func=lambda x: x.root.name)
if cross_validated and current_table(run, chosen.files):
    table = pd.read_csv(chosen.table_csv, keep_default_na=False)
    st.subheader(f"Experiment, {int(table['folds'].iloc[0])}-fold over locations: region classification on held-out "
                 "locations")
    st.plotly_chart(figures.experiment_figure(table), width="stretch")
    cols = [c for c in table if c.removesuffix("_lo").removesuffix("_hi") in ("graph", "method", "acc", "chance_acc",
                                                                              "majority_acc", "macro_f1", "n_regions",
                                                                              "median_km", "acc@25km", "acc@200km")]
    st.dataframe(with_intervals(table[cols]), hide_index=True, width="stretch")
    st.caption("Each figure over all folds with its 95 % interval (a bootstrap over held-out locations); chance_acc, "
               "macro_f1 and n_regions are means over folds. w/o (cosine head): FT1's head on the frozen backbone.")
    if chosen.verdicts.exists():
        verdicts = pd.read_csv(chosen.verdicts)
        st.markdown("**Paired differences** (the same held-out photos, resampled by location): which gaps are real")
        st.dataframe(verdicts.assign(interval=[f"[{lo:.3g}, {hi:.3g}]"
                                               for lo, hi in zip(verdicts["lo"], verdicts["hi"])])
                     [["comparison", "metric", "difference", "interval", "verdict"]], hide_index=True, width="stretch")
if run.experiment.table_csv.exists() and current_table(run, run.experiment.files):
    table = pd.read_csv(run.experiment.table_csv, keep_default_na=False)
    st.subheader("Experiment on the run's one split: region classification on held-out locations")
    st.plotly_chart(figures.experiment_figure(table), width="stretch")
    cols = [c for c in ("graph", "method", "acc", "chance_acc", "majority_acc", "macro_f1", "n_regions", "median_km",
                        "acc@1km", "acc@25km", "acc@200km") if c in table]
    st.dataframe(table[cols], hide_index=True, width="stretch")
    st.caption("chance_acc: what the region sizes alone score (guessing with the training frequencies); w/o (cosine "
               "head): FT1's head on the frozen backbone, so FT1 minus it is the backbone's own gain. One split, no "
               "intervals: `geoloc experiment --folds 5` gives each figure its 95 % interval and the verdicts.")
if not cross_validated and not run.experiment.table_csv.exists():
    st.info("No experiment in this run yet: `geoloc experiment --run RUN` (add `--folds 5` for intervals) writes one.")

rows = summary_rows(run.root)
if rows:
    st.subheader("w/o (pretrained features), from `geoloc run`")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

compared = run.compare_table.exists() and current_table(run, run.compare_files)
if compared:
    compare = pd.read_csv(run.compare_table)
    folded = "median_km_lo" in compare
    st.subheader("Locating photos: every method on held-out locations (`geoloc compare`)")
    st.caption("Over all folds' held-out photos, with a 95 % interval from a bootstrap over held-out locations "
               "(each fold's radius is in the table below)." if folded else
               "One split of the run, no intervals: `geoloc compare --folds 5` gives each figure its 95 % interval.")
    accuracy = next((f"acc@{t}km" for t in ("25", "0.1", "1", "200") if f"acc@{t}km" in compare and 0.02
                     < compare[f"acc@{t}km"].max() < 0.98),
                    "acc@25km")
    st.plotly_chart(figures.compare_figure(compare, accuracy), width="stretch")
    st.dataframe(with_intervals(compare), hide_index=True, width="stretch")
    if run.compare_verdicts.exists():
        verdicts = pd.read_csv(run.compare_verdicts)
        st.markdown("**Paired differences** (the same held-out photos, resampled by location): which gaps are real")
        st.dataframe(verdicts.assign(interval=[f"[{lo:.3g}, {hi:.3g}]"
                                               for lo, hi in zip(verdicts["lo"], verdicts["hi"])])
                     [["comparison", "metric", "difference", "interval", "verdict"]], hide_index=True, width="stretch")
    if run.compare_folds.exists():
        st.markdown("**Does the 90 % radius hold?** Share of each fold's held-out photos within the radius its "
                    "predictor reported, with its 95 % interval over the fold's places; `auto_choice`: what `--method "
                    "auto` chose on inner folds of the fold's training places (its row above is measured on the fold "
                    "it never saw)")
        st.dataframe(with_intervals(pd.read_csv(run.compare_folds)), hide_index=True, width="stretch")

for store in run.predictors():
    if choice := store.read_meta().get("auto"):
        st.subheader(f"`--method auto` chose **{choice['chosen']}** for {store.root.name}")
        st.caption(choice.get("reason") or f"Lowest median km over {choice['inner_folds']} inner folds of the "
                                           f"database's {choice['places']} places ({choice['photos']} photos), 95 % "
                                           "intervals over places; optimistic for the winner: `geoloc compare --folds "
                                           "K --method auto` measures it on folds the choice never saw.")
        if "median_km" in choice:
            st.dataframe(with_intervals(evidence_table(choice)), hide_index=True, width="stretch")

if compared and run.compare_predictions.exists():
    st.subheader("Error map: held-out photos, truth (green) to the verified prediction")
    errors = pd.read_csv(run.compare_predictions, keep_default_na=False)
    st.pydeck_chart(figures.error_deck(errors, online=basemap_online()), height=480)
    st.caption(f"{len(errors)} held-out photos; median error {errors['error_km'].median():.2f} km. Lines run green "
               "(close) to red (1,000+ km).")

analysis.coverage_section(run)
