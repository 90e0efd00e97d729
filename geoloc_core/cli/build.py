"""Commands that build a run folder: `run` (every stage), or one stage at a time, and `show`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os

from geoloc_core.base.errors import UserError
from geoloc_core.cli.flags import Command, add_graphs, add_settings, settings
from geoloc_core.cli.tables import print_table
from geoloc_core.config import (
    EmbedConfig,
    EvalConfig,
    GraphConfig,
    IngestConfig,
    PipelineConfig,
    PredictConfig,
    RegionConfig,
)
from geoloc_core.runs import stages
from geoloc_core.runs.folders import Run
from geoloc_core.server.access import check_source

log = logging.getLogger(__name__)


def add_commands(command: Command) -> None:
    """run, ingest, embed, graph, regions, evaluate, show."""
    c = command("run", _cmd_run, "all stages: ingest, embed, graph, regions, evaluate")
    for cls, section in ((IngestConfig, "ingest"), (EmbedConfig, "embed"), (GraphConfig, "graph"),
                         (RegionConfig, "regions"), (EvalConfig, "eval")):
        add_settings(c, cls, section)
    add_settings(command("ingest", _cmd_ingest, "read a photo folder or manifest; report rejected files"),
                 IngestConfig, "ingest")
    add_settings(command("embed", _cmd_embed, "embed the ingested photos (cached by content)"), EmbedConfig, "embed")
    add_settings(command("graph", _cmd_graph, "split by location and build DT / GG / RNG over the training sites"),
                 GraphConfig, "graph")
    c = command("regions", _cmd_regions, "weight the graphs by feature similarity and cut them with Louvain")
    add_graphs(c)
    add_settings(c, RegionConfig, "regions")
    c = command("evaluate", _cmd_evaluate, "region accuracy / macro-F1 and km errors of a linear probe (w/o); "
                "appends to the run's metrics")
    add_graphs(c)
    add_settings(c, EvalConfig, "eval")
    command("show", _cmd_show, "print the run's figures as recorded (changes nothing)")


def _pipeline_config(a: argparse.Namespace) -> PipelineConfig:
    return PipelineConfig(ingest=settings(a, IngestConfig, "ingest"), embed=settings(a, EmbedConfig, "embed"),
                          graph=settings(a, GraphConfig, "graph"), regions=settings(a, RegionConfig, "regions"),
                          eval=settings(a, EvalConfig, "eval"))


def _cmd_ingest(a) -> None:
    report = stages.run_ingest(a.run, settings(a, IngestConfig, "ingest"), check_source)
    print(report.summary())
    for rej in report.rejected:
        print(f"  rejected {rej.path}: {rej.reason}")
    for item in report.to_locate:
        print(f"  to locate {item.path}: {item.reason}")
    for d in report.near_duplicates:
        print(f"  near-duplicate {d.path} repeats {d.of} ({d.bits} of 64 hash bits differ)")
    for w in report.warnings:
        print(f"  warning: {w}")


def stage(a) -> contextlib.AbstractContextManager:
    """The run's state around one stage (a page that queued it sees it done or failed); a run that is not there is
    not made by saying so, and one another process is building is refused (two writers would mix their artefacts)."""
    run = Run(a.run)
    if not run.exists():
        return contextlib.nullcontext()
    status = run.read_status() or {}
    # the job the queue started is this process: its pid once the queue said "running", its job id before that
    started_here = status.get("pid") == os.getpid() or status.get("job") == os.environ.get("GEOLOC_JOB_ID", "-")
    if run.state() in ("running", "queued") and not started_here:
        raise UserError(f"{run.root} is being built by another job ({run.state()})",
                        "Wait for it to end (the app's Data page follows it), then run this again")
    return run.job()


def _cmd_embed(a) -> None:
    with stage(a):
        emb = stages.run_embed(a.run, settings(a, EmbedConfig, "embed"))
    print(f"{len(emb)} embeddings of dimension {emb.shape[1]} -> {Run(a.run).embeddings}")


def _cmd_graph(a) -> None:
    with stage(a):
        graphs = stages.run_graph(a.run, settings(a, GraphConfig, "graph"))
    for kind, edges in graphs.items():
        print(f"{kind}: {len(edges)} edges")


def _cmd_regions(a) -> None:
    with stage(a):
        rows = stages.cut_regions(a.run, settings(a, RegionConfig, "regions"), a.graphs)
    print_table([{"graph": k, **v} for k, v in rows.items()])


def _cmd_evaluate(a) -> None:
    with stage(a):
        rows = stages.run_evaluate(a.run, settings(a, EvalConfig, "eval"), a.graphs)
    print_table([{"graph": k, **v} for k, v in rows.items()])


def _cmd_show(a) -> None:
    rows = stages.summary_rows(a.run)
    if not rows:
        raise FileNotFoundError(f"{a.run} has no recorded figures yet: `geoloc run` makes them")
    print(f"{a.run}: w/o (pretrained features, no fine-tuning), held-out locations")
    print_table(rows)


def _cmd_run(a) -> None:
    from geoloc_core.locate.store import open_predictor
    from geoloc_core.locate.untagged import locate_untagged

    cfg = _pipeline_config(a)
    with Run(a.run).job():
        rows = stages.run_all(a.run, cfg, check_source)
        located = locate_untagged(a.run)
        graph = Run(a.run).labelled_graph()
        try:  # the app's default predictor, so that its first answer needs no build; the page builds it otherwise
            open_predictor(a.run, PredictConfig(graph=graph or PredictConfig.graph, device=cfg.embed.device),
                           database="train")
        except (ValueError, FileNotFoundError) as exc:  # a run too small or without regions: the run still stands
            log.warning("the Predict page's default predictor was not built (%s); the page offers to build it", exc)
    print(f"\n{a.run}: w/o (pretrained features, no fine-tuning), held-out locations")
    print_table(rows)
    if len(located):
        print(f"\n{len(located)} photos without a location, located by this run: {Run(a.run).located}")
