"""Accuracy levers measured against today's default (`geoloc levers`), one row per set of predictor settings.

Each lever is a setting of the predictor (`PredictorConfig`), so a row of the table is the verified predictor
under one set of settings, and the combination is just several settings at once. Every row is cross-validated
over the run's locations with the folds of `geoloc compare --folds K` and `geoloc experiment --folds K`: each
fold's predictor sees only the other folds' photos. A row with `ft_round` r retrieves with fold's own
fine-tuning (round r of `crossval.finetune_folds`, trained without the fold), database and queries alike, as
`geoloc predict --ft-round r` does with the run's fine-tuning. A row at another input size embeds the run's photos at
that size and cuts its regions from those, as a run made with `geoloc run --image-size` would. Each row is paired
against the first (the default) on the same held-out photos and the same resampled locations. A row located `together`
gives each held-out location's photos (its headings) one joint answer (`predictor.locate(together=...)`): a group
figure, per photo, beside the single-photo figures of every other row.

Choosing the best round from this table and then reporting its figure from the same table flatters it a
little (a choice among a few rows); a lever becomes the default only when it wins beyond the interval.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from geoloc_core.analysis.crossval import Folds, collect, finetune_folds, informative, measures, paired_rows, summary
from geoloc_core.base import storage
from geoloc_core.base.geo import haversine_km
from geoloc_core.config import LARGER_INPUT, CrossValConfig, FinetuneConfig, PredictorConfig
from geoloc_core.evaluate.stats import Resamples
from geoloc_core.features.encoders import input_sides
from geoloc_core.locate.build import fit_predictor
from geoloc_core.locate.predictor import locate
from geoloc_core.runs.folders import Run
from geoloc_core.runs.stages import fold_regions, resized_embeddings, tta_embeddings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One row: a name and the predictor settings it stands for."""

    name: str
    predictor: PredictorConfig
    # a location's photos (its headings) located together: a group figure, not a single-photo one
    together: bool = False
    # database and queries embedded at this input side (`geoloc run --image-size`); 0: the run's own
    image_size: int = 0


# the graph-propagated row: a photo and its surroundings weigh alike (1.0 would hide the photo itself)
PROPAGATE_SHARE = 0.5
# the combination's fine-tuned round: the best on croatia-streetview's table, confirmed or not elsewhere
COMBINED_ROUND = 2


def lever_variants(base: PredictorConfig, rounds: int, larger_input: int = LARGER_INPUT) -> list[Variant]:
    """The default first (every other row is paired against it), then each lever alone (the region prior switched on,
    or off where the default has it; the photos embedded at `larger_input` px unless 0, see `larger_input`), then the
    combination of those that stack (a fine-tuned backbone with the region prior), with a location's photos located
    together too."""
    prior_on = bool(base.region_weight)
    prior = (Variant("no region prior", replace(base, region_weight=0.0)) if prior_on
             else Variant("region prior", replace(base, region_weight=1.0)))
    combined = replace(base, ft_round=min(COMBINED_ROUND, rounds), region_weight=base.region_weight or 1.0)
    name = f"FT{combined.ft_round}" + ("" if prior_on else " + region prior")
    combination = ([] if prior_on
                   else [Variant(name, combined)]) + [Variant(f"{name}, together", combined, together=True)]
    return ([Variant("default", base)]
            + [Variant(f"FT{r} backbone", replace(base, ft_round=r)) for r in range(1, rounds + 1)]
            + [Variant("geo projection retrieval", replace(base, retrieval="geo")),
               Variant("graph-propagated database", replace(base, propagate=PROPAGATE_SHARE)),
               Variant("top 3 regions", replace(base, top_regions=3)), prior,
               Variant("flip (test-time)", replace(base, tta="flip")),
               Variant("corner crops (test-time)", replace(base, tta="crops")),
               *([Variant(f"input {larger_input} px", base, image_size=larger_input)] if larger_input else []),
               Variant("photos of a place together", base, together=True)]
            + (combination if rounds else []))


