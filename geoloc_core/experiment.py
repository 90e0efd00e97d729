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
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import storage
from .baselines import cell_combos, combine_log_probs, cplanet_partitions, mesh_labels
from .classifier import RegionClassifier
from .config import FinetuneConfig
from .finetune import FinetuneContext, finetune_rounds, make_optimizer, predict_log_probs, train_epoch
from .runs import Experiment, FinetuneRun, Run
from .towers import Suffix

log = logging.getLogger(__name__)

COLUMNS = ["graph", "method", "acc", "chance_acc", "macro_f1", "n_regions", "median_km", "acc@0.1km", "acc@0.5km", "acc@1km", "acc@25km", "acc@200km"]


def round_rows(ft: FinetuneRun, graph: str) -> list[dict]:
    """The finished rounds of a fine-tuning folder, one row each (the last record of a round wins)."""
    rounds = {r["round"]: r for r in ft.read_metrics() if r.get("kind") == "round"}
    return [{"graph": graph, "method": rounds[k]["name"], **rounds[k]} for k in sorted(rounds)]


def train_fixed(ctx: FinetuneContext, cfg: FinetuneConfig, label_sets: list[np.ndarray], epochs: int, backbone: bool = True,
                r: int = 0) -> list[np.ndarray]:
    """Train a fresh suffix (its blocks frozen with `backbone=False`: the head alone) on fixed label sets, one head each,
    seeded as fine-tuning's round `r`; held-out log-probabilities per head."""
    suffix = Suffix(ctx.encoder.model, cfg.unfrozen_blocks).to(ctx.device).requires_grad_(backbone)
    n_classes = [int(labels.max()) + 1 for labels in label_sets]
    model = RegionClassifier(suffix, n_classes, ctx.encoder.model.proj.shape[1], cfg.seed + r).to(ctx.device)
    optimizer = make_optimizer(model, cfg)
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + r * 1000 + epoch)
        record = train_epoch(model, optimizer, ctx.tokens, ctx.train_idx, label_sets, cfg.batch_size, generator, ctx.device)
        log.info("baseline epoch %d: loss %.3f, train acc %.3f", epoch, record["loss"], record["train_acc"])
    return predict_log_probs(model, ctx.tokens, ctx.test_idx, cfg.batch_size, ctx.device)


def frozen_head_row(run_dir: Path, cfg: FinetuneConfig, ft: FinetuneRun) -> dict:
    """w/o with FT1's own cosine head and schedule on the frozen backbone: FT1 minus this row is the backbone's gain alone
    (the w/o row's linear probe is another classifier)."""
    ctx = FinetuneContext(run_dir, cfg)
    labels = ft.regions(0).labels()["region"].to_numpy()  # what FT1 learns
    pred = train_fixed(ctx, cfg, [labels], cfg.epochs, backbone=False, r=1)[0].argmax(1)
    return {"graph": cfg.graph, "method": "w/o (cosine head)", "round": 0, **ctx.grade(pred, labels), "n_regions": int(labels.max()) + 1}


def baseline_rows(run_dir: Path, cfg: FinetuneConfig, target: int) -> list[dict]:
    """Mesh and CPlaNet-style rows at about `target` classes."""
    ctx = FinetuneContext(run_dir, cfg)
    train = ~ctx.is_test
    xy = ctx.graph.site_xy_m[ctx.graph.site_of_photo]
    epochs = cfg.epochs * cfg.rounds
    mesh, cell_deg = mesh_labels(ctx.table.lat_deg, ctx.table.lon_deg, xy, train, target)
    pred = train_fixed(ctx, cfg, [mesh], epochs)[0].argmax(1)
    rows = [{"graph": "", "method": "Mesh", **ctx.grade(pred, mesh), "n_regions": int(mesh.max()) + 1, "cell_deg": cell_deg}]
    parts, cells = cplanet_partitions(xy, train, target, seed=cfg.seed)
    pred = combine_log_probs(train_fixed(ctx, cfg, parts, epochs), cell_combos(parts, cells, train))
    rows.append({"graph": "", "method": "CPlaNet", **ctx.grade(pred, cells), "n_regions": int(cells.max()) + 1,
                 "partitions": [int(p.max()) + 1 for p in parts]})
    return rows


def run_experiment(run_dir: Path, cfg: FinetuneConfig, graphs: tuple[str, ...] | None = None,
                   out_dir: Path | None = None) -> pd.DataFrame:
    """Fine-tune over each graph (default: every graph the run has; finished work resumes), add the baselines, write the table."""
    run = Run(Path(run_dir).resolve())
    out = Experiment(out_dir) if out_dir is not None else run.experiment
    graphs = tuple(graphs or run.graphs())
    rows = []
    for graph in graphs:
        ft = out.finetune(graph)
        with ft.job():  # its state shows (and a killed experiment's folders read as stopped, to resume)
            for result in finetune_rounds(run.root, dataclasses.replace(cfg, graph=graph), out_dir=ft.root):
                log.info("%s %s: acc %.3f, %d regions", graph, result.name, result.metrics["acc"], result.metrics["n_regions"])
        graph_rows = round_rows(ft, graph)
        rows += graph_rows[:1] + [frozen_head_row(run.root, dataclasses.replace(cfg, graph=graph), ft)] + graph_rows[1:]
    last = [r for r in rows if r["round"] == cfg.rounds]
    best = max(last, key=lambda r: r["acc"])
    rows += baseline_rows(run.root, cfg, target=int(best["n_regions"]))
    table = pd.DataFrame(rows)
    storage.write_csv(out.table_csv, table)
    storage.write_bytes(out.table_md, to_markdown(table).encode())
    storage.write_json(out.config, {"finetune": cfg, "graphs": graphs, "run_dir": str(run.root),
                                    "matched_regions": int(best["n_regions"]), "matched_to": f"{best['graph']} {best['method']}"})
    return table


def to_markdown(table: pd.DataFrame) -> str:
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
