"""Every way of locating a photo, on one split: the held-out locations of a run queried against its
training photos, one row per method, the same km metrics and Recall@K for all.

- kNN-<descriptor> top-1 / vote: retrieval alone (AnyLoc), per descriptor (CLS, GeM, VLAD);
- region centroid: the w/o linear probe's predicted region, answered at its centroid;
- regression: the lat/lon MLP (the MAE thesis baseline);
- verified: retrieve, propose candidates, let the GPS verifier choose (G3), once with every default
  source and once per source left out or alone, so each stage's contribution shows.

`cross_time_recall` is the across-time setting (AnyLoc's "anytime"): each year against the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from geoloc_core.analysis.crossval import Folds, collect, informative, measures, paired_rows, summary
from geoloc_core.base.errors import UserError
from geoloc_core.base.geo import LocalProjection, haversine_km
from geoloc_core.config import SOURCES, CompareConfig, CrossValConfig, PredictConfig, PredictorConfig, RegionConfig
from geoloc_core.evaluate.linear_probe import fit_linear_probe
from geoloc_core.evaluate.metrics import distance_metrics, recall_at_k, recall_columns, recall_hits
from geoloc_core.evaluate.stats import Resamples, estimates, resample_places, weighted_mean
from geoloc_core.features.descriptors import describe, fit_vlad_vocabulary
from geoloc_core.ingest.photos import PhotoTable
from geoloc_core.locate.build import fit_auto, fit_predictor
from geoloc_core.locate.index import build_index, search
from geoloc_core.locate.locators import fit_regressor
from geoloc_core.locate.predictor import locate, neighbour_coords, vote
from geoloc_core.regions.partition import region_table
from geoloc_core.runs.folders import Run
from geoloc_core.runs.stages import fold_regions

AUTO_ROW = "auto (chosen on inner folds)"

log = logging.getLogger(__name__)


def source_variants(sources: tuple[str, ...] = PredictorConfig.sources) -> dict[str, tuple[str, ...]]:
    """Row name -> candidate sources: the default set, each source alone, and each left out."""
    variants = {"+".join(sources): sources}
    for s in SOURCES:
        variants.setdefault(s, (s,))
        if s in sources and len(sources) > 1:
            variants.setdefault("+".join(x for x in sources if x != s), tuple(x for x in sources if x != s))
    for extra in ("regions", "regression"):  # the default with each source it leaves out
        if extra not in sources:
            variants.setdefault("+".join(sources + (extra,)), sources + (extra,))
    return variants


@dataclass
class Answers:
    """One method's answers for held-out photos: where it put each, and (retrieval) which of its top k were hits."""

    lat: np.ndarray
    lon: np.ndarray
    hits: np.ndarray | None = None  # (Q, k) bool: a database photo within the recall radius among the top 1 .. k
    per_photo: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. within_radius, unfamiliar: (Q,) bool
    scalars: dict[str, float] = field(default_factory=dict)  # e.g. bandwidth_km, radius_km@90 of this split's predictor
    choice: str = ""  # the auto row: the setting its inner folds chose on this split

    def table(self, photos: PhotoTable, is_test: np.ndarray) -> pd.DataFrame:
        """The answers in the cross-validation engine's shape: one row per held-out photo (photo, where, error_km, R@K
        and the per-photo flags)."""
        test = np.flatnonzero(is_test)
        error_km = haversine_km(self.lat, self.lon, photos.lat_deg[test], photos.lon_deg[test])
        recall = {} if self.hits is None else recall_columns(self.hits)
        return pd.DataFrame({"photo": test, "lat_deg": self.lat, "lon_deg": self.lon, "error_km": error_km, **recall,
                             **self.per_photo})


@dataclass
class Comparison:
    """`compare_methods`' result: one row per method, per-photo predictions of the default verified predictor,
    and (with folds) the paired verdicts and each fold's radius coverage."""

    rows: list[dict]
    predictions: pd.DataFrame
    verdicts: list[dict] = field(default_factory=list)
    folds: list[dict] = field(default_factory=list)


