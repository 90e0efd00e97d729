"""One cross-validation engine for `geoloc compare`, `geoloc experiment` and `geoloc levers`.

The held-out unit is a place: folds are drawn over unit labels (the run's `group` column, or any other assignment of
photos to units, such as spatial blocks), never over single photos. Written once here:

- `Folds`: which fold holds each photo out, and the order in which the folds' answers are collected;
- `prepare_fold` / `finetune_folds`: each fold as a run of its own (its split, graphs and w/o regions), kept and reused
  while what it was cut from is unchanged (the fold cache), and each fold's fine-tuning, resumed where it stopped;
- per-photo answers in one table shape (`collect`): `photo`, `fold`, `error_km`, and where a method has them `region`
  and `pred` (a region classifier) or 0/1 columns such as `R@5` or `within_radius`;
- the figures such a table gives with their intervals from one bootstrap over the places (`summary`), and paired
  verdicts of two methods on the same photos and the same resampled places (`paired_rows`);
- `write_tables`: every table of the three commands is written through it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geoloc_core.base import storage
from geoloc_core.config import POLYGON_SETTINGS, CrossValConfig, FinetuneConfig
from geoloc_core.evaluate.metrics import THRESHOLDS_KM, threshold_key
from geoloc_core.evaluate.splits import fold_units
from geoloc_core.evaluate.stats import (
    Resamples,
    Statistic,
    distance_measures,
    estimates,
    location_folds,
    paired,
    resample_places,
    weighted_mean,
)
from geoloc_core.ingest.photos import PhotoTable
from geoloc_core.runs import stages
from geoloc_core.runs.folders import Experiment, FinetuneRun, Run

log = logging.getLogger(__name__)

Measures = dict[str, tuple[np.ndarray, Statistic]]  # figure -> (per-photo values, the statistic over them)
NOT_FIGURES = ("photo", "fold", "region", "pred", "error_km", "lat_deg", "lon_deg")  # answer columns, not 0/1 per photo


@dataclass(frozen=True)
class Folds:
    """K folds over places: the fold that holds each photo out, drawn over unit labels with a seed."""

    fold: np.ndarray  # (N,) int64, 0 .. k-1
    units: np.ndarray  # (N,) the unit (place, or block of places) of each photo: what folds and resamples draw
    seed: int

    @classmethod
    def over(cls, units: np.ndarray, k: int, seed: int = 0) -> Folds:
        """Every unit in exactly one of `k` folds of near-equal unit counts (`stats.location_folds`)."""
        return cls(location_folds(units, k, seed), np.asarray(units), seed)

    @classmethod
    def of_places(cls, photos: PhotoTable, cv: CrossValConfig) -> Folds:
        """The folds of `--folds K --fold-seed S` over the photos' places (their `group` column), or over square blocks
        of places with `--block-km B` (`splits.fold_units`): a new neighbourhood held out, not only a new spot."""
        units = fold_units(photos.frame["group"].to_numpy(), photos.lat_deg, photos.lon_deg, cv.block_km)
        return cls.over(units, cv.folds, cv.fold_seed)

    @property
    def k(self) -> int:
        """Number of folds."""
        return int(self.fold.max()) + 1

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """(fold, (N,) bool held out by it), fold by fold."""
        return ((f, self.fold == f) for f in range(self.k))

    @property
    def order(self) -> np.ndarray:
        """(N,) every photo once, fold by fold (ascending within a fold): the rows of a collected answer table."""
        return np.concatenate([np.flatnonzero(self.fold == f) for f in range(self.k)])

    def resamples(self) -> Resamples:
        """The bootstrap over the units, seeded with the folds' seed, for answers in `order`."""
        return resample_places(self.units[self.order], seed=self.seed)


def collect(per_fold: list[pd.DataFrame], folds: Folds, name: str = "") -> pd.DataFrame:
    """The folds' answer tables (each with a `photo` column, in the fold's held-out order) as one, `fold` added.

    Raises:
        RuntimeError: the answers are not every photo once, fold by fold (a table of another split or fold)."""
    answers = pd.concat([a.assign(fold=f) for f, a in enumerate(per_fold)], ignore_index=True)
    if not np.array_equal(answers["photo"].to_numpy(), folds.order):
        raise RuntimeError(f"the held-out answers of {name or 'a row'} are not this cross-validation's photos")
    return answers


def measures(answers: pd.DataFrame) -> Measures:
    """The figures of an answer table: `acc` (where it has `region` and `pred`), the km figures of `error_km`, then the
    share of photos of every other column (0/1 per photo: `R@5`, `within_radius`, ...)."""
    out: Measures = {}
    if "pred" in answers:
        out["acc"] = ((answers["region"] == answers["pred"]).to_numpy(np.float64), weighted_mean)
    out |= distance_measures(answers["error_km"].to_numpy(np.float64))
    return out | {c: (answers[c].to_numpy(np.float64), weighted_mean) for c in answers if c not in NOT_FIGURES}


def summary(answers: pd.DataFrame, resamples: Resamples) -> dict[str, float]:
    """Each figure of an answer table on all its photos, with `_lo` / `_hi`: its 95 % interval over the places."""
    return estimates(measures(answers), resamples)


def informative(reference: Measures) -> list[tuple[str, bool]]:
    """The figures a verdict compares, with whether higher is better: median km, and the accuracy at every threshold
    where the reference gets between 2 % and 98 % (the thresholds that tell methods apart at this data set's scale)."""
    shares = [threshold_key(t) for t in THRESHOLDS_KM if 0.02 < reference[threshold_key(t)][0].mean() < 0.98]
    return [("median_km", False), *((key, True) for key in shares)]


