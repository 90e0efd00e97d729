"""Train: start iterative fine-tuning in its own process and watch it live; re-attach after a reload."""

import os
import signal
import subprocess
import sys

import streamlit as st

from geoloc_core import runs, viz
from geoloc_core.config import FinetuneConfig
from geoloc_core.finetune import finetune_dirs
from pages.common import run_with_graphs

st.header("Train")
run, graphs = run_with_graphs()

with st.form("start"):
    d = FinetuneConfig()
    c1, c2, c3, c4 = st.columns(4)
    graph = c1.selectbox("Graph", graphs, format_func=str.upper)
    rounds = c2.number_input("Rounds", 1, 10, d.rounds)
    epochs = c3.number_input("Epochs per round", 1, 50, d.epochs)
    blocks = c4.number_input("Unfrozen blocks", 0, 12, d.unfrozen_blocks)
    started = st.form_submit_button("Start fine-tuning")
out = run / f"finetune_{graph}"
if started:
    if runs.job_state(out) == "running":
        st.warning(f"{out} is already running.")
    else:
        resume = ["--resume", str(out)] if (out / "checkpoints" / "last.pt").exists() else ["--run", str(run), "--out", str(out)]
        args = [] if resume[0] == "--resume" else ["--graph", graph, "--rounds", str(rounds), "--epochs", str(epochs),
                                                   "--unfrozen-blocks", str(blocks)]
        with open(out.parent / f"finetune_{graph}.log", "ab") as log:  # the child keeps its own handle
            subprocess.Popen([sys.executable, "-m", "geoloc_core", "finetune", *resume, *args],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        st.success("Started" + (" (resuming the run already in that folder)" if resume[0] == "--resume" else "") + ".")

watched = finetune_dirs(run)
if not watched:
    st.stop()
target = st.selectbox("Watch", watched, index=watched.index(out) if out in watched else 0, format_func=lambda p: str(p.relative_to(run)))


@st.fragment(run_every=3)
def live(folder):
    state = runs.job_state(folder) or "not started"
    records = runs.read_metrics(folder)
    st.write(f"**{folder.name}**: {state} · {sum(r.get('kind') == 'epoch' for r in records)} epochs recorded")
    if state == "running" and st.button("Stop"):
        os.killpg(int(runs.read_status(folder)["pid"]), signal.SIGTERM)
    if any(r.get("kind") == "epoch" for r in records):
        st.plotly_chart(viz.training_figure(records), width="stretch")
    rows = [r for r in records if r.get("kind") == "round"]
    if rows:
        st.dataframe([{k: r.get(k) for k in ("name", "acc", "macro_f1", "n_regions", "median_km", "next_n_regions")} for r in rows],
                     hide_index=True)


live(target)
