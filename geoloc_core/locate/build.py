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
from geoloc_core.evaluate.stats import location_folds
from geoloc_core.features.descriptors import describe, fit_vlad_vocabulary
from geoloc_core.locate.auto import choose_settings
from geoloc_core.locate.calibration import CALIBRATION_FOLDS, calibrate_bandwidth, holdout_units, leave_location_out
from geoloc_core.locate.index import build_index
from geoloc_core.locate.locators import fit_regressor, fit_verifier
from geoloc_core.locate.predictor import Predictor, locate
from geoloc_core.locate.retrieval import propagate_over_sites, retrieval_vectors
from geoloc_core.runs.folders import FinetuneRun, RegionFiles, Run
from geoloc_core.runs.provenance import Stale
from geoloc_core.runs.stages import tta_embeddings

log = logging.getLogger(__name__)


def database_index(vectors: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray, propagate: float):
    """(N, D) database photos' unit vectors in the retrieval space -> their index, each vector first mixed with its
    Delaunay-neighbour sites' (`retrieval.propagate_over_sites`) when `propagate` > 0."""
    return build_index(propagate_over_sites(vectors, lat_deg, lon_deg, propagate))


def fit_predictor(db: pd.DataFrame, emb: np.ndarray, patches: np.ndarray | None,
                  cfg: PredictorConfig = PredictorConfig(),
                  graph: str = "dt", calibrate: bool = True, unseen: tuple[pd.DataFrame, np.ndarray] | None = None
                  ) -> Predictor:
    """A predictor over database photos (`db`: lat_deg, lon_deg, group, region, path) and their embeddings; an
    optional `holdout` column is the unit the radius' calibration folds hold out (blocks under `--block-km`; default:
    the place, `group`, which the verifier's pairs and the probe always use).

    The uncertainty is measured honestly, on photos the embeddings were not learnt from and at places a calibration
    predictor never saw: the bandwidth and the familiarity from their neighbours in the database (their own place left
    out), the radius from calibration predictors fitted without their places, which locate them; the final predictor
    uses everything.
    - Pretrained embeddings learnt from none of the photos: every database place is held out once, over
      `CALIBRATION_FOLDS` folds of places (cross-fitting: one 20 % share of a phone roll's 25 places left 5 places, a
      radius that held 38 % to 86 % of a new fold's photos).
    - A fine-tuned backbone places its training photos better than a new photo, so with one the queries must be
      `unseen`: photos it never trained on (lat_deg, lon_deg and group, with their embeddings), in the database or not.
    `calibrate` False skips the radius: for fits that only score settings (`auto`). `cfg.method` is not read here.
    """
    vocabulary = fit_vlad_vocabulary(patches, cfg.n_words) if cfg.descriptor == "vlad" and patches is not None else None
    region_probe = fit_region_probe(emb, db, cfg)
    desc = describe(cfg.descriptor, emb, patches, vocabulary)
    lat, lon, groups = db["lat_deg"].to_numpy(), db["lon_deg"].to_numpy(), db["group"].to_numpy()
    verifier = fit_verifier(emb, lat, lon, groups, cfg.locator) if cfg.verify else None
    regressor = fit_regressor(emb, lat, lon, cfg.locator) if cfg.verify and "regression" in cfg.sources else None
    vectors = retrieval_vectors(cfg.retrieval, desc, emb, verifier)
    index = database_index(vectors, lat, lon, cfg.propagate)
    outside, q_emb = (None, emb) if unseen is None else unseen
    q_desc = desc if unseen is None else describe(cfg.descriptor, q_emb, None, vocabulary)
    q_vectors = vectors if unseen is None else retrieval_vectors(cfg.retrieval, q_desc, q_emb, verifier)
    q, sims, ids = leave_location_out(q_vectors, db, index, cfg.k, queries=outside)
    bandwidth = calibrate_bandwidth(db, q, sims, ids, outside)
    predictor = Predictor(cfg, index, db, vocabulary, bandwidth, np.empty(0), np.sort(sims[:, 0]), graph=graph,
                          verifier=verifier, region_probe=region_probe, regressor=regressor)
    if calibrate and unseen is not None:
        calibrator = _calibrator(predictor, desc, emb, np.isin(groups, outside["group"].to_numpy()))
        p_lat, p_lon, _, _ = locate(calibrator, q_desc, q_emb)
        predictor.calibration_errors_km = haversine_km(p_lat, p_lon, outside["lat_deg"].to_numpy(),
                                                       outside["lon_deg"].to_numpy())
    elif calibrate and len(np.unique(hold := holdout_units(db))) >= CALIBRATION_FOLDS:
        calibration = location_folds(hold, CALIBRATION_FOLDS, cfg.locator.seed)
        predictor.calibration_errors_km = np.full(len(db), np.nan)
        for f in range(CALIBRATION_FOLDS):  # every place held out once
            held = calibration == f
            p_lat, p_lon, _, _ = locate(_calibrator(predictor, desc, emb, held), desc[held], emb[held])
            predictor.calibration_errors_km[held] = haversine_km(p_lat, p_lon, lat[held], lon[held])
    log.info("predictor %s over %d photos: bandwidth %.3f km, 90%% radius %.3f km, verifier %s", cfg.descriptor,
             len(db), bandwidth, predictor.radius_km, "on" if cfg.verify else "off")
    return predictor


