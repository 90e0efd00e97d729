"""Iterative fine-tuning over proximity-graph regions (Fushimi & Koike 2025): w/o, FT1, FT2, FT3 ...

Round 0 ("w/o") cuts regions from the pretrained features and grades a linear probe on them.
Round r >= 1 fine-tunes the ViT to classify the training photos into the regions of round r - 1,
grades it on the held-out photos, re-embeds every photo with the fine-tuned model, re-weights the
graph and cuts it again: those regions are round r + 1's classes. The backbone carries over from
round to round; the head is new each round, since the regions change.

Only the last `unfrozen_blocks` blocks train, so the frozen prefix runs once per photo for the whole
run (cached on disk, memory-mapped) and each epoch costs k blocks. On a GPU the same loop runs under
bf16 autocast.

Resumable: after every epoch `checkpoints/last.pt` (state dicts and the epoch's record, loaded with
weights_only=True) is replaced atomically, then the record is appended to `metrics.jsonl`; a killed
run restarts from the last checkpoint, replays any record it lost, and draws the same batches.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from geoloc_core.base import storage
from geoloc_core.config import FinetuneConfig, RegionConfig
from geoloc_core.evaluate.linear_probe import fit_linear_probe
from geoloc_core.evaluate.metrics import chance_metrics, classification_metrics, held_out_answers, region_metrics
from geoloc_core.features.embed import decoded_batches
from geoloc_core.features.encoders import Encoder, autocast, load_encoder, resolve_device
from geoloc_core.features.towers import Suffix, prefix_tokens
from geoloc_core.ingest.photos import PhotoTable
from geoloc_core.learn.classifier import RegionClassifier
from geoloc_core.regions.boundaries import ClipArea, clip_area
from geoloc_core.regions.partition import SiteGraph
from geoloc_core.runs import provenance
from geoloc_core.runs.folders import FinetuneRun, Run
from geoloc_core.runs.provenance import Stale
from geoloc_core.runs.stages import write_regions

log = logging.getLogger(__name__)


@dataclass
class RoundResult:
    """One row of the method: round 0 is "w/o", round r is FTr.

    `labels` are the regions this round's classifier was trained and graded on; `next_labels` the
    regions cut from this round's embeddings, which the next round learns.
    """

    round: int
    name: str
    metrics: dict
    labels: np.ndarray
    emb: np.ndarray
    next_labels: np.ndarray
    next_modularity: float
    epochs: list[dict] = field(default_factory=list)


def round_name(r: int) -> str:
    """A round's name in tables: "w/o" for round 0, else FT1, FT2, ..."""
    return "w/o" if r == 0 else f"FT{r}"


Progress = Callable[[int, int], None]  # (done, total) of the phase under way


def _no_progress(done: int, total: int) -> None:
    pass


def cached_prefix_tokens(run: Run, encoder: Encoder, table: PhotoTable, unfrozen_blocks: int, batch_size: int = 16,
                         progress: Progress = _no_progress) -> np.ndarray:
    """(N, T, D) float16 tokens entering the first unfrozen block, computed once and memory-mapped."""
    photos = hashlib.sha1("".join(table.frame["sha1"]).encode()).hexdigest()[:12]  # a re-ingested run gets new tokens
    path = run.prefix_tokens(encoder.key, unfrozen_blocks, photos)
    if path.exists():
        return storage.read_npy(path, mmap=True)
    paths = table.abs_paths()
    chunks, start, done = [], time.perf_counter(), 0
    bar = tqdm(total=len(paths), desc=f"prefix (first {len(encoder.model.transformer.resblocks) - unfrozen_blocks} "
                                      "blocks)", unit="img")
    for idx, pixels, errors in decoded_batches(paths, range(len(paths)), encoder, batch_size, workers=4):
        if errors:
            raise ValueError(f"photos became unreadable since ingest: {errors}")
        with torch.no_grad(), autocast(encoder.device):
            chunks.append(prefix_tokens(encoder.model, pixels.to(encoder.device), unfrozen_blocks).half().cpu().numpy())
        done += len(idx)
        bar.update(len(idx))
        progress(done, len(paths))
    bar.close()
    log.info("prefix tokens: %.1f img/s", len(paths) / (time.perf_counter() - start))
    storage.write_npy(path, np.concatenate(chunks))
    return storage.read_npy(path, mmap=True)


