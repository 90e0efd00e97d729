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

from geoloc_core.base.geo import LocalProjection, haversine_km
from geoloc_core.config import SOURCES, CompareConfig, CrossValConfig, PredictConfig, PredictorConfig, RegionConfig
from geoloc_core.evaluate.linear_probe import fit_linear_probe
from geoloc_core.evaluate.metrics import THRESHOLDS_KM, distance_metrics, recall_at_k, threshold_key
from geoloc_core.evaluate.stats import Statistic, distance_measures, estimates, location_folds, location_weights, paired, weighted_mean
from geoloc_core.features.descriptors import describe, fit_vlad_vocabulary
from geoloc_core.ingest.photos import PhotoTable
from geoloc_core.locate.build import fit_predictor
from geoloc_core.locate.index import build_index, search
from geoloc_core.locate.locators import fit_regressor
from geoloc_core.locate.predictor import locate, neighbour_coords, vote
from geoloc_core.regions.partition import region_table
from geoloc_core.runs.folders import Run
from geoloc_core.runs.stages import fold_regions

RECALL_KS = (1, 5, 10)

log = logging.getLogger(__name__)


def source_variants(sources: tuple[str, ...] = PredictorConfig.sources) -> dict[str, tuple[str, ...]]:
    """Row name -> candidate sources: the default set, each source alone, and each left out."""
    variants = {"+".join(sources): sources}
    for s in SOURCES:
        variants.setdefault(s, (s,))
        if s in sources and len(sources) > 1:
            variants.setdefault("+".join(x for x in sources if x != s), tuple(x for x in sources if x != s))
    variants.setdefault("+".join(sources + ("regions",)), sources + ("regions",))
    return variants


@dataclass
class Answers:
    """One method's answers for held-out photos: where it put each, and (retrieval) which of its top k were hits."""

    lat: np.ndarray
    lon: np.ndarray
    hits: np.ndarray | None = None  # (Q, k) bool: a database photo within the recall radius among the top 1 .. k
    per_photo: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. within_radius, unfamiliar: (Q,) bool
    scalars: dict[str, float] = field(default_factory=dict)  # e.g. bandwidth_km, radius_km@90 of this split's predictor


@dataclass
class Comparison:
    """`compare_methods`' result: one row per method, per-photo predictions of the default verified predictor,
    and (with folds) the paired verdicts and each fold's radius coverage."""

    rows: list[dict]
    predictions: pd.DataFrame
    verdicts: list[dict] = field(default_factory=list)
    folds: list[dict] = field(default_factory=list)


def method_answers(table: PhotoTable, emb: np.ndarray, patches: np.ndarray | None, is_test: np.ndarray, labels: np.ndarray | None,
                   descriptors: tuple[str, ...], cfg: PredictorConfig, compare: CompareConfig, graph: str,
                   unfamiliar_below: float) -> dict[str, Answers]:
    """Every method's answers for the photos `is_test` holds out, each method seeing only the others (and `labels`, the
    w/o regions cut from them)."""
    test, train = np.flatnonzero(is_test), np.flatnonzero(~is_test)
    lat, lon, groups = table.lat_deg, table.lon_deg, table.frame["group"].to_numpy()
    region = np.full(len(table), -1) if labels is None else labels
    db = pd.DataFrame({"photo": train, "path": [str(p) for p, t in zip(table.abs_paths(), is_test) if not t], "lat_deg": lat[train],
                       "lon_deg": lon[train], "group": groups[train], "region": region[train]})
    db_patches = None if patches is None else patches[train]
    answers = {}

    def hits(ids: np.ndarray) -> np.ndarray:
        return recall_hits(ids, lat[train], lon[train], lat[test], lon[test], compare.recall_radius_km)

    for name in descriptors:
        predictor = fit_predictor(db, emb[train], db_patches, replace(cfg, descriptor=name, verify=False, retrieval="image"), graph)
        desc = describe(name, emb[test], None if patches is None else patches[test], predictor.vocabulary)
        sims, ids = search(predictor.index, desc, cfg.k)
        n_lat, n_lon = neighbour_coords(predictor, ids)
        answers[f"kNN-{name.upper()} top-1"] = Answers(n_lat[:, 0], n_lon[:, 0], hits(ids))
        answers[f"kNN-{name.upper()} vote"] = Answers(*vote(sims, n_lat, n_lon, predictor.bandwidth_km), hits(ids),
                                                       scalars={"bandwidth_km": predictor.bandwidth_km, "radius_km@90": predictor.radius_km})
    if labels is not None:
        probe = fit_linear_probe(emb[train], labels[train], groups[train])
        centroids = region_table(labels[train], lat[train], lon[train])
        pred = probe.predict(emb[test])
        answers[f"region centroid ({graph.upper()} w/o)"] = Answers(centroids["lat_deg"].to_numpy()[pred], centroids["lon_deg"].to_numpy()[pred])
    answers["regression (lat/lon MLP)"] = Answers(*fit_regressor(emb[train], lat[train], lon[train], cfg.locator).predict(emb[test]))

    verified = fit_predictor(db, emb[train], db_patches, replace(cfg, descriptor="cls", verify=True), graph)
    for name, sources in source_variants(verified.sources).items():
        p_lat, p_lon, sims, ids = locate(verified.with_sources(sources), emb[test], emb[test])
        answer = Answers(p_lat, p_lon, hits(ids))
        if sources == verified.sources:  # does the radius hold its 90 %, and how many new places look unfamiliar?
            answer.per_photo = {"within_radius": haversine_km(p_lat, p_lon, lat[test], lon[test]) <= verified.radius_km,
                                "unfamiliar": verified.familiarity(sims[:, 0]) < unfamiliar_below}
            answer.scalars = {"radius_km@90": verified.radius_km}
        answers[f"verified: {name}"] = answer
    return answers


