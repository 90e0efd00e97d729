"""The paper's Table 1 for one data set: DT / GG / RNG x (w/o, FT1 .. FTn), plus Mesh and CPlaNet.

Every row is graded on the same held-out locations with the same backbone. Beside accuracy and
macro-F1 the table gives each row's region count and its location error (the predicted region's
centroid against the truth): fine-tuned features reshape the regions themselves, so accuracy
alone can flatter a row whose regions became fewer or easier. The baselines are trained for as
many epochs as the whole FTn run (rounds x epochs) and sized to the region count of the best
graph's last round.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from geoloc_core.analysis.crossval import Folds, collect, fold_runs, measures, paired_rows, summary, write_tables
from geoloc_core.base import storage
from geoloc_core.config import CrossValConfig, FinetuneConfig
from geoloc_core.evaluate.stats import Resamples, with_intervals
from geoloc_core.features.towers import Suffix
from geoloc_core.learn.classifier import RegionClassifier
from geoloc_core.learn.finetune import (
    FinetuneContext,
    finetune_rounds,
    make_optimizer,
    predict_log_probs,
    round_name,
    train_epoch,
)
from geoloc_core.regions.baselines import cell_combos, combine_log_probs, cplanet_partitions, mesh_labels
from geoloc_core.runs.folders import Experiment, FinetuneRun, Run

log = logging.getLogger(__name__)

COLUMNS = ["graph", "method", "acc", "chance_acc", "macro_f1", "n_regions", "median_km", "acc@0.1km", "acc@0.5km",
           "acc@1km", "acc@25km", "acc@200km"]


def round_rows(ft: FinetuneRun, graph: str) -> list[dict]:
    """The finished rounds of a fine-tuning folder, one row each (the last record of a round wins)."""
    rounds = {r["round"]: r for r in ft.read_metrics() if r.get("kind") == "round"}
    return [{"graph": graph, "method": rounds[k]["name"], **rounds[k], "held_out": str(ft.held_out(k))}
            for k in sorted(rounds)]


def train_fixed(ctx: FinetuneContext, cfg: FinetuneConfig, label_sets: list[np.ndarray], epochs: int,
                backbone: bool = True, r: int = 0) -> list[np.ndarray]:
    """Train a fresh suffix (its blocks frozen with `backbone=False`: the head alone) on fixed label sets, one head
    each, seeded as fine-tuning's round `r`; held-out log-probabilities per head."""
    suffix = Suffix(ctx.encoder.model, cfg.unfrozen_blocks).to(ctx.device).requires_grad_(backbone)
    n_classes = [int(labels.max()) + 1 for labels in label_sets]
    model = RegionClassifier(suffix, n_classes, ctx.encoder.model.proj.shape[1], cfg.seed + r).to(ctx.device)
    optimizer = make_optimizer(model, cfg)
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + r * 1000 + epoch)
        record = train_epoch(model, optimizer, ctx.tokens, ctx.train_idx, label_sets, cfg.batch_size, generator,
                             ctx.device)
        log.info("baseline epoch %d: loss %.3f, train acc %.3f", epoch, record["loss"], record["train_acc"])
    return predict_log_probs(model, ctx.tokens, ctx.test_idx, cfg.batch_size, ctx.device)


def frozen_head_row(run_dir: Path, cfg: FinetuneConfig, ft: FinetuneRun, out: Experiment) -> dict:
    """w/o with FT1's own cosine head and schedule on the frozen backbone: FT1 minus this row is the backbone's gain
    alone (the w/o row's linear probe is another classifier)."""
    ctx = FinetuneContext(run_dir, cfg)
    labels = ft.regions(0).labels()["region"].to_numpy()  # what FT1 learns
    pred = train_fixed(ctx, cfg, [labels], cfg.epochs, backbone=False, r=1)[0].argmax(1)
    held_out = out.held_out(f"{cfg.graph}_wo_cosine")
    return {"graph": cfg.graph, "method": "w/o (cosine head)", "round": 0, **ctx.grade(pred, labels, held_out),
            "n_regions": int(labels.max()) + 1, "held_out": str(held_out)}