def _batch(tokens: np.ndarray, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    order = np.argsort(idx)  # memmaps read fastest in file order
    rows = torch.from_numpy(np.asarray(tokens[idx[order]], dtype=np.float32))
    return rows[np.argsort(order)].to(device, non_blocking=True)


def train_epoch(model: RegionClassifier, optimizer: torch.optim.Optimizer, tokens: np.ndarray, idx: np.ndarray,
                label_sets: list[np.ndarray], batch_size: int, generator: torch.Generator, device: torch.device,
                progress: Progress = _no_progress) -> dict:
    """One pass over `idx` in a seeded order; returns loss, training accuracy (first head) and img/s."""
    model.train()
    perm = idx[torch.randperm(len(idx), generator=generator).numpy()]
    total_loss, correct, start = 0.0, 0, time.perf_counter()
    for s in range(0, len(perm), batch_size):
        b = perm[s:s + batch_size]
        x = _batch(tokens, b, device)
        targets = [torch.as_tensor(labels[b], device=device) for labels in label_sets]
        with autocast(device):
            logits = model(x)
            loss = sum(nn.functional.cross_entropy(lg.float(), t) for lg, t in zip(logits, targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(b)
        correct += int((logits[0].argmax(1) == targets[0]).sum())
        progress(s + len(b), len(perm))
    seconds = time.perf_counter() - start
    return {"loss": total_loss / len(perm), "train_acc": correct / len(perm), "train_img_per_s": len(perm) / seconds}


@torch.no_grad()
def predict_log_probs(model: RegionClassifier, tokens: np.ndarray, idx: np.ndarray, batch_size: int,
                      device: torch.device) -> list[np.ndarray]:
    """Per head, (len(idx), n_classes) log-probabilities."""
    model.eval()
    outs: list[list[np.ndarray]] = [[] for _ in model.heads]
    for s in range(0, len(idx), batch_size * 2):
        with autocast(device):
            logits = model(_batch(tokens, idx[s:s + batch_size * 2], device))
        for k, lg in enumerate(logits):
            outs[k].append(torch.log_softmax(lg.float(), dim=1).cpu().numpy())
    return [np.concatenate(o) for o in outs]


@torch.no_grad()
def embed_tokens(suffix: Suffix, tokens: np.ndarray, batch_size: int, device: torch.device,
                 progress: Progress = _no_progress) -> np.ndarray:
    """(N, D) unit embeddings of every photo through the (fine-tuned) suffix."""
    suffix.eval()
    out = []
    for s in range(0, len(tokens), batch_size * 2):
        with autocast(device):
            pooled = suffix(_batch(tokens, np.arange(s, min(s + batch_size * 2, len(tokens))), device))
        out.append(nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
        progress(min(s + batch_size * 2, len(tokens)), len(tokens))
    return np.concatenate(out).astype(np.float32)


def make_optimizer(model: RegionClassifier, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW with the head at `cfg.head_lr` and the unfrozen blocks (if any train) at `cfg.lr`."""
    backbone = [p for p in model.suffix.parameters() if p.requires_grad]
    groups = [{"params": list(model.heads.parameters()), "lr": cfg.head_lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


class FinetuneContext:
    """What every round reads: the photos, the split, the site graph, the tokens and the encoder.

    `progress(phase)` gives a callback that records how far a long phase is in the output folder
    (at most twice a second), for the Train page's bars.
    """

    def __init__(self, run_dir: Path, cfg: FinetuneConfig, out: FinetuneRun | None = None):
        self.run = Run(Path(run_dir).resolve())
        self.out = out
        self.pipeline = self.run.pipeline_config()
        self.table = self.run.photo_table()
        self.graph: SiteGraph = self.run.site_graph(cfg.graph)
        self.projection, self.is_test = self.run.read_split()
        self.train_idx, self.test_idx = np.flatnonzero(~self.is_test), np.flatnonzero(self.is_test)
        embed_cfg = self.pipeline.embed
        self.device = resolve_device(cfg.device)
        self.encoder = load_encoder(embed_cfg.model, embed_cfg.checkpoint, embed_cfg.pretrained, str(self.device),
                                    embed_cfg.image_size)
        self.tokens = cached_prefix_tokens(self.run, self.encoder, self.table, cfg.unfrozen_blocks,
                                           embed_cfg.batch_size, self.progress("caching prefix tokens"))
        self.groups = self.table.frame["group"].to_numpy()
        self.clip: ClipArea | None = None  # what region polygons are clipped to (the run's region settings)

    def grade(self, pred_test: np.ndarray, labels: np.ndarray, held_out: Path | None = None) -> dict:
        """Accuracy, macro-F1, km errors of the predicted regions, and what the regions' sizes alone would score; with
        `held_out`, each held-out photo's answer is written there too (photo, region, pred, error_km), for intervals."""
        if held_out is not None:
            answers = held_out_answers(pred_test, labels, self.table.lat_deg, self.table.lon_deg, self.is_test)
            storage.write_csv(held_out, answers)
        return region_metrics(pred_test, labels, self.table.lat_deg, self.table.lon_deg,
                              self.is_test) | chance_metrics(labels, self.is_test)

    def progress(self, phase: str) -> Progress:
        """A progress callback writing `phase` to the output folder, at most twice a second; a no-op without one."""
        if self.out is None:
            return _no_progress
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done >= total or now - last[0] >= 0.5:
                last[0] = now
                self.out.write_progress(phase, done, total)
        return report


def finetune_rounds(run_dir: Path, cfg: FinetuneConfig, out_dir: Path | None = None,
                    regions: RegionConfig | None = None, restart_stale: bool = False) -> Iterator[RoundResult]:
    """Yield w/o, FT1, ..., FT{cfg.rounds} for the run in `run_dir` (after `geoloc run` or its stages).

    Writes a `FinetuneRun` into `out_dir` (default: a new `finetune_{graph}` folder of the run):
    its config, metrics, checkpoints and, per round k, the regions cut from round k's features and
    its embeddings. If `out_dir` holds a checkpoint, the run resumes from it (with the config it was
    started with, else an error) and yields only the rounds it had not finished.

    The folder's provenance record (what it is trained from: the run's photos, split, embeddings, graph and region
    settings) is written before round 0; a folder whose run has changed since is refused (`provenance.Stale`), or, with
    `restart_stale` (`geoloc experiment`), emptied and trained again: its rounds never mix two splits.
    """
    out = FinetuneRun(out_dir) if out_dir is not None else Run(run_dir).new_finetune(cfg.graph)
    state = load_checkpoint(out)
    if state is not None:
        saved = FinetuneConfig(**{**out.read_config()["finetune"], "device": cfg.device})
        if saved != cfg:
            raise ValueError(f"{out.root} was started with {saved}; resume it with that config")
        try:
            out.check()
        except Stale as stale:
            if not restart_stale:
                raise
            log.warning("%s: training it again (%s)", out.root, stale)
            out.clear()
            state = None
    ctx = FinetuneContext(run_dir, cfg, out)
    regions = regions or ctx.pipeline.regions
    ctx.clip = clip_area(regions, ctx.table.lat_deg, ctx.table.lon_deg)
    storage.write_json(out.config, {"finetune": cfg, "regions": regions, "run_dir": str(ctx.run.root)})
    if state is None:
        provenance.record(out.record, [], ctx.run.finetune_inputs(storage.to_jsonable(cfg)))
    cut = lambda emb: ctx.graph.partition(emb, regions.negative, regions.resolution, regions.seed)  # noqa: E731

    if state is None:
        result = _round_zero(ctx, out, cut)
        yield result
        state = {"round": 1, "epoch": -1, "labels": torch.from_numpy(result.next_labels), "suffix": {}}
    else:
        _replay_lost_record(out, state["record"])
    suffix = Suffix(ctx.encoder.model, cfg.unfrozen_blocks).to(ctx.device)
    if state["suffix"]:
        suffix.load_state_dict(state["suffix"])
    labels = state["labels"].numpy()
    for r in range(int(state["round"]), cfg.rounds + 1):
        mid_round = state if int(state["round"]) == r and int(state["epoch"]) >= 0 else None
        result = _finetune_round(ctx, cfg, out, r, suffix, labels, cut, mid_round)
        labels = result.next_labels
        yield result


def load_checkpoint(out: FinetuneRun) -> dict | None:
    """The folder's last checkpoint (round, epoch, labels, weights, optimizer state, record); None before the first."""
    path = out.last_checkpoint
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def is_finished(out: FinetuneRun) -> bool:
    """Whether every round the folder was started with is done (nothing left to resume)."""
    state = load_checkpoint(out)
    return state is not None and int(state["round"]) > int(out.read_config()["finetune"]["rounds"])


def close_finished(out: FinetuneRun) -> None:
    """Mark a finished folder done, recording what a kill between its last checkpoint and its metrics lost."""
    _replay_lost_record(out, load_checkpoint(out)["record"])
    out.write_status("done")


def _save_checkpoint(path: Path, state: dict) -> None:
    storage.atomic_write(path, lambda f: torch.save(state, f))


def _replay_lost_record(out: FinetuneRun, record: dict) -> None:
    """A kill between checkpoint and metrics append loses one record; the checkpoint still has it."""
    key = lambda r: (r.get("kind"), r.get("round"), r.get("epoch"))  # noqa: E731
    if not any(key(r) == key(record) for r in out.read_metrics()):
        out.append_metrics(record)


def _round_zero(ctx: FinetuneContext, out: FinetuneRun, cut) -> RoundResult:
    emb, _ = ctx.run.read_embeddings()
    labels, partition = cut(emb)
    probe = fit_linear_probe(emb[ctx.train_idx], labels[ctx.train_idx], ctx.groups[ctx.train_idx])
    metrics = (ctx.grade(probe.predict(emb[ctx.test_idx]), labels, out.held_out(0))
               | {"n_regions": partition.n_regions, "modularity": partition.modularity})
    _write_round_outputs(ctx, out, 0, labels, emb)
    record = {"kind": "round", "round": 0, "name": "w/o", **metrics}
    _save_checkpoint(out.last_checkpoint,
                     {"round": 1, "epoch": -1, "labels": torch.from_numpy(labels), "suffix": {}, "record": record})
    out.append_metrics(record)
    return RoundResult(0, "w/o", metrics, labels, emb, labels, partition.modularity)


def _write_round_outputs(ctx: FinetuneContext, out: FinetuneRun, r: int, next_labels: np.ndarray,
                         emb: np.ndarray) -> None:
    storage.write_npy(out.embeddings(r), emb)
    write_regions(out.regions(r), ctx.table, ctx.graph, next_labels, ctx.projection, ctx.clip)


def _finetune_round(ctx: FinetuneContext, cfg: FinetuneConfig, out: FinetuneRun, r: int, suffix: Suffix,
                    labels: np.ndarray, cut, mid_round: dict | None) -> RoundResult:
    n_regions = int(labels.max()) + 1
    model = RegionClassifier(suffix, [n_regions], ctx.encoder.model.proj.shape[1], seed=cfg.seed + r).to(ctx.device)
    optimizer = make_optimizer(model, cfg)
    start_epoch = 0
    if mid_round is not None:
        model.load_state_dict(mid_round["model"])
        optimizer.load_state_dict(mid_round["optimizer"])
        start_epoch = int(mid_round["epoch"]) + 1
    for epoch in range(start_epoch, cfg.epochs):
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + r * 1000 + epoch)
        record = train_epoch(model, optimizer, ctx.tokens, ctx.train_idx, [labels], cfg.batch_size, generator,
                             ctx.device, ctx.progress(f"{round_name(r)} epoch {epoch + 1} of {cfg.epochs}"))
        pred = predict_log_probs(model, ctx.tokens, ctx.test_idx, cfg.batch_size, ctx.device)[0].argmax(1)
        record = {"kind": "epoch", "round": r, "name": round_name(r), "epoch": epoch, "n_regions": n_regions,
                  **record, **classification_metrics(labels[ctx.test_idx], pred)}
        _save_checkpoint(out.last_checkpoint,
                         {"round": r, "epoch": epoch, "labels": torch.from_numpy(labels), "model": model.state_dict(),
                               "optimizer": optimizer.state_dict(), "suffix": {}, "record": record})
        out.append_metrics(record)
        log.info("%s epoch %d: loss %.3f, train acc %.3f, test acc %.3f, %.1f img/s", round_name(r), epoch,
                 record["loss"], record["train_acc"], record["acc"], record["train_img_per_s"])
    pred = predict_log_probs(model, ctx.tokens, ctx.test_idx, cfg.batch_size, ctx.device)[0].argmax(1)
    metrics = ctx.grade(pred, labels, out.held_out(r)) | {"n_regions": n_regions}
    emb = embed_tokens(model.suffix, ctx.tokens, cfg.batch_size, ctx.device,
                       ctx.progress(f"{round_name(r)}: re-embedding every photo"))
    next_labels, partition = cut(emb)
    _write_round_outputs(ctx, out, r, next_labels, emb)
    record = {"kind": "round", "round": r, "name": round_name(r), **metrics,
              "next_n_regions": partition.n_regions, "next_modularity": partition.modularity}
    _save_checkpoint(out.round_checkpoint(r), {"suffix": model.suffix.state_dict(), "head": model.heads[0].state_dict(),
                                               "unfrozen_blocks": cfg.unfrozen_blocks,
                                               "labels": torch.from_numpy(labels), "encoder": ctx.encoder.key})
    _save_checkpoint(out.last_checkpoint, {"round": r + 1, "epoch": -1, "labels": torch.from_numpy(next_labels),
                           "suffix": model.suffix.state_dict(), "record": record})
    out.append_metrics(record)
    return RoundResult(r, round_name(r), metrics, labels, emb, next_labels, partition.modularity,
                       [e for e in out.read_metrics() if e.get("kind") == "epoch" and e["round"] == r])