def _calibrator(predictor: Predictor, desc: np.ndarray, emb: np.ndarray, held: np.ndarray) -> Predictor:
    """The predictor fitted again without the database photos `held` (N,) bool: those at the calibration queries'
    places. Itself where it holds none of them."""
    if not held.any():
        return predictor
    cfg, db = predictor.cfg, predictor.db
    fit = np.flatnonzero(~held)
    fit_db = db.iloc[fit].reset_index(drop=True)
    lat, lon, groups = fit_db["lat_deg"].to_numpy(), fit_db["lon_deg"].to_numpy(), fit_db["group"].to_numpy()
    verifier = fit_verifier(emb[fit], lat, lon, groups, cfg.locator) if cfg.verify else None
    index = database_index(retrieval_vectors(cfg.retrieval, desc[fit], emb[fit], verifier), lat, lon, cfg.propagate)
    region_probe = fit_region_probe(emb[fit], fit_db, cfg)
    regressor = None if predictor.regressor is None else fit_regressor(emb[fit], lat, lon, cfg.locator)
    return replace(predictor, index=index, db=fit_db, region_probe=region_probe, verifier=verifier, regressor=regressor)


def fit_auto(db: pd.DataFrame, emb: np.ndarray, patches: np.ndarray | None, cfg: PredictorConfig,
             graph: str = "dt", unseen: tuple[pd.DataFrame, np.ndarray] | None = None) -> Predictor:
    """`cfg.method` "auto": the settings `auto.choose_settings` picks on inner folds of this database, fitted on all of
    it; the choice and its evidence travel with the predictor (`Predictor.choice`, the saved predictor's meta)."""
    chosen, evidence = choose_settings(db, emb, patches, cfg, graph, fit_predictor, cfg.locator.seed)
    predictor = fit_predictor(db, emb, patches, chosen, graph, unseen=unseen)
    predictor.choice = evidence
    return predictor


def fit_region_probe(emb: np.ndarray, db: pd.DataFrame, cfg: PredictorConfig) -> LinearProbe | None:
    """The hierarchy's region classifier: a linear probe on the database photos of known w/o region (`db["region"]`);
    None when the hierarchy is off (the region prior needs the verifier whose logits it adds to) or the database has
    fewer than two regions (then said: the prior is on by default)."""
    known = db["region"].to_numpy() >= 0
    if not (cfg.top_regions or (cfg.region_weight and cfg.verify)):
        return None
    if len(np.unique(db["region"].to_numpy()[known])) < 2:
        log.warning("no region prior or top regions: the database has fewer than two w/o regions "
                    "(run `geoloc regions`)")
        return None
    return as_linear(fit_linear_probe(emb[known], db["region"].to_numpy()[known], db["group"].to_numpy()[known]))


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


def never_trained_on(tuned: FinetuneRun, r: int, n: int) -> np.ndarray:
    """(n,) bool: the run's photos that the fine-tuning `tuned` held out of each of its rounds 1 .. r (their graded
    answers), so that round r's backbone never trained on them."""
    held = np.ones(n, bool)
    for i in range(1, r + 1):
        held &= np.isin(np.arange(n), pd.read_csv(tuned.held_out(i))["photo"].to_numpy())
    if not held.any():
        raise ValueError(f"{tuned.root}: no photo was held out of every round 1 .. {r}, none to calibrate round {r} on")
    return held


def build_predictor(run_dir: Path, cfg: PredictorConfig = PredictorConfig(), database: str = "all",
                    graph: str = "dt") -> Predictor:
    """A predictor over a run's photos (`database="train"` keeps the held-out locations out, for evaluation).

    With `cfg.ft_round` r it is calibrated on the photos the fine-tuning held out of rounds 1 .. r (`never_trained_on`):
    the only photos its backbone has not learnt from, short of fine-tuning again without some (minutes to hours per
    build). With `database="train"` those are the held-out photos it is then tried on: its radius is one quantile fitted
    on them, where the pretrained predictor's is fitted on database locations held out of a calibration predictor.
    """
    run = Run(run_dir)
    table = run.photo_table()
    _, is_test = run.read_split()
    keep = np.ones(len(table), bool) if database == "all" else ~is_test
    emb, patches = run.read_embeddings()
    if cfg.tta != "none":
        if cfg.ft_round or cfg.descriptor != "cls":
            raise ValueError(f"tta {cfg.tta} averages the pretrained class token's augmentations: use ft_round 0 and "
                             "the cls descriptor")
        emb = tta_embeddings(run_dir, cfg.tta)
    unseen = None
    if cfg.ft_round:
        if cfg.descriptor != "cls":
            raise ValueError(f"ft_round {cfg.ft_round} retrieves with the fine-tuned class token: use the cls "
                             f"descriptor, not {cfg.descriptor}")
        tuned = run.finetune_round(graph, cfg.ft_round)
        emb, patches = storage.read_npy(tuned.embeddings(cfg.ft_round)), None
        held = never_trained_on(tuned, cfg.ft_round, len(table))
        unseen = (pd.DataFrame({"lat_deg": table.lat_deg[held], "lon_deg": table.lon_deg[held],
                                "group": table.frame["group"].to_numpy()[held]}), emb[held])
    regions_file, regions = photo_regions(run, graph)
    db = pd.DataFrame({"photo": np.flatnonzero(keep), "path": [str(p) for p, m in zip(table.abs_paths(), keep) if m],
                       "lat_deg": table.lat_deg[keep], "lon_deg": table.lon_deg[keep],
                       "group": table.frame["group"].to_numpy()[keep], "region": regions[keep]})
    fit = fit_auto if cfg.method == "auto" else fit_predictor
    db_patches = None if patches is None else patches[np.flatnonzero(keep)]
    predictor = fit(db, emb[keep], db_patches, cfg, graph, unseen=unseen)
    predictor.regions = regions_file
    return predictor