def method_answers(table: PhotoTable, emb: np.ndarray, patches: np.ndarray | None, is_test: np.ndarray,
                   labels: np.ndarray | None,
                   descriptors: tuple[str, ...], cfg: PredictorConfig, compare: CompareConfig, graph: str,
                   unfamiliar_below: float, holdout: np.ndarray | None = None) -> dict[str, Answers]:
    """Every method's answers for the photos `is_test` holds out, each method seeing only the others (and `labels`, the
    w/o regions cut from them). `holdout` (N,): the unit the predictors' inner hold-outs (the radius' calibration,
    auto's inner folds) hold out together, as the folds do: blocks under `--block-km`; default the places."""
    test, train = np.flatnonzero(is_test), np.flatnonzero(~is_test)
    lat, lon, groups = table.lat_deg, table.lon_deg, table.frame["group"].to_numpy()
    region = np.full(len(table), -1) if labels is None else labels
    db = pd.DataFrame({"photo": train, "path": [str(p) for p, t in zip(table.abs_paths(), is_test) if not t],
                       "lat_deg": lat[train], "lon_deg": lon[train], "group": groups[train], "region": region[train]})
    if holdout is not None:
        db["holdout"] = holdout[train]
    db_patches = None if patches is None else patches[train]
    answers = {}

    def hits(ids: np.ndarray) -> np.ndarray:
        return recall_hits(ids, lat[train], lon[train], lat[test], lon[test], compare.recall_radius_km)

    for name in descriptors:
        predictor = fit_predictor(db, emb[train], db_patches,
                                  replace(cfg, descriptor=name, verify=False, retrieval="image"), graph)
        desc = describe(name, emb[test], None if patches is None else patches[test], predictor.vocabulary)
        sims, ids = search(predictor.index, desc, cfg.k)
        n_lat, n_lon = neighbour_coords(predictor, ids)
        answers[f"kNN-{name.upper()} top-1"] = Answers(n_lat[:, 0], n_lon[:, 0], hits(ids))
        answers[f"kNN-{name.upper()} vote"] = Answers(*vote(sims, n_lat, n_lon, predictor.bandwidth_km), hits(ids),
                                                       scalars={"bandwidth_km": predictor.bandwidth_km,
                                                                "radius_km@90": predictor.radius_km})
    if labels is not None:
        probe = fit_linear_probe(emb[train], labels[train], groups[train])
        centroids = region_table(labels[train], lat[train], lon[train])
        pred = probe.predict(emb[test])
        answers[f"region centroid ({graph.upper()} w/o)"] = Answers(centroids["lat_deg"].to_numpy()[pred],
                                                                    centroids["lon_deg"].to_numpy()[pred])
    regressor = fit_regressor(emb[train], lat[train], lon[train], cfg.locator)
    answers["regression (lat/lon MLP)"] = Answers(*regressor.predict(emb[test]))

    verified = fit_predictor(db, emb[train], db_patches, replace(cfg, descriptor="cls", verify=True), graph)
    if verified.regressor is None:  # the same regression: one more candidate in the rows that ask for it
        verified.regressor = regressor
    for name, sources in source_variants(verified.sources).items():
        p_lat, p_lon, sims, ids = locate(verified.with_sources(sources), emb[test], emb[test])
        answer = Answers(p_lat, p_lon, hits(ids))
        if sources == verified.sources:  # does the radius hold its 90 %, and how many new places look unfamiliar?
            answer.per_photo = {"within_radius": _within(haversine_km(p_lat, p_lon, lat[test], lon[test]),
                                                         verified.radius_km),
                                "unfamiliar": verified.familiarity(sims[:, 0]) < unfamiliar_below}
            answer.scalars = {"radius_km@90": verified.radius_km}
        answers[f"verified: {name}"] = answer
    # chosen on inner folds of this split's training places alone: its held-out figure is nested
    if cfg.method == "auto":
        auto = fit_auto(db, emb[train], db_patches, cfg, graph)
        p_lat, p_lon, _, _ = locate(auto, emb[test], emb[test])
        within = _within(haversine_km(p_lat, p_lon, lat[test], lon[test]), auto.radius_km)
        answers[AUTO_ROW] = Answers(p_lat, p_lon, choice=auto.choice["chosen"],
                                    scalars={"radius_km@90": auto.radius_km}, per_photo={"within_radius": within})
    return answers


