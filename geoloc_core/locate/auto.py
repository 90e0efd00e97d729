"""`--method auto`: the database's own cross-validation picks the locator and its main settings.

No one predictor wins everywhere: at country scale the lat/lon regression has the best median, at campus scale the
verified retrieval, and on a phone roll neither may beat plain kNN. So a small grid of settings (`auto_grid`: the
locator, its candidate sources, k, the region prior) is scored on inner folds over the database's places, each setting
fitted without the held-out places, and the lowest median km wins (ties: the earlier row, the given settings first).
The settings that share a database share one fit per inner fold (`fit` once with every source and the largest k, each
row then read off it), and no inner fit is calibrated. The chosen setting's figure here is optimistic (it won on
these folds): an honest figure comes from outer folds the choice never saw (`geoloc compare --folds K --method auto`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from geoloc_core.base.errors import UserError
from geoloc_core.base.geo import haversine_km
from geoloc_core.config import PredictorConfig
from geoloc_core.evaluate.stats import estimate, location_folds, resample_places, weighted_median
from geoloc_core.locate.calibration import holdout_units
from geoloc_core.locate.predictor import Predictor, locate

log = logging.getLogger(__name__)

INNER_FOLDS = 3  # inner folds over the database's places: 2 cores fit each setting's share of a fold in seconds
Fit = Callable[..., Predictor]  # build.fit_predictor(db, emb, patches, cfg, graph, calibrate=...)


def auto_grid(cfg: PredictorConfig) -> dict[str, PredictorConfig]:
    """Row name -> settings, at most 6: the given settings, the regression as one more candidate and alone, the
    neighbours' vote, no region prior, and twice the neighbours."""
    fixed = replace(cfg, method="fixed")
    with_regression = fixed.sources + (() if "regression" in fixed.sources else ("regression",))
    grid = {"given": fixed,
            "verified + regression": replace(fixed, verify=True, sources=with_regression),
            "regression": replace(fixed, verify=True, sources=("regression",)),
            "kNN vote": replace(fixed, verify=False, retrieval="image", top_regions=0),
            "no region prior": replace(fixed, region_weight=0.0),
            f"k {2 * fixed.k}": replace(fixed, k=2 * fixed.k)}
    unique: dict[str, PredictorConfig] = {}
    for name, setting in grid.items():  # a row equal to an earlier one (e.g. no region prior when it is already 0) goes
        if setting not in unique.values():
            unique[name] = setting
    return unique


def as_setting(fitted: Predictor, cfg: PredictorConfig) -> Predictor:
    """The fold's shared fit seen through one row's settings (sources, k, region prior; no verifier for the vote)."""
    return replace(fitted, cfg=cfg, verifier=fitted.verifier if cfg.verify else None)


def choose_settings(db: pd.DataFrame, emb: np.ndarray, patches: np.ndarray | None, cfg: PredictorConfig, graph: str,
                    fit: Fit, seed: int = 0) -> tuple[PredictorConfig, dict]:
    """The grid's setting of lowest median km over inner folds of `db`'s places, and its evidence: every row's median
    km with its 95 % interval (a bootstrap over the database's places), the folds and the photos it rests on.

    `db`, `emb`, `patches`: a database as `build.fit_predictor` takes it. Too few places for inner folds: the given
    settings, said so in the evidence."""
    if cfg.descriptor != "cls" or cfg.retrieval != "image":  # the inner folds query with the class token, searched
        raise UserError(f"--method auto chooses among settings of the cls descriptor retrieved by image (asked: "
                        f"{cfg.descriptor}, {cfg.retrieval})", "Drop --descriptor and --retrieval, or use --method "
                                                               "fixed")
    grid = auto_grid(cfg)
    groups = holdout_units(db)  # places, or blocks of them under --block-km
    n_places = len(np.unique(groups))
    if n_places < 2 * INNER_FOLDS:
        unit = "blocks" if "holdout" in db else "places"
        return grid["given"], {"chosen": "given", "reason": f"{n_places} {unit}: too few for {INNER_FOLDS} inner folds"}
    shared = replace(grid["given"], verify=True, k=max(s.k for s in grid.values()),
                     sources=tuple(dict.fromkeys(s for setting in grid.values() for s in setting.sources)))
    fold = location_folds(groups, INNER_FOLDS, seed)
    errors = {name: np.full(len(db), np.nan) for name in grid}
    lat, lon = db["lat_deg"].to_numpy(), db["lon_deg"].to_numpy()
    for f in range(INNER_FOLDS):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        fitted = fit(db.iloc[train].reset_index(drop=True), emb[train], None if patches is None else patches[train],
                     shared, graph, calibrate=False)
        for name, setting in grid.items():
            p_lat, p_lon, _, _ = locate(as_setting(fitted, setting), emb[test], emb[test])
            errors[name][test] = haversine_km(p_lat, p_lon, lat[test], lon[test])
    resamples = resample_places(groups, seed=seed)
    scores = {name: estimate(e, resamples, weighted_median) for name, e in errors.items()}
    chosen = min(scores, key=lambda name: scores[name][0])  # dicts keep order: a tie goes to the earlier row
    evidence = {"chosen": chosen, "inner_folds": INNER_FOLDS, "places": n_places, "photos": len(db),
                "median_km": {name: list(s) for name, s in scores.items()},
                "settings": {name: _changes(setting, grid["given"]) for name, setting in grid.items()}}
    log.info("auto: %s (median %.3f km over %d inner folds of %d places)", chosen, scores[chosen][0], INNER_FOLDS,
             n_places)
    return grid[chosen], evidence


def _changes(setting: PredictorConfig, given: PredictorConfig) -> dict:
    """The fields a row changes from the given settings (what the Evaluate page and the predictor's meta show)."""
    return {name: getattr(setting, name)
            for name in ("verify", "sources", "k", "region_weight", "retrieval", "top_regions")
            if getattr(setting, name) != getattr(given, name)}


def evidence_table(evidence: dict) -> pd.DataFrame:
    """A choice's evidence as rows: setting, median km with its interval, what it changes, and which one was chosen."""
    return pd.DataFrame([{"setting": name, "median_km": m, "median_km_lo": lo, "median_km_hi": hi,
                          "chosen": name == evidence["chosen"],
                          "changes": ", ".join(f"{k} {v}" for k, v in evidence["settings"][name].items())
                          or "(as given)"}
                         for name, (m, lo, hi) in evidence.get("median_km", {}).items()])
