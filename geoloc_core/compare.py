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
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .config import PredictConfig, PredictorConfig
from .descriptors import describe, fit_vlad_vocabulary
from .evaluate import centroid_errors, distance_metrics, recall_at_k
from .geo import LocalProjection, haversine_km
from .index import build_index, search
from .locators import fit_regressor
from .predictor import SOURCES, Predictor, build_predictor, locate, neighbour_coords, vote
from .probe import fit_linear_probe
from .runs import Run

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


def compare_methods(run_dir: Path, descriptors: tuple[str, ...] = ("cls", "gem", "vlad"), cfg: PredictorConfig = PredictorConfig(),
                    recall_radius_km: float = 0.025, graph: str = "dt",
                    unfamiliar_below: float = PredictConfig.unfamiliar_below) -> tuple[list[dict], pd.DataFrame]:
    """One row per method (see the module docstring), graded on the run's held-out photos, and the
    default verified predictor's prediction for each of those photos (for the error map)."""
    run = Run(run_dir)
    table = run.photo_table()
    _, is_test = run.read_split()
    emb, patches = run.read_embeddings()
    test, train = np.flatnonzero(is_test), np.flatnonzero(~is_test)
    lat, lon = table.lat_deg, table.lon_deg
    truth = (lat[test], lon[test])
    rows = []

    def row(method: str, p_lat: np.ndarray, p_lon: np.ndarray, predictor: Predictor | None = None, ids=None, **extra) -> None:
        recall = {} if ids is None else recall_at_k(ids, predictor.db["lat_deg"].to_numpy(), predictor.db["lon_deg"].to_numpy(),
                                                     *truth, recall_radius_km)
        rows.append({"method": method, **distance_metrics(p_lat, p_lon, *truth), **recall, **extra})
        log.info("%s: median %.3f km", method, rows[-1]["median_km"])

    for name in descriptors:
        predictor = build_predictor(run.root, replace(cfg, descriptor=name, verify=False), database="train", graph=graph)
        desc = describe(name, emb[test], None if patches is None else patches[test], predictor.vocabulary)
        sims, ids = search(predictor.index, desc, cfg.k)
        n_lat, n_lon = neighbour_coords(predictor, ids)
        row(f"kNN-{name.upper()} top-1", n_lat[:, 0], n_lon[:, 0], predictor, ids)
        row(f"kNN-{name.upper()} vote", *vote(sims, n_lat, n_lon, predictor.bandwidth_km), predictor, ids,
            bandwidth_km=predictor.bandwidth_km, **{"radius_km@90": predictor.radius_km})

    if run.regions(graph).exists():
        labels = run.regions(graph).labels()["region"].to_numpy()
        probe = fit_linear_probe(emb[train], labels[train], table.frame["group"].to_numpy()[train])
        rows.append({"method": f"region centroid ({graph.upper()} w/o)",
                     **centroid_errors(probe.predict(emb[test]), labels[train], lat[train], lon[train], *truth)})

    row("regression (lat/lon MLP)", *fit_regressor(emb[train], lat[train], lon[train], cfg.locator).predict(emb[test]))

    verified = build_predictor(run.root, replace(cfg, descriptor="cls", verify=True), database="train", graph=graph)
    for name, sources in source_variants(verified.sources).items():
        p_lat, p_lon, sims, ids = locate(verified.with_sources(sources), emb[test], emb[test])
        honest = {}
        if sources == verified.sources:  # does the radius hold its 90 %, and how many new places look unfamiliar?
            errors = haversine_km(p_lat, p_lon, *truth)
            honest = {"radius_km@90": verified.radius_km, "within_radius": float(np.mean(errors <= verified.radius_km)),
                      "unfamiliar": float(np.mean(verified.familiarity(sims[:, 0]) < unfamiliar_below))}
        row(f"verified: {name}", p_lat, p_lon, verified, ids, **honest)
        if sources == verified.sources:
            predictions = pd.DataFrame({"path": table.frame["path"].to_numpy()[test], "lat_deg": p_lat, "lon_deg": p_lon,
                                        "true_lat_deg": truth[0], "true_lon_deg": truth[1],
                                        "error_km": haversine_km(p_lat, p_lon, *truth)})
    return rows, predictions


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