def larger_input(run_dir: Path, size: int) -> int:
    """The higher-resolution row's input side: `size` where the run's encoder can take it and the run is embedded
    smaller, else 0 (no such row), with the reason logged."""
    cfg = Run(run_dir).pipeline_config().embed
    sides = input_sides(cfg.model, cfg.checkpoint)
    if not size or sides is None:
        if size:
            log.warning("%s keeps its own input size: no higher-resolution row", cfg.model)
        return 0
    patch, own = sides[1], cfg.image_size or sides[0]
    if size % patch or size <= own:
        log.warning("no higher-resolution row: %d px is %s", size,
                    f"not a multiple of {cfg.model}'s {patch} px patches" if size % patch
                    else f"no larger than the {own} px the run is embedded at")
        return 0
    return size


def select_rows(variants: list[Variant], names: list[str]) -> list[Variant]:
    """The default (the first row, which every other is paired against) and the rows named, in the table's order."""
    unknown = [n for n in names if n not in {v.name for v in variants}]
    if unknown:
        raise ValueError(f"no lever row {unknown[0]!r}; the rows: {', '.join(v.name for v in variants)}")
    return variants[:1] + [v for v in variants[1:] if v.name in names]


@dataclass
class LeverTable:
    """What `measure_levers` found: a row and a paired verdict per variant, and the per-photo errors behind them."""
    rows: list[dict]  # one per variant: estimates with 95 % intervals
    verdicts: list[dict]  # each variant minus the default, paired
    errors: pd.DataFrame  # photo, fold and each variant's error in km: the per-photo answers behind both


def measure_levers(run_dir: Path, variants: list[Variant], finetune: FinetuneConfig = FinetuneConfig(),
                   cv: CrossValConfig = CrossValConfig(folds=5)) -> LeverTable:
    """Every variant's held-out answers over `cv.folds` folds of the run's locations, then estimates and paired
    verdicts.

    Folds are fine-tuned (`finetune`, over its graph, whose regions the rows use too) only if a variant retrieves with a
    fine-tuned backbone; finished fold fine-tunings are reused."""
    if cv.folds < 2:
        raise ValueError("levers are compared over folds of the run's locations: --folds 2 or more")
    run = Run(Path(run_dir).resolve())
    table = run.photo_table()
    emb0, _ = run.read_embeddings()
    groups = table.frame["group"].to_numpy()  # places: the photos located together
    folds = Folds.of_places(table, cv)
    needs_ft = max(v.predictor.ft_round for v in variants)
    if any(v.predictor.ft_round and (v.predictor.tta != "none" or v.image_size) for v in variants):
        raise ValueError("test-time augmentations and another input size embed with the pretrained encoder: such a "
                         "variant needs ft_round 0")
    if any(v.image_size and v.predictor.tta != "none" for v in variants):
        raise ValueError("a variant at another input size is measured on the photo itself, no augmentation: tta none")
    if needs_ft > finetune.rounds:
        raise ValueError(f"a variant retrieves with FT{needs_ft}, but fine-tuning runs {finetune.rounds} rounds")
    pretrained = {}  # (tta, image_size) -> the pretrained rows' database and queries
    for tta, size in {(v.predictor.tta, v.image_size) for v in variants if not v.predictor.ft_round}:
        pretrained[tta, size] = resized_embeddings(run.root, size) if size else tta_embeddings(run.root, tta)
    graph = finetune.graph
    tuned = finetune_folds(run.root, finetune, cv) if needs_ft else [None] * cv.folds
    regions = run.pipeline_config().regions
    errors = {v.name: np.full(len(table), np.nan) for v in variants}
    for f, is_test in folds:
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        # the fold's w/o regions, cut without its locations from the run's embeddings (a row at another input size: from
        # its own, as a run embedded at that size cuts them)
        labels = {size: fold_regions(table, pretrained["none", size] if size else emb0, is_test, graph, regions)
                  for size in {v.image_size for v in variants}}
        db = pd.DataFrame({"photo": train, "path": [str(p) for p in np.asarray(table.abs_paths(), object)[train]],
                           "lat_deg": table.lat_deg[train], "lon_deg": table.lon_deg[train], "group": groups[train],
                           "holdout": folds.units[train]})  # what inner hold-outs hold out: as the folds do
        fitted = {}  # rows that differ only in how they locate share the fold's predictor
        for v in variants:
            r = v.predictor.ft_round
            emb = pretrained[v.predictor.tta, v.image_size] if r == 0 else storage.read_npy(tuned[f].embeddings(r))
            key = (v.predictor, v.image_size)
            if key not in fitted:
                fitted[key] = fit_predictor(db.assign(region=labels[v.image_size][train]), emb[train], None,
                                            v.predictor, graph, calibrate=False)  # levers report errors, never a radius
            predictor = fitted[key]
            lat, lon, _, _ = locate(predictor, emb[test], emb[test], groups[test] if v.together else None)
            errors[v.name][test] = haversine_km(lat, lon, table.lat_deg[test], table.lon_deg[test])
        log.info("fold %d of %d: %d held-out photos, %d variants", f + 1, cv.folds, len(test), len(variants))
    per_photo = pd.DataFrame({"photo": np.arange(len(table)), "fold": folds.fold, **errors})
    answers, resamples = _answers(per_photo, folds), folds.resamples()
    rows = [{"method": v.name, **summary(answers[v.name], resamples), **_settings(v, variants[0])} for v in variants]
    return LeverTable(rows, paired_verdicts(answers, [v.name for v in variants], resamples), per_photo)


