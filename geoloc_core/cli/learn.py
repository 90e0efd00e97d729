"""Commands that fine-tune: `finetune` (a new run), `resume` (a stopped one), `experiment` (Table 1)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from geoloc_core.base.errors import UserError
from geoloc_core.cli.flags import Command, add_graphs, add_settings, settings
from geoloc_core.cli.tables import print_table, print_verdicts
from geoloc_core.config import CrossValConfig, FinetuneConfig
from geoloc_core.runs.folders import FinetuneRun, Run


def add_commands(command: Command) -> None:
    """finetune, resume, experiment."""
    c = command("finetune", _cmd_finetune, "a new iterative fine-tuning run over one graph's regions: w/o, FT1 .. FTn")
    add_settings(c, FinetuneConfig, "finetune")
    c.add_argument("--out", type=Path, default=None, help="a new output folder (default: a new folder in the run)")
    c = command("resume", _cmd_resume, "continue a stopped or killed fine-tuning run from its last checkpoint",
                run=False)
    c.add_argument("folder", type=Path, help="the fine-tuning folder to continue")
    add_settings(c, FinetuneConfig, "finetune", only=("device",))  # the other settings are the run's own
    c = command("experiment", _cmd_experiment, "Table 1: DT / GG / RNG x (w/o, FT1 .. FTn), Mesh and CPlaNet "
                "(finished work resumes)")
    add_graphs(c)
    add_settings(c, CrossValConfig, "cv")
    add_settings(c, FinetuneConfig, "finetune",
                 only=tuple(f.name for f in dataclasses.fields(FinetuneConfig) if f.name != "graph"))
    c.add_argument("--out", type=Path, default=None,
                   help="output folder (default: one in the run, per --folds and --fold-seed)")


def _finetune(run_dir: Path, cfg: FinetuneConfig, ft: FinetuneRun) -> None:
    from geoloc_core.learn.finetune import finetune_rounds

    with ft.job():
        rows = [{"graph": cfg.graph, "method": r.name, **r.metrics} for r in finetune_rounds(run_dir, cfg, ft.root)]
    print(f"\n{ft.root}: rounds finished in this call")
    print_table(rows)


def _cmd_finetune(a) -> None:
    cfg = settings(a, FinetuneConfig, "finetune")
    ft = FinetuneRun(a.out) if a.out else Run(a.run).new_finetune(cfg.graph)
    if ft.last_checkpoint.exists():
        raise ValueError(f"{ft.root} already holds a fine-tuning run: `geoloc resume {ft.root}` continues it, "
                         "or leave out --out for a new folder")
    _finetune(Path(a.run).resolve(), cfg, ft)


def _cmd_resume(a) -> None:
    from geoloc_core.learn.finetune import close_finished, is_finished

    ft = FinetuneRun(a.folder)
    if not ft.last_checkpoint.exists():
        raise UserError(f"{ft.root} has no fine-tuning checkpoint to resume from" if ft.exists()
                        else f"there is no fine-tuning folder at {ft.root}",
                        "Give `geoloc resume` a folder `geoloc finetune` wrote (RUN/finetune_GRAPH), or start one: "
                        "`geoloc finetune --run RUN`")
    started_here = (ft.read_status() or {}).get("pid") == os.getpid()  # the app marks the job it starts
    if ft.state() == "running" and not started_here:
        raise ValueError(f"{ft.root} is running already")
    if is_finished(ft):
        close_finished(ft)
        print(f"{ft.root} has finished all its rounds: nothing left to resume (`geoloc finetune` starts a new run)")
        return
    cfg = FinetuneConfig(**{**ft.read_config()["finetune"], "device": settings(a, FinetuneConfig, "finetune").device})
    _finetune(ft.run_dir(), cfg, ft)


def _cmd_experiment(a) -> None:
    from geoloc_core.analysis.experiment import cross_validate, run_experiment, to_markdown
    from geoloc_core.evaluate.stats import with_intervals

    cv, cfg = settings(a, CrossValConfig, "cv"), settings(a, FinetuneConfig, "finetune")
    if cv.folds == 1:
        print(to_markdown(run_experiment(a.run, cfg, a.graphs, a.out)))
        return
    table, verdicts = cross_validate(a.run, cfg, a.graphs, cv, a.out)
    print(f"{cv.folds}-fold over locations; [95 % interval over held-out locations]")
    print_table(with_intervals(table).to_dict("records"), ("graph", "method", "acc", "chance_acc", "macro_f1",
                                                           "n_regions", "median_km", "acc@25km", "acc@200km"))
    print("\nPaired differences on the same held-out photos:")
    print_verdicts(verdicts.to_dict("records"))