def baseline_rows(run_dir: Path, cfg: FinetuneConfig, target: int, out: Experiment) -> list[dict]:
    """Mesh and CPlaNet-style rows at about `target` classes."""
    ctx = FinetuneContext(run_dir, cfg)
    train = ~ctx.is_test
    xy = ctx.graph.site_xy_m[ctx.graph.site_of_photo]
    epochs = cfg.epochs * cfg.rounds
    mesh, cell_deg = mesh_labels(ctx.table.lat_deg, ctx.table.lon_deg, xy, train, target)
    pred = train_fixed(ctx, cfg, [mesh], epochs)[0].argmax(1)
    rows = [{"graph": "", "method": "Mesh", **ctx.grade(pred, mesh, out.held_out("mesh")),
             "n_regions": int(mesh.max()) + 1, "cell_deg": cell_deg, "held_out": str(out.held_out("mesh"))}]
    parts, cells = cplanet_partitions(xy, train, target, seed=cfg.seed)
    pred = combine_log_probs(train_fixed(ctx, cfg, parts, epochs), cell_combos(parts, cells, train))
    rows.append({"graph": "", "method": "CPlaNet", **ctx.grade(pred, cells, out.held_out("cplanet")),
                 "n_regions": int(cells.max()) + 1,
                 "partitions": [int(p.max()) + 1 for p in parts], "held_out": str(out.held_out("cplanet"))})
    return rows


def run_experiment(run_dir: Path, cfg: FinetuneConfig, graphs: tuple[str, ...] | None = None,
                   out_dir: Path | None = None) -> pd.DataFrame:
    """Fine-tune over each graph (default: every graph the run has; finished work resumes), add the baselines, write the
    table.

    Mesh and CPlaNet match the region count of the first graph's last round (DT by default): a choice made in advance,
    never by held-out accuracy, so the held-out photos shape no row.
    """
    run = Run(Path(run_dir).resolve())
    out = Experiment(out_dir) if out_dir is not None else run.experiment
    graphs = tuple(graphs or run.graphs())
    rows = []
    for graph in graphs:
        ft = out.finetune(graph)
        with ft.job():  # its state shows (and a killed experiment's folders read as stopped, to resume)
            graph_cfg = dataclasses.replace(cfg, graph=graph)
            for result in finetune_rounds(run.root, graph_cfg, out_dir=ft.root, restart_stale=True):
                log.info("%s %s: acc %.3f, %d regions", graph, result.name, result.metrics["acc"],
                         result.metrics["n_regions"])
        graph_rows = round_rows(ft, graph)
        rows += graph_rows[:1] + [frozen_head_row(run.root, dataclasses.replace(cfg, graph=graph), ft,
                                                  out)] + graph_rows[1:]
    [matched] = [r for r in rows if r["graph"] == graphs[0] and r["method"] == round_name(cfg.rounds)]
    # the baselines use only the sites, which every graph shares: any graph the run has will do (a fold may lack DT)
    baseline_cfg = dataclasses.replace(cfg, graph=graphs[0])
    rows += baseline_rows(run.root, baseline_cfg, target=int(matched["n_regions"]), out=out)
    table = pd.DataFrame(rows)
    write_tables({out.table_csv: table, out.table_md: to_markdown(table)})
    storage.write_json(out.config, {"finetune": cfg, "graphs": graphs, "run_dir": str(run.root),
                                    "matched_regions": int(matched["n_regions"]),
                                    "matched_to": f"{matched['graph']} {matched['method']}"})
    upstream = ["photos", "embeddings", "split", *(f"graph:{g}" for g in graphs),
                *(f"finetune:{os.path.relpath(out.finetune(g).root, run.root)}" for g in graphs)]
    run.record_table(out.files, upstream, {"finetune": cfg, "graphs": graphs})
    return table