def _answers(errors: pd.DataFrame, folds: Folds) -> dict[str, pd.DataFrame]:
    """Each row's answer table (the engine's shape: photo, error_km, fold), from a table of per-photo errors (photo,
    fold, one column per row)."""
    per_fold = [errors[folds.fold == f] for f in range(folds.k)]
    return {name: collect([e[["photo", name]].rename(columns={name: "error_km"}) for e in per_fold], folds, name)
            for name in errors.columns[2:]}


def _settings(v: Variant, reference: Variant) -> dict:
    """The settings in which a variant differs from the reference, as text (what the row changes)."""
    a, b = storage.to_jsonable(v.predictor), storage.to_jsonable(reference.predictor)
    changes = ([f"{k}={a[k]}" for k in a if a[k] != b[k]] + (["together=location"] if v.together else [])
               + ([f"image_size={v.image_size}"] if v.image_size != reference.image_size else []))
    return {"changes": ", ".join(changes) or "-"}


def paired_verdicts(answers: dict[str, pd.DataFrame], names: list[str], resamples: Resamples) -> list[dict]:
    """Each row of `names` after the first minus the first, paired: median km, and the accuracies at the thresholds that
    tell methods apart for the first (`crossval.informative`)."""
    base = measures(answers[names[0]])
    return [verdict for name in names[1:]
            for verdict in paired_rows(f"{name} vs {names[0]}", measures(answers[name]), base, informative(base),
                                       resamples)]


def pair_rows(run_dir: Path, row: str, reference: str, cv: CrossValConfig = CrossValConfig(folds=5)) -> list[dict]:
    """Any two rows of the run's last lever table paired, from its per-photo errors (`RUN/levers_errors.csv`) and the
    same resampled locations: what a combination adds over one of its parts, without measuring anything again."""
    run = Run(Path(run_dir).resolve())
    run.check_table(run.levers_files)
    errors = pd.read_csv(run.levers_errors)
    missing = [name for name in (row, reference) if name not in errors.columns[2:]]  # the rows, not photo and fold
    if missing:
        raise ValueError(f"{run.levers_errors} has no row {missing[0]!r}; its rows: {', '.join(errors.columns[2:])}")
    folds = Folds.of_places(run.photo_table(), cv)
    if len(errors) != len(folds.fold) or not np.array_equal(errors["fold"], folds.fold):
        raise ValueError(f"{run.levers_errors} was measured over other photos or folds than the run's photos in "
                         f"--folds {cv.folds} --fold-seed {cv.fold_seed}: give the folds it was measured with, or "
                         "measure again")
    answers = _answers(errors[["photo", "fold", reference, row]], folds)
    return paired_verdicts(answers, [reference, row], folds.resamples())
