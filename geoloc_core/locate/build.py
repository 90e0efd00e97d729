"""Building a predictor from a run: its database, index, verifier, region probe and calibrated radius."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from geoloc_core.base import storage
from geoloc_core.base.geo import haversine_km
from geoloc_core.config import PredictorConfig
from geoloc_core.evaluate.linear_probe import LinearProbe, as_linear, fit_linear_probe
from geoloc_core.evaluate.splits import grouped_split
from geoloc_core.features.descriptors import describe, fit_vlad_vocabulary
from geoloc_core.locate.calibration import CALIBRATION_FRAC, calibrate_bandwidth, leave_location_out
from geoloc_core.locate.index import build_index
from geoloc_core.locate.locators import fit_verifier
from geoloc_core.locate.predictor import Predictor, locate
from geoloc_core.locate.retrieval import propagate_over_sites, retrieval_vectors
from geoloc_core.runs.folders import RegionFiles, Run
from geoloc_core.runs.provenance import Stale
from geoloc_core.runs.stages import view_embeddings

log = logging.getLogger(__name__)


def database_index(vectors: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray, propagate: float):
    """(N, D) database photos' unit vectors in the retrieval space -> their index, each vector first mixed with its
    Delaunay-neighbour sites' (`retrieval.propagate_over_sites`) when `propagate` > 0."""
    return build_index(propagate_over_sites(vectors, lat_deg, lon_deg, propagate))


def fit_predictor(db: pd.DataFrame, emb: np.ndarray, patches: np.ndarray | None, cfg: PredictorConfig = PredictorConfig(),
                  graph: str = "dt") -> Predictor:
    """A predictor over database photos (`db`: lat_deg, lon_deg, group, region, path) and their embeddings.

    The uncertainty is measured honestly: a calibration predictor is fitted without a held-out share
    of the database's locations, which it then locates; the final predictor uses everything.
    """
    vocabulary = fit_vlad_vocabulary(patches, cfg.n_words) if cfg.descriptor == "vlad" and patches is not None else None
    region_probe = fit_region_probe(emb, db, cfg)
    desc = describe(cfg.descriptor, emb, patches, vocabulary)
    lat, lon, groups = db["lat_deg"].to_numpy(), db["lon_deg"].to_numpy(), db["group"].to_numpy()
    verifier = fit_verifier(emb, lat, lon, groups, cfg.locator) if cfg.verify else None
    queries = retrieval_vectors(cfg.retrieval, desc, emb, verifier)
    index = database_index(queries, lat, lon, cfg.propagate)
    q, sims, ids = leave_location_out(queries, db, index, cfg.k)
    bandwidth = calibrate_bandwidth(db, q, sims, ids)
    predictor = Predictor(cfg, index, db, vocabulary, bandwidth, np.empty(0), np.sort(sims[:, 0]), graph=graph, verifier=verifier,
                          region_probe=region_probe)
    if db["group"].nunique() >= 5:
        held = grouped_split(groups, CALIBRATION_FRAC, seed=cfg.locator.seed)
        fit = np.flatnonzero(~held)
        fit_db = db.iloc[fit].reset_index(drop=True)
        calibrator_verifier = fit_verifier(emb[fit], lat[fit], lon[fit], groups[fit], cfg.locator) if cfg.verify else None
        calibrator_index = database_index(retrieval_vectors(cfg.retrieval, desc[fit], emb[fit], calibrator_verifier),
                                          lat[fit], lon[fit], cfg.propagate)
        calibrator = replace(predictor, index=calibrator_index, db=fit_db, region_probe=fit_region_probe(emb[fit], fit_db, cfg),
                             verifier=calibrator_verifier)
        p_lat, p_lon, _, _ = locate(calibrator, desc[held], emb[held])
        predictor.calibration_errors_km = haversine_km(p_lat, p_lon, lat[held], lon[held])
    log.info("predictor %s over %d photos: bandwidth %.3f km, 90%% radius %.3f km, verifier %s", cfg.descriptor, len(db),
             bandwidth, predictor.radius_km, "on" if cfg.verify else "off")
    return predictor


def fit_region_probe(emb: np.ndarray, db: pd.DataFrame, cfg: PredictorConfig) -> LinearProbe | None:
    """The hierarchy's region classifier: a linear probe on the database photos of known w/o region (`db["region"]`);
    None when the hierarchy is off (the region prior needs the verifier whose logits it adds to) or the database has
    fewer than two regions (then said: the prior is on by default)."""
    known = db["region"].to_numpy() >= 0
    if not (cfg.top_regions or (cfg.region_weight and cfg.verify)):
        return None
    if len(np.unique(db["region"].to_numpy()[known])) < 2:
        log.warning("no region prior or top regions: the database has fewer than two w/o regions (run `geoloc regions`)")
        return None
    return as_linear(fit_linear_probe(emb[known], db["region"].to_numpy()[known], db["group"].to_numpy()[known], cfg.locator.seed))


def photo_regions(run: Run, graph: str) -> tuple[RegionFiles | None, np.ndarray]:
    """The run's w/o regions of `graph` and the (N,) region of each of its photos (-1 everywhere if it has none).

    A partition cut from other photos, another split, other embeddings or settings is refused (`provenance.Stale`,
    naming what changed), never replaced by "no region"."""
    files = run.regions(graph)
    n = len(run.photo_table())
    if not files.exists():
        return None, np.full(n, -1)
    labels = files.labels()["region"].to_numpy()  # checks the partition's provenance
    if len(labels) != n:
        raise Stale(files.csv.name, [run.photos.name], "run `geoloc regions`")
    return files, labels


def build_predictor(run_dir: Path, cfg: PredictorConfig = PredictorConfig(), database: str = "all", graph: str = "dt") -> Predictor:
    """A predictor over a run's photos (`database="train"` keeps the held-out locations out, for evaluation)."""
    run = Run(run_dir)
    table = run.photo_table()
    _, is_test = run.read_split()
    keep = np.ones(len(table), bool) if database == "all" else ~is_test
    emb, patches = run.read_embeddings()
    if cfg.tta != "none":
        if cfg.ft_round or cfg.descriptor != "cls":
            raise ValueError(f"tta {cfg.tta} averages the pretrained class token's views: use ft_round 0 and the cls descriptor")
        emb = view_embeddings(run_dir, cfg.tta)
    if cfg.ft_round:
        if cfg.descriptor != "cls":
            raise ValueError(f"ft_round {cfg.ft_round} retrieves with the fine-tuned class token: use the cls descriptor, not {cfg.descriptor}")
        emb, patches = storage.read_npy(run.finetune_round(graph, cfg.ft_round).embeddings(cfg.ft_round)), None
    regions_file, regions = photo_regions(run, graph)
    db = pd.DataFrame({"photo": np.flatnonzero(keep), "path": [str(p) for p, m in zip(table.abs_paths(), keep) if m],
                       "lat_deg": table.lat_deg[keep], "lon_deg": table.lon_deg[keep],
                       "group": table.frame["group"].to_numpy()[keep], "region": regions[keep]})
    predictor = fit_predictor(db, emb[keep], None if patches is None else patches[np.flatnonzero(keep)], cfg, graph)
    predictor.regions = regions_file
    return predictor