def cross_validate(run_dir: Path, cfg: FinetuneConfig, graphs: tuple[str, ...] | None = None,
                   cv: CrossValConfig = CrossValConfig(),
                   out_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The experiment on K folds over the run's locations: each fold is a run of its own split (graphs, weights,
    regions, fine-tuning, baselines and the matched region count see only its other locations), every location is
    held out once, and each row's figures come with a 95 % interval from a bootstrap over held-out locations.
    Returns the table and the paired verdicts; a killed cross-validation resumes (finished work is kept).
    """
    run = Run(Path(run_dir).resolve())
    out = Experiment(out_dir) if out_dir is not None else run.cross_validation(cv.folds, cv.fold_seed, cv.block_km)
    graphs = tuple(graphs or run.graphs())
    folds = Folds.of_places(run.photo_table(), cv)
    tables = []
    for fold_run in fold_runs(run, out, folds, graphs):
        tables.append(_finished_table(fold_run, cfg, graphs))
        if tables[-1] is None:
            tables[-1] = run_experiment(fold_run.root, cfg, graphs)
    indexed = [t.assign(graph=t["graph"].fillna("")).set_index(["graph", "method"]) for t in tables]
    per_fold = {key: [t.loc[key] for t in indexed] for key in indexed[0].index}
    held_out = {key: collect([pd.read_csv(row["held_out"]) for row in rows], folds, f"{out.root}: {key}")
                for key, rows in per_fold.items()}
    resamples = folds.resamples()
    sizes = np.bincount(folds.fold, minlength=folds.k)  # held-out photos per fold: the weight of its per-fold figures
    table = pd.DataFrame([_cv_row(key, held_out[key], per_fold[key], sizes, resamples) for key in per_fold])
    verdicts = pd.DataFrame(_experiment_verdicts(held_out, graphs, cfg.rounds, resamples))
    write_tables({out.table_csv: table, out.verdicts: verdicts, out.table_md: to_markdown(with_intervals(table))})
    storage.write_json(out.config,
                       {"finetune": cfg, "graphs": graphs, "run_dir": str(run.root), "cross_validation": cv})
    run.record_table(out.files, ["photos", "embeddings", "config:regions"],
                     {"finetune": cfg, "graphs": graphs, "cv": cv})
    return table, verdicts


def _finished_table(fold: Run, cfg: FinetuneConfig, graphs: tuple[str, ...]) -> pd.DataFrame | None:
    """A fold's table from an earlier call with the same settings (a resumed cross-validation retrains nothing)."""
    done = fold.experiment
    recorded = done.read_config()
    if (not done.table_csv.exists() or recorded.get("finetune") != storage.to_jsonable(cfg)
            or tuple(recorded.get("graphs", ())) != graphs):
        return None
    return pd.read_csv(done.table_csv, keep_default_na=False,
                       na_values=[""]).assign(graph=lambda t: t["graph"].fillna(""))


def _cv_row(key: tuple[str, str], answers: pd.DataFrame, per_fold: list[pd.Series], sizes: np.ndarray,
            resamples: Resamples) -> dict:
    row = {"graph": key[0], "method": key[1], **summary(answers, resamples)}
    # per fold; the mean over folds, by held-out photos
    for k in ("chance_acc", "majority_acc", "macro_f1", "n_regions"):
        row[k] = float(np.average([float(f.get(k, np.nan)) for f in per_fold], weights=sizes))
    return row | {"folds": len(per_fold), "round": per_fold[0].get("round", np.nan)}


def _experiment_verdicts(held_out: dict, graphs: tuple[str, ...], rounds: int, resamples: Resamples) -> list[dict]:
    """The comparisons that matter, paired on the same held-out photos: FT_r against w/o per graph; the first graph's
    last round (the one the baselines are matched to) against Mesh and CPlaNet; the graphs' last rounds against each
    other.

    Accuracy is compared only where both rows classify into the same partition (FT1 and the w/o rows learn the w/o
    regions); across partitions, fewer or larger regions would make a "better" accuracy, so there the verdict is on
    km error alone. Each verdict is at 95 % on its own, not corrected for the number of comparisons.
    """
    last = round_name(rounds)
    pairs = [((g, round_name(r)), (g, base)) for g in graphs for r in range(1, rounds + 1)
             for base in ("w/o (cosine head)", "w/o")]
    pairs += [((graphs[0], last), ("", baseline)) for baseline in ("Mesh", "CPlaNet")]
    pairs += [((a, last), (b, last)) for i, a in enumerate(graphs) for b in graphs[i + 1:]]
    same_partition = {(g, "FT1") for g in graphs}
    rows = []
    for a, b in pairs:
        if a not in held_out or b not in held_out:
            continue
        metrics = ([("acc", True)] if a in same_partition and b[1].startswith("w/o") else []) + [("median_km", False)]
        name = f"{' '.join(a).strip()} vs {' '.join(b).strip()}"
        rows += paired_rows(name, measures(held_out[a]), measures(held_out[b]), metrics, resamples)
    return rows


def to_markdown(table: pd.DataFrame) -> str:
    """The experiment table as GitHub Markdown, in `COLUMNS` order (those the table has)."""
    cols = [c for c in COLUMNS if c in table]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table[cols].iterrows():
        cells = [_cell(c, v) for c, v in row.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(column: str, value) -> str:
    if column == "median_km" and isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.3f}"  # km at country scale, metres show at campus scale
    return f"{value:.3f}" if isinstance(value, float) else str(value)