def compare_methods(run_dir: Path, compare: CompareConfig = CompareConfig(), cfg: PredictorConfig = PredictorConfig(), graph: str = "dt",
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
        return Comparison(_point_rows(answers, table, is_test), _predictions(answers, table, is_test, verified_row(cfg.sources)))
    fold = location_folds(table.frame["group"].to_numpy(), cv.folds, cv.fold_seed)
    regions = regions or run.pipeline_config().regions
    per_fold, fold_rows = [], []
    for f in range(cv.folds):
        is_test = fold == f
        labels = fold_regions(table, emb, is_test, graph, regions)  # the fold's own w/o regions: cut without its locations
        per_fold.append(method_answers(table, emb, patches, is_test, labels, *args))
        verified = per_fold[-1][verified_row(cfg.sources)]
        fold_rows.append({"fold": f, "n_photos": int(is_test.sum()), "n_locations": int(table.frame["group"][is_test].nunique()),
                          "radius_km@90": verified.scalars["radius_km@90"], "within_radius": float(verified.per_photo["within_radius"].mean()),
                          "unfamiliar": float(verified.per_photo["unfamiliar"].mean())})
        log.info("fold %d of %d: %d held-out photos", f + 1, cv.folds, int(is_test.sum()))
    order = np.concatenate([np.flatnonzero(fold == f) for f in range(cv.folds)])  # the answers' photo order
    answers = {m: _concat([a[m] for a in per_fold]) for m in per_fold[0]}
    weights = location_weights(table.frame["group"].to_numpy()[order], seed=cv.fold_seed)
    truth = (table.lat_deg[order], table.lon_deg[order])
    rows = [{"method": m, **estimates(_measures(a, truth), weights)} for m, a in answers.items()]
    is_test = np.zeros(len(table), bool)
    is_test[order] = True
    predictions = _predictions(answers, table, is_test, verified_row(cfg.sources), order)
    return Comparison(rows, predictions, _verdicts(answers, truth, weights, cfg.sources), fold_rows)


_PAIRS = ("kNN-CLS vote",)  # the verified predictor against these, and against each of its sources left out


def verified_row(sources: tuple[str, ...]) -> str:
    """The row of the verified predictor with these candidate sources (the run's setting: the rows' reference)."""
    return "verified: " + "+".join(sources)


def recall_hits(ids: np.ndarray, db_lat: np.ndarray, db_lon: np.ndarray, lat: np.ndarray, lon: np.ndarray, radius_km: float) -> np.ndarray:
    """(Q, k): whether a database photo within `radius_km` is among each query's top 1 .. k."""
    return np.cumsum(haversine_km(db_lat[ids], db_lon[ids], lat[:, None], lon[:, None]) <= radius_km, axis=1) > 0


def _point_rows(answers: dict[str, Answers], table: PhotoTable, is_test: np.ndarray) -> list[dict]:
    truth = (table.lat_deg[is_test], table.lon_deg[is_test])
    rows = []
    for method, a in answers.items():
        recall = {} if a.hits is None else {f"R@{k}": float(a.hits[:, min(k, a.hits.shape[1]) - 1].mean()) for k in RECALL_KS}
        rows.append({"method": method, **distance_metrics(a.lat, a.lon, *truth), **recall, **a.scalars,
                     **{name: float(v.mean()) for name, v in a.per_photo.items()}})
    return rows


def _predictions(answers: dict[str, Answers], table: PhotoTable, is_test: np.ndarray, reference: str,
                 order: np.ndarray | None = None) -> pd.DataFrame:
    """The verified predictor's answer for each held-out photo (`reference`, its row): the Evaluate page's error map."""
    rows = np.flatnonzero(is_test) if order is None else order
    a = answers[reference]
    return pd.DataFrame({"path": table.frame["path"].to_numpy()[rows], "lat_deg": a.lat, "lon_deg": a.lon,
                         "true_lat_deg": table.lat_deg[rows], "true_lon_deg": table.lon_deg[rows],
                         "error_km": haversine_km(a.lat, a.lon, table.lat_deg[rows], table.lon_deg[rows])})


def _concat(parts: list[Answers]) -> Answers:
    hits = None if parts[0].hits is None else np.concatenate([p.hits for p in parts])
    per_photo = {k: np.concatenate([p.per_photo[k] for p in parts]) for k in parts[0].per_photo}
    return Answers(np.concatenate([p.lat for p in parts]), np.concatenate([p.lon for p in parts]), hits, per_photo)


def _measures(a: Answers, truth: tuple[np.ndarray, np.ndarray]) -> dict[str, tuple[np.ndarray, Statistic]]:
    """Per-photo values and the statistic over them, for every figure of a row."""
    out = distance_measures(haversine_km(a.lat, a.lon, *truth))
    if a.hits is not None:
        out |= {f"R@{k}": (a.hits[:, min(k, a.hits.shape[1]) - 1], weighted_mean) for k in RECALL_KS}
    return out | {name: (v, weighted_mean) for name, v in a.per_photo.items()}


def _verdicts(answers: dict[str, Answers], truth: tuple[np.ndarray, np.ndarray], weights: np.ndarray, sources: tuple[str, ...]) -> list[dict]:
    """The verified predictor against kNN and against itself without each source: the km error, and the accuracy at every
    threshold that tells methods apart here (the verified predictor gets between 2 % and 98 % within it). Each verdict is
    at 95 % on its own, not corrected for the number of comparisons: among a dozen, one spurious verdict is no surprise."""
    name = verified_row(sources)  # the verified predictor as configured
    verified = _measures(answers[name], truth)
    informative = [threshold_key(t) for t in THRESHOLDS_KM if 0.02 < verified[threshold_key(t)][0].mean() < 0.98]
    others = [m for m in _PAIRS if m in answers] + [verified_row(tuple(s for s in sources if s != left)) for left in sources if len(sources) > 1]
    rows = []
    for other in others:
        theirs = _measures(answers[other], truth)
        for metric, higher_is_better in (("median_km", False), *((key, True) for key in informative)):
            (a, statistic), (b, _) = verified[metric], theirs[metric]
            rows.append({"comparison": f"{name} vs {other}", "metric": metric,
                         **paired(a.astype(np.float64), b.astype(np.float64), weights, statistic, higher_is_better)})
    return rows


def cross_time_recall(run_dir: Path, by: str = "year", descriptors: tuple[str, ...] = ("cls", "gem", "vlad"),
                      radius_km: float | None = None, ks: tuple[int, ...] = (1, 5), n_words: int = 32) -> list[dict]:
    """Each value of column `by` queried against all the others: Recall@K per descriptor (mean over values).

    A hit is a database photo within `radius_km` of the query's location; by default half the
    spacing of the locations (for tiles: the same tile, in another year).
    """
    run = Run(run_dir)
    table = run.photo_table()
    if by not in table.frame:
        raise ValueError(f"{run_dir}: photos have no column {by!r} (have {', '.join(table.frame.columns)})")
    when = table.frame[by].astype(str).to_numpy()
    lat, lon = table.lat_deg, table.lon_deg
    if radius_km is None:  # half the median spacing of the locations (groups), not of the photos
        xy = pd.DataFrame(LocalProjection.centred_on(lat, lon).to_xy_m(lat, lon)).groupby(table.frame["group"].to_numpy()).mean()
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