def paired_rows(comparison: str, ours: Measures, theirs: Measures, metrics: Iterable[tuple[str, bool]],
                resamples: Resamples) -> list[dict]:
    """One verdict row per figure: ours minus theirs on the same photos and the same resampled places. Each verdict is
    at 95 % on its own, not corrected for the number of comparisons."""
    rows = []
    for metric, higher_is_better in metrics:
        (a, statistic), (b, _) = ours[metric], theirs[metric]
        rows.append({"comparison": comparison, "metric": metric,
                     **paired(a.astype(np.float64), b.astype(np.float64), resamples, statistic, higher_is_better)})
    return rows


def write_tables(tables: dict[Path, pd.DataFrame | str | None]) -> None:
    """Every table the three commands write, each atomically: a frame as CSV, a text (Markdown) as it is; None removes a
    table that would be stale beside the others (a single-split comparison has no verdicts)."""
    for path, table in tables.items():
        if table is None:
            path.unlink(missing_ok=True)
        elif isinstance(table, str):
            storage.write_bytes(path, table.encode())
        else:
            storage.write_csv(path, table)


def prepare_fold(run: Run, fold: Run, is_test: np.ndarray, graphs: tuple[str, ...]) -> None:
    """A fold as a run of its own: the parent's photos and embeddings (linked), its own split, graphs and w/o regions.

    A fold cut for another split, from other photos or embeddings (the parent re-ingested, re-embedded) or with other
    graph or region settings is removed whole, its fine-tuning with it: nothing of it may pass for this fold's. The
    same fold asked for another graph keeps its finished fine-tuning (graphs and cuts are deterministic, so those of the
    graphs it had come out the same).
    """
    parent = run.pipeline_config()
    cut = {k: v for k, v in storage.to_jsonable(parent.regions).items() if k not in POLYGON_SETTINGS}  # not graded
    settings = json.dumps(storage.to_jsonable({"regions": cut, "graph": parent.graph}), sort_keys=True)
    key = hashlib.sha1(np.packbits(is_test).tobytes() + settings.encode()
                       + "".join(storage.file_digest(p) for p in (run.photos, run.embeddings)).encode())
    same = fold.read_config().get("fold", {}).get("key") == key.hexdigest()
    if same and all(fold.regions(g).exists() and fold.is_current(f"regions:{g}") for g in graphs):
        return  # already cut: a resumed cross-validation keeps it
    if not same and fold.exists():
        shutil.rmtree(fold.root)
    fold.root.mkdir(parents=True, exist_ok=True)  # the same fold asked for more graphs: its finished work stays
    for name in ("photos", "rejected", "to_locate", "ingest_meta", "embeddings", "patches", "embed_meta"):
        source, link = getattr(run, name), getattr(fold, name)
        if source.exists() and not link.exists():
            link.symlink_to(source.resolve())
    fold.record_config("ingest", parent.ingest)
    fold.record_config("embed", parent.embed)
    kinds = tuple(dict.fromkeys((*fold.graphs(), *graphs))) if same else graphs  # run_graph drops graphs not asked
    stages.run_graph(fold.root, dataclasses.replace(parent.graph, kinds=kinds), is_test=is_test)
    stages.cut_regions(fold.root, parent.regions, graphs)
    fold.record_config("fold", {"of": str(run.root), "key": key.hexdigest()})  # last: a fold cut halfway is cut again


def fold_runs(run: Run, out: Experiment, folds: Folds, graphs: tuple[str, ...]) -> Iterator[Run]:
    """Each fold's run in `out`, prepared (`prepare_fold`) just before it is yielded."""
    for f, is_test in folds:
        log.info("fold %d of %d", f + 1, folds.k)
        prepare_fold(run, out.fold(f), is_test, graphs)
        yield out.fold(f)


def finetune_folds(run_dir: Path, cfg: FinetuneConfig, cv: CrossValConfig) -> list[FinetuneRun]:
    """Each fold's finished fine-tuning over `cfg.graph` (run here where missing, resumed where killed): the fine-tuned
    backbones a cross-validated comparison retrieves with. They are `experiment.cross_validate`'s folds and folders,
    so either reuses the other's finished work; a fold fine-tuned with other settings is refused, never passed off as
    these."""
    from geoloc_core.learn.finetune import finetune_rounds  # torch: only where a fold is fine-tuned

    run = Run(Path(run_dir).resolve())
    done, folds = [], Folds.of_places(run.photo_table(), cv)
    for f, fold_run in enumerate(fold_runs(run, run.cross_validation(cv.folds, cv.fold_seed, cv.block_km), folds,
                                           (cfg.graph,))):
        ft = fold_run.experiment.finetune(cfg.graph)
        saved = ft.read_config().get("finetune")
        if saved is not None and {**saved, "device": cfg.device} != storage.to_jsonable(cfg):
            raise ValueError(f"{ft.root} was fine-tuned with other settings ({saved}); ask for those, or remove it")
        embedded = all(ft.embeddings(r).exists() for r in range(cfg.rounds + 1))
        if len(ft.round_checkpoints()) < cfg.rounds or not embedded:
            log.info("fold %d of %d: fine-tuning %s", f + 1, cv.folds, cfg.graph)
            with ft.job():
                for result in finetune_rounds(fold_run.root, cfg, out_dir=ft.root):
                    log.info("fold %d %s: acc %.3f, %d regions", f + 1, result.name, result.metrics["acc"],
                             result.metrics["n_regions"])
        done.append(ft)
    return done
