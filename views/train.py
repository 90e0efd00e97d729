"""Train: queue a new fine-tuning run (its own process), watch any run live, stop or resume it;
re-attach after a reload."""

import time

import streamlit as st

from geoloc_core.config import FinetuneConfig
from geoloc_core.runs.folders import FinetuneRun
from geoloc_core.server import jobqueue, jobs
from views import figures
from views.common import confirmed, editor, job_queue, plain, queue_place, run_with_graphs, user_label

st.header("Train")
run, graphs = run_with_graphs()

if editor():
    with st.form("start", enter_to_submit=False):  # Enter in a number field queued a run; only the button does
        d = FinetuneConfig()
        c1, c2, c3, c4 = st.columns(4)
        graph = c1.selectbox("Graph", graphs, format_func=str.upper)
        rounds = c2.number_input("Rounds", 1, 10, d.rounds)
        epochs = c3.number_input("Epochs per round", 1, 50, d.epochs)
        blocks = c4.number_input("Unfrozen blocks", 0, 12, d.unfrozen_blocks)
        started = st.form_submit_button("Start a new fine-tuning run")
    if started:
        cfg = FinetuneConfig(graph=graph, rounds=int(rounds), epochs=int(epochs), unfrozen_blocks=int(blocks))
        ft = jobs.start_finetune(run, cfg, user_label())
        st.session_state["watch"] = str(ft.root)
        place = queue_place(ft)
        st.success(f"Queued {ft.root.name} ({place}): it starts when a running job ends; it shows below." if place else
                   f"Started {ft.root.name}: its progress shows below.")
job_queue()


@st.fragment(run_every=3)
def watch() -> None:
    """Every fine-tuning folder of the run, listed afresh each time, so a run started a moment ago shows at once."""
    folders = {str(ft.root): ft for ft in run.finetune_dirs()}
    if not folders:
        st.caption("No fine-tuning run yet.")
        return
    names = list(folders)
    wanted = st.session_state.get("watch")
    index = names.index(wanted) if wanted in names else len(names) - 1
    chosen = st.selectbox("Watch", names, index=index, format_func=lambda p: str(folders[p].root.relative_to(run.root)))
    st.session_state["watch"] = chosen
    show(folders[chosen])


def show(ft: FinetuneRun) -> None:
    state = ft.state() or "not started"
    records = ft.read_metrics()
    cfg = ft.read_config().get("finetune", {})
    job = jobqueue.job_of(ft)
    st.write(f"**{ft.root.name}**: {state} · {sum(r.get('kind') == 'epoch' for r in records)} epochs recorded"
             + (f" · {cfg.get('rounds')} rounds × {cfg.get('epochs')} epochs, {str(cfg.get('graph', '')).upper()}"
                if cfg else "")
             + plain(f" · started by {job.user}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(job.submitted))}"
                     if job else ""))
    if state == "queued":
        st.info(f"Waiting in the job queue: {queue_place(ft) or 'next'}.")
    if state == "running":
        progress = ft.read_progress()
        if progress and progress["total"]:
            st.progress(min(1.0, progress["done"] / progress["total"]),
                        text=f"{progress['phase']}: {progress['done']} of {progress['total']}")
        else:
            st.progress(0.0, text="starting: loading the photos and the model ...")
    stop, resume = st.columns(2)
    with stop:
        if state in ("running",
                     "queued") and confirmed("Stop" if state == "running" else "Take it out of the queue", ft):
            st.info(jobs.stop(ft))
    if editor() and jobs.can_resume(ft) and resume.button("Resume from the last checkpoint", key=f"resume {ft.root}"):
        place = queue_place(ft) if jobs.resume_finetune(ft, user_label()).state == "queued" else ""
        st.info(f"Resuming {ft.root.name} with the settings it was started with"
                + (f" once its turn comes ({place})." if place else "."))
    if state == "failed":
        st.error(plain((ft.read_status() or {}).get("error", "failed")))
    if any(r.get("kind") == "epoch" for r in records):
        st.plotly_chart(figures.training_figure(records), width="stretch")
    rows = [r for r in records if r.get("kind") == "round"]
    if rows:
        st.dataframe([{k: r.get(k) for k in ("name", "acc", "macro_f1", "n_regions", "median_km", "next_n_regions")}
                      for r in rows],
                     hide_index=True)


watch()
