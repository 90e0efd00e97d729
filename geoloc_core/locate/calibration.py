"""Calibrating a predictor on its database alone: leave-location-out queries and the vote bandwidth they choose."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from geoloc_core.base.geo import haversine_km
from geoloc_core.locate.index import search
from geoloc_core.locate.predictor import vote

log = logging.getLogger(__name__)


BANDWIDTH_QUANTILES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)  # of database pairwise distances, tried in calibration


CALIBRATION_FOLDS = 5  # folds over the database's places, each held out of one calibration predictor


def holdout_units(db: pd.DataFrame) -> np.ndarray:
    """(N,) what an inner hold-out of `db` holds out together: its `holdout` column where a protocol gives one (blocks),
    else its places."""
    return db["holdout" if "holdout" in db else "group"].to_numpy().astype(str)


def leave_location_out(desc: np.ndarray, db: pd.DataFrame, index, k: int, max_queries: int = 2000, seed: int = 0,
                       queries: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photos queried against the database without their own location: (query rows (Q,), sims (Q, k), ids (Q, k)).

    What a photo of a new place that the database covers meets: the reference for calibrating on the database alone.
    `desc` are the database's own photos, or, with `queries` (their group), photos from outside it.
    """
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(len(desc), size=min(max_queries, len(desc)), replace=False))
    groups = db["group"].to_numpy()
    query_groups = groups if queries is None else queries["group"].to_numpy()
    extra = int(db["group"].value_counts().max())
    sims, ids = search(index, desc[q], k + extra)
    keep = groups[ids] != query_groups[q][:, None]  # drop the query's own location
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return q, np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)


def calibrate_bandwidth(db: pd.DataFrame, q: np.ndarray, sims: np.ndarray, ids: np.ndarray,
                        queries: pd.DataFrame | None = None) -> float:
    """The vote bandwidth with the lowest median error over leave-location-out queries (`leave_location_out`, with the
    same `queries`)."""
    lat, lon = db["lat_deg"].to_numpy(), db["lon_deg"].to_numpy()
    truth = db if queries is None else queries
    q_lat, q_lon = truth["lat_deg"].to_numpy()[q], truth["lon_deg"].to_numpy()[q]
    pair = haversine_km(lat[ids][:, :, None], lon[ids][:, :, None], lat[ids][:, None, :], lon[ids][:, None, :])
    errors = {float(bw): np.median(haversine_km(*vote(sims, lat[ids], lon[ids], float(bw)), q_lat, q_lon))
              for bw in np.quantile(pair, BANDWIDTH_QUANTILES)}
    return min(errors, key=errors.get)