def _within(error_km: np.ndarray, radius_km: float) -> np.ndarray:
    """(Q,) 1.0 where the error lies within the radius, 0.0 where not; NaN throughout where no radius was calibrated (a
    fold whose training photos hold too few places or blocks): "not measured", never "never within"."""
    if not np.isfinite(radius_km):
        log.warning("no radius calibrated (too few units to hold out): its coverage is not measured")
        return np.full(len(error_km), np.nan)
    return (error_km <= radius_km).astype(np.float64)


def compare_methods(run_dir: Path, compare: CompareConfig = CompareConfig(), cfg: PredictorConfig = PredictorConfig(),
                    graph: str = "dt",
                    unfamiliar_below: float = PredictConfig.unfamiliar_below, cv: CrossValConfig = CrossValConfig(),
                    regions: RegionConfig | None = None) -> Comparison:
    """Every method (see the module docstring) on held-out locations, one row each, and the default verified
    predictor's prediction for each held-out photo (for the error map).

    `cv.folds == 1`: the run's own split, point figures. `cv.folds = K`: grouped K-fold over all locations
    (each held out once; every predictor, probe, verifier and the regions see only the fold's other locations), and each
    figure with a 95 % interval from a bootstrap over locations, plus paired verdicts (`verdicts`).
    """
    run = Run(run_dir)
    table = run.photo_table()
    emb, patches = run.read_embeddings()
    args = (compare.descriptors, cfg, compare, graph, unfamiliar_below)
    if cv.folds == 1:
        _, is_test = run.read_split()
        labels = run.regions(graph).labels()["region"].to_numpy() if run.regions(graph).exists() else None
        answers = method_answers(table, emb, patches, is_test, labels, *args)
        reference = answers[verified_row(cfg.sources)].table(table, is_test)
        return Comparison(_point_rows(answers, table, is_test), _predictions(reference, table))
    folds = Folds.of_places(table, cv)
    regions = regions or run.pipeline_config().regions
    per_fold, fold_rows = [], []
    for f, is_test in folds:
        # the fold's own w/o regions: cut without its locations
        labels = fold_regions(table, emb, is_test, graph, regions)
        answers = method_answers(table, emb, patches, is_test, labels, *args, holdout=folds.units)
        per_fold.append({m: a.table(table, is_test) for m, a in answers.items()})
        verified = answers[verified_row(cfg.sources)]
        within = estimates({"within_radius": (verified.per_photo["within_radius"].astype(np.float64), weighted_mean)},
                           resample_places(folds.units[is_test], seed=cv.fold_seed))
        fold_rows.append({"fold": f, "n_photos": int(is_test.sum()),
                          "n_locations": int(table.frame["group"][is_test].nunique()),
                          # with its interval over the fold's places
                          "radius_km@90": verified.scalars["radius_km@90"], **within,
                          "unfamiliar": float(verified.per_photo["unfamiliar"].mean()),
                          **({"auto_choice": answers[AUTO_ROW].choice} if AUTO_ROW in answers else {})})
        log.info("fold %d of %d: %d held-out photos", f + 1, cv.folds, int(is_test.sum()))
    collected = {m: collect([p[m] for p in per_fold], folds, m) for m in per_fold[0]}
    resamples = folds.resamples()
    rows = [{"method": m, **summary(a, resamples)} for m, a in collected.items()]
    predictions = _predictions(collected[verified_row(cfg.sources)], table)
    verdicts = _verdicts(collected, resamples, cfg.sources) + _auto_verdicts(collected, resamples, cfg.sources)
    return Comparison(rows, predictions, verdicts, fold_rows)


def _auto_verdicts(answers: dict[str, pd.DataFrame], resamples: Resamples, sources: tuple[str, ...]) -> list[dict]:
    """The auto row against the given settings' verified row, on the same held-out photos and
    resampled places: median km."""
    if AUTO_ROW not in answers:
        return []
    return paired_rows(f"{AUTO_ROW} vs {verified_row(sources)}", measures(answers[AUTO_ROW]),
                       measures(answers[verified_row(sources)]), [("median_km", False)], resamples)


_PAIRS = ("kNN-CLS vote",)  # the verified predictor against these, and against each of its sources left out


def verified_row(sources: tuple[str, ...]) -> str:
    """The row of the verified predictor with these candidate sources (the run's setting: the rows' reference)."""
    return "verified: " + "+".join(sources)


def _point_rows(answers: dict[str, Answers], table: PhotoTable, is_test: np.ndarray) -> list[dict]:
    truth = (table.lat_deg[is_test], table.lon_deg[is_test])
    rows = []
    for method, a in answers.items():
        recall = {} if a.hits is None else {k: float(hit.mean()) for k, hit in recall_columns(a.hits).items()}
        rows.append({"method": method, **distance_metrics(a.lat, a.lon, *truth), **recall, **a.scalars,
                     **{name: float(v.mean()) for name, v in a.per_photo.items()}})
    return rows


def _predictions(answers: pd.DataFrame, table: PhotoTable) -> pd.DataFrame:
    """The verified predictor's answer for each held-out photo (`answers`: its answer table): the Evaluate page's error
    map."""
    rows = answers["photo"].to_numpy()
    return pd.DataFrame({"path": table.frame["path"].to_numpy()[rows], "lat_deg": answers["lat_deg"].to_numpy(),
                         "lon_deg": answers["lon_deg"].to_numpy(), "true_lat_deg": table.lat_deg[rows],
                         "true_lon_deg": table.lon_deg[rows], "error_km": answers["error_km"].to_numpy()})


def _verdicts(answers: dict[str, pd.DataFrame], resamples: Resamples, sources: tuple[str, ...]) -> list[dict]:
    """The verified predictor as configured against kNN and against itself without each source: the km error, and the
    accuracy at every threshold that tells methods apart here (`crossval.informative`). Among a dozen verdicts, each at
    95 % on its own, one spurious verdict is no surprise."""
    name = verified_row(sources)
    verified = measures(answers[name])
    left_out = [verified_row(tuple(s for s in sources if s != left)) for left in sources if len(sources) > 1]
    return [row for other in [m for m in _PAIRS if m in answers] + left_out
            for row in paired_rows(f"{name} vs {other}", verified, measures(answers[other]), informative(verified),
                                   resamples)]


def cross_time_recall(run_dir: Path, by: str = "year", descriptors: tuple[str, ...] = ("cls", "gem", "vlad"),
                      radius_km: float | None = None, ks: tuple[int, ...] = (1, 5), n_words: int = 32) -> list[dict]:
    """Each value of column `by` queried against all the others: Recall@K per descriptor (mean over values).

    A hit is a database photo within `radius_km` of the query's location; by default half the
    spacing of the locations (for tiles: the same tile, in another year).
    """
    run = Run(run_dir)
    table = run.photo_table()
    if by not in table.frame:
        raise UserError(f"{run_dir}: photos have no column {by!r} (have {', '.join(table.frame.columns)})",
                        "Give --by the manifest column that names when each photo was taken")
    when = table.frame[by].astype(str).to_numpy()
    lat, lon = table.lat_deg, table.lon_deg
    if radius_km is None:  # half the median spacing of the locations (groups), not of the photos
        xy = pd.DataFrame(LocalProjection.centred_on(lat,
                                                     lon).to_xy_m(lat,
                                                                  lon)).groupby(table.frame["group"].to_numpy()).mean()
        radius_km = float(np.median(cKDTree(xy.to_numpy()).query(xy.to_numpy(), 2)[0][:, 1]) / 2000)
    emb, patches = run.read_embeddings()
    rows = []
    for name in descriptors:
        per_value = []
        for value in np.unique(when):
            q, db = np.flatnonzero(when == value), np.flatnonzero(when != value)
            vocabulary = fit_vlad_vocabulary(patches[db], n_words) if name == "vlad" and patches is not None else None
            def desc(rows_: np.ndarray, name: str = name, vocabulary: np.ndarray | None = vocabulary) -> np.ndarray:
                return describe(name, emb[rows_], None if patches is None else patches[rows_], vocabulary)

            _, ids = search(build_index(desc(db)), desc(q), max(ks))
            per_value.append(recall_at_k(ids, lat[db], lon[db], lat[q], lon[q], radius_km, ks))
        rows.append({"descriptor": name, **{k: float(np.mean([r[k] for r in per_value])) for k in per_value[0]},
                     "queries": len(when), by: len(per_value), "radius_km": radius_km})
    return rows
