"""A predictor and how it locates photos. Building one is `build`, its calibration `calibration`, saving and opening
it `store`.

A predictor is a database of geotagged photos (a run's photos), their descriptors in a faiss index,
a GPS-aware verifier trained on them (`locators.GpsVerifier`), and numbers calibrated on the
database alone. Locating photos (`locate`) is G3's retrieve-then-verify:
1. retrieve their top-k database photos;
2. propose candidate coordinates from several sources (`config.SOURCES`): the top-1 neighbour, the centre
   of each neighbour's group (neighbours within `bandwidth_km` of it, similarity-weighted), the
   database sites whose GPS code the photo's image code matches best (GeoCLIP's gallery), the
   region centroids, and the lat/lon regression's answer (`locators.LatLonRegressor`);
3. answer the candidate the verifier scores highest. Without a verifier (or with no sources) the
   answer is the strongest neighbour group, a similarity vote.
With the hierarchy (`PredictorConfig.top_regions`, `region_weight`), PIGEON's cell -> retrieval: a linear probe on the
database's embeddings and w/o regions classifies the photo's region first; retrieval and verification then keep to its
`top_regions` most likely regions, and each candidate's logit gains `region_weight` times log p(its region).
With `PredictorConfig.tta` "flip" (or "crops") the database and the queries are the mean of each photo's and its mirror
image's (or its four corner crops') embeddings.
With `PredictorConfig.ft_round` r the database is a fine-tuning round's re-embedded photos, and a query runs
through that round's blocks in its one forward pass (`classifier.BackboneHead`), so both live in the fine-tuned space.
`bandwidth_km` is calibrated by leave-location-out queries (each database photo located from the
others, never from its own location). The uncertainty radius is the `coverage` quantile of the
errors on database locations held out of a calibration verifier's training; the errors are saved,
so any coverage can be asked for without a rebuild. With a fine-tuned backbone, bandwidth, radius and familiarity
are measured on the photos its fine-tuning held out (`build.fit_predictor`): it places its training photos too well.

A saved predictor (`store`, in a `runs.folders.PredictorStore`) records the settings it was built with and a digest of
everything it was built from; `open_predictor` rebuilds it when either changes. Region labels are
not copied into it: they are read from the run's current regions when it is loaded.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.special import log_softmax

from geoloc_core.base.geo import haversine_km, latlon_to_xyz, xyz_to_latlon
from geoloc_core.config import PredictConfig, PredictorConfig
from geoloc_core.evaluate.linear_probe import LinearProbe
from geoloc_core.features.encoders import Encoder
from geoloc_core.learn.classifier import RegionHead
from geoloc_core.locate.index import build_index, search
from geoloc_core.locate.locators import GpsVerifier, LatLonRegressor
from geoloc_core.locate.retrieval import retrieval_vectors
from geoloc_core.regions.partition import region_table
from geoloc_core.runs.folders import RegionFiles

log = logging.getLogger(__name__)

GALLERY_SIZE = 10  # database sites proposed by the verifier's own GPS-code search
REGION_POOL = 20  # neighbours searched per one kept when retrieval keeps to the top regions
MAX_POOLED = 1000  # a group's strongest neighbours its vote runs over (the vote's memory grows with their square)


@dataclass
class Predictor:
    """The database side: descriptors in an index, photo metadata, verifier, calibration, and the encoder."""

    cfg: PredictorConfig
    index: object
    db: pd.DataFrame  # photo (row of the run's photos), path (absolute), lat_deg, lon_deg, group, region
    vocabulary: np.ndarray | None
    bandwidth_km: float
    calibration_errors_km: np.ndarray  # errors on database locations held out of a calibration predictor
    familiar_sims: np.ndarray  # sorted top-1 similarities of leave-location-out database queries
    coverage: float = 0.9
    unfamiliar_below: float = PredictConfig.unfamiliar_below  # familiarity under which a photo is flagged as a guess
    graph: str = "dt"  # whose regions label the predictions
    verifier: GpsVerifier | None = None
    encoder: Encoder | None = None
    region_head: RegionHead | None = None
    regions: RegionFiles | None = None  # the partition `Prediction.region` numbers (polygons beside it)
    region_labels: np.ndarray | None = None  # (len(db),) each database photo's region in `regions`; None: db["region"]
    # with cfg.ft_round: the round the database was embedded with; queries run its blocks
    backbone: RegionHead | None = None
    region_probe: LinearProbe | None = None  # with the hierarchy: the database's region classifier over db["region"]
    regressor: LatLonRegressor | None = None  # source "regression": the lat/lon MLP whose answer is one more candidate
    # method "auto": the settings chosen and the inner folds' evidence (`auto.choose_settings`)
    choice: dict | None = None

    @property
    def hierarchical(self) -> bool:
        """Whether the region probe takes part: top regions or a region prior is on."""
        return self.region_probe is not None and bool(self.cfg.top_regions or self.cfg.region_weight)

    @cached_property
    def _db_region_class(self) -> np.ndarray:
        """(len(db),) each database photo's region as a column of the probe's classes
        (-1: a region it does not know)."""
        classes, regions = self.region_probe.classes, self.db["region"].to_numpy()
        at = np.clip(np.searchsorted(classes, regions), 0, len(classes) - 1)
        return np.where(classes[at] == regions, at, -1)

    def region_class_at(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """(...) coordinates -> (...) the probe's class of the nearest database photo's w/o region (-1: unknown)."""
        return self._db_region_class[self._db_tree.query(latlon_to_xyz(lat_deg, lon_deg))[1]]

    @property
    def descriptor(self) -> str:
        """The retrieval descriptor (cls, gem or vlad)."""
        return self.cfg.descriptor

    @property
    def k(self) -> int:
        """Database photos retrieved per query."""
        return self.cfg.k

    @property
    def sources(self) -> tuple[str, ...]:
        """Where candidate coordinates come from."""
        return self.cfg.sources

    def with_sources(self, sources: tuple[str, ...]) -> Predictor:
        """The same predictor proposing candidates from other sources (for comparisons)."""
        return replace(self, cfg=replace(self.cfg, sources=sources))

    @property
    def radius_km(self) -> float:
        """Holds the truth for `coverage` of new photos: split conformal's finite-sample quantile of the held-out
        calibration errors, the ceil((n + 1) coverage)-th smallest of n (nan with too few places to calibrate)."""
        errors = np.sort(self.calibration_errors_km)
        if not len(errors):
            return float("nan")
        return float(errors[min(len(errors), math.ceil((len(errors) + 1) * self.coverage)) - 1])

    def familiarity(self, top1_sims: np.ndarray) -> np.ndarray:
        """(M,) share of leave-location-out database queries whose best match was no closer than each query's: how
        like the database a photo is, calibrated on the database alone (near 0: unlike any place it has seen)."""
        if not len(self.familiar_sims):
            return np.full(len(top1_sims), np.nan)
        return np.searchsorted(self.familiar_sims, top1_sims, side="right") / len(self.familiar_sims)

    @property
    def region_source(self) -> str:
        """What names the predicted region: the fine-tuned classifier, or the nearest database photo's w/o region."""
        return (f"{self.graph.upper()} {self.region_head.name}" if self.region_head
                else f"{self.graph.upper()} w/o, nearest photo")

    @cached_property
    def _db_tree(self) -> cKDTree:
        return cKDTree(latlon_to_xyz(self.db["lat_deg"].to_numpy(), self.db["lon_deg"].to_numpy()))

    def region_at(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """(M,) region of `regions` at each location: that of the nearest database photo, whose Voronoi cell the
        polygons draw (-1 where the run has no regions)."""
        labels = self.db["region"].to_numpy() if self.region_labels is None else self.region_labels
        return labels[self._db_tree.query(latlon_to_xyz(lat_deg, lon_deg))[1]]

    @cached_property
    def sites(self) -> pd.DataFrame:
        """The database's distinct coordinates: the verifier's gallery."""
        return self.db[["lat_deg", "lon_deg"]].drop_duplicates(ignore_index=True)

    @cached_property
    def _gallery_index(self):
        return build_index(self.verifier.gps_codes(self.sites["lat_deg"].to_numpy(), self.sites["lon_deg"].to_numpy()))

    @cached_property
    def region_centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """(R,) lat, lon of each region's centroid over the database photos whose region is known; empty if none is."""
        known = self.db[self.db["region"] >= 0]
        if known.empty:
            return np.empty(0), np.empty(0)
        table = region_table(known["region"].to_numpy(), known["lat_deg"].to_numpy(), known["lon_deg"].to_numpy())
        return table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy()


def neighbour_groups(sims: np.ndarray, lat: np.ndarray, lon: np.ndarray, bandwidth_km: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, k) neighbour similarities and coordinates -> each neighbour's group: (support, centre lat, centre lon),
    (M, k) each.

    A neighbour's group is the neighbours within `bandwidth_km` of it; its support is their summed
    similarity and its centre their similarity-weighted mean on the sphere.
    """
    d = haversine_km(lat[:, :, None], lon[:, :, None], lat[:, None, :], lon[:, None, :])  # (M, k, k)
    w = (d <= bandwidth_km) * np.clip(sims, 1e-6, None)[:, None, :]
    c_lat, c_lon = xyz_to_latlon(np.einsum("mij,mjc->mic", w, latlon_to_xyz(lat, lon)))
    return w.sum(axis=2), c_lat, c_lon


def vote(sims: np.ndarray, lat: np.ndarray, lon: np.ndarray, bandwidth_km: float) -> tuple[np.ndarray, np.ndarray]:
    """(M, k) neighbour similarities and coordinates -> (M,) lat, lon of the strongest neighbour group's centre."""
    support, c_lat, c_lon = neighbour_groups(sims, lat, lon, bandwidth_km)
    best = np.argmax(support, axis=1)[:, None]
    return np.take_along_axis(c_lat, best, 1)[:, 0], np.take_along_axis(c_lon, best, 1)[:, 0]


def neighbour_coords(predictor: Predictor, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, k) neighbour ids -> the neighbours' (M, k) latitudes and longitudes."""
    return predictor.db["lat_deg"].to_numpy()[ids], predictor.db["lon_deg"].to_numpy()[ids]


def candidates(predictor: Predictor, emb: np.ndarray, sims: np.ndarray,
               ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, C) candidate latitudes and longitudes from `predictor.sources`, for the verifier to choose among."""
    n_lat, n_lon = neighbour_coords(predictor, ids)
    lats, lons = [], []
    if "top1" in predictor.sources:
        lats.append(n_lat[:, :1]), lons.append(n_lon[:, :1])
    if "clusters" in predictor.sources:
        _, c_lat, c_lon = neighbour_groups(sims, n_lat, n_lon, predictor.bandwidth_km)
        lats.append(c_lat), lons.append(c_lon)
    if "gallery" in predictor.sources:
        _, site = search(predictor._gallery_index, predictor.verifier.image_codes_np(emb), GALLERY_SIZE)
        lats.append(predictor.sites["lat_deg"].to_numpy()[site])
        lons.append(predictor.sites["lon_deg"].to_numpy()[site])
    r_lat, r_lon = predictor.region_centroids
    if "regions" in predictor.sources and len(r_lat):
        lats.append(np.broadcast_to(r_lat, (len(emb), len(r_lat))))
        lons.append(np.broadcast_to(r_lon, (len(emb), len(r_lon))))
    # a country-scale regression can beat retrieval
    if "regression" in predictor.sources and predictor.regressor is not None:
        g_lat, g_lon = predictor.regressor.predict(emb)
        lats.append(g_lat[:, None]), lons.append(g_lon[:, None])
    return np.concatenate(lats, axis=1), np.concatenate(lons, axis=1)


def locate(predictor: Predictor, desc: np.ndarray, emb: np.ndarray, together: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(M, D) query descriptors and unit CLS embeddings -> (lat (M,), lon (M,), sims (M, k), ids (M, k)); the query is
    searched in the predictor's retrieval space (`retrieval.retrieval_vectors`), plain
    (the database alone is propagated).

    `together`: (M,) labels (None: alone); queries that share one are photos of one place, located jointly
    (`group_answer`). Each keeps its own neighbours, searched within the group's top regions with the hierarchy."""
    if together is not None and len(together) != len(emb):
        raise ValueError(f"{len(together)} group labels for {len(emb)} photos")
    query = retrieval_vectors(predictor.cfg.retrieval, desc, emb, predictor.verifier)
    log_p = predictor.region_probe.log_proba(emb) if predictor.hierarchical else None
    joint = joint_log_proba(log_p, together) if log_p is not None and together is not None else log_p
    top = top_region_mask(joint, predictor.cfg.top_regions) if joint is not None and predictor.cfg.top_regions else None
    sims, ids = search(predictor.index, query, predictor.k) if top is None else search_within(predictor, query, top)
    if predictor.verifier is None or not predictor.sources:
        lat, lon = vote(sims, *neighbour_coords(predictor, ids), predictor.bandwidth_km)
    else:
        c_lat, c_lon = candidates(predictor, emb, sims, ids)
        scores = predictor.verifier.scores(emb, c_lat, c_lon)
        if log_p is not None:
            scores = hierarchy_scores(predictor, scores, log_p, top, predictor.region_class_at(c_lat, c_lon))
        best = np.argmax(scores, axis=1)[:, None]
        lat, lon = np.take_along_axis(c_lat, best, 1)[:, 0], np.take_along_axis(c_lon, best, 1)[:, 0]
    for rows in _members(together) if together is not None else []:
        if len(rows) > 1:  # a photo alone keeps its own answer
            lat[rows], lon[rows] = group_answer(predictor, emb[rows], sims[rows], ids[rows],
                                                None if log_p is None else log_p[rows],
                                                None if top is None else top[rows])
    return lat, lon, sims, ids


def group_answer(predictor: Predictor, emb: np.ndarray, sims: np.ndarray, ids: np.ndarray, log_p: np.ndarray | None,
                 top: np.ndarray | None) -> tuple[float, float]:
    """One place's photos ((G, D) embeddings, their (G, k) neighbours, region log-probabilities and the group's
    top-region mask) -> the group's one answer: the candidate, of all the photos proposed, of highest summed verifier
    logit. The sum is linear in the photos (scale times the summed image codes against each candidate's code, plus the
    region prior times the summed log p(candidate's region): the product of the photos' region
    probabilities), so it costs one pass over the distinct candidates. Without a verifier, the vote over the group's
    strongest `MAX_POOLED` neighbours, pooled."""
    if predictor.verifier is None or not predictor.sources:
        photo, summed = np.unique(ids.ravel(), return_inverse=True)
        support = np.bincount(summed.ravel(), weights=sims.ravel().astype(np.float64))
        keep = np.argsort(-support, kind="stable")[:MAX_POOLED]
        lat, lon = vote(support[keep][None], *neighbour_coords(predictor, photo[keep][None]), predictor.bandwidth_km)
        return float(lat[0]), float(lon[0])
    c_lat, c_lon = candidates(predictor, emb, sims, ids)
    sites = np.unique(np.column_stack([c_lat.ravel(), c_lon.ravel()]), axis=0)
    c_lat, c_lon = sites[None, :, 0], sites[None, :, 1]
    scores = (predictor.verifier.image_codes_np(emb).sum(0, keepdims=True)
              @ predictor.verifier.gps_codes(sites[:, 0], sites[:, 1]).T)
    if log_p is not None:
        scores = hierarchy_scores(predictor, scores, log_p.sum(0, keepdims=True), None if top is None else top[:1],
                                  predictor.region_class_at(c_lat, c_lon))
    best = int(np.argmax(scores[0]))
    return float(c_lat[0, best]), float(c_lon[0, best])


def _members(together) -> list[np.ndarray]:
    """(M,) group labels -> the rows of each group; a None (or NaN) label is a group of its own."""
    groups: dict = {}
    for row, label in enumerate(together):
        groups.setdefault(object() if label is None or pd.isna(label) else label, []).append(row)
    return [np.asarray(rows) for rows in groups.values()]


def joint_log_proba(log_p: np.ndarray, together) -> np.ndarray:
    """(M, R) each query's region log-probabilities -> (M, R) its group's, normalised: the product of its photos'."""
    joint = log_p.copy()
    for rows in _members(together):
        joint[rows] = log_softmax(log_p[rows].sum(axis=0))
    return joint


def top_region_mask(log_p: np.ndarray, n: int) -> np.ndarray:
    """(M, R) region log-probabilities -> (M, R) True at each query's `n` most likely regions."""
    top = np.argsort(-log_p, axis=1, kind="stable")[:, :n]
    mask = np.zeros(log_p.shape, bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask


def search_within(predictor: Predictor, desc: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top-k database photos among those of each query's top regions ((M, R) `top`): (sims (M, k), ids (M, k)).

    Searches `REGION_POOL` times k and keeps the pool's photos of the top regions first, in order of similarity; where
    the pool holds fewer than k of them, the best of the rest fill it (their candidates are then refused in
    verification)."""
    sims, ids = search(predictor.index, desc, predictor.k * REGION_POOL)
    cls = predictor._db_region_class[ids]
    inside = (cls >= 0) & np.take_along_axis(top, np.maximum(cls, 0), axis=1)
    order = np.argsort(~inside, axis=1, kind="stable")[:, :predictor.k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)


def hierarchy_scores(predictor: Predictor, scores: np.ndarray, log_p: np.ndarray, top: np.ndarray | None,
                     cand_class: np.ndarray) -> np.ndarray:
    """(M, C) verifier cosines -> (M, C) the verifier's logits (cosine times its learned scale) plus `region_weight`
    times log p(candidate's region); with `top`, a candidate outside the query's top regions scores -inf
    (unless all do). For a
    group (`group_answer`): its summed cosines and summed log-probabilities, one row.

    A candidate whose region the probe does not know counts as the query's least likely region."""
    logits = scores * float(predictor.verifier.log_scale.detach().exp().clamp(max=100))
    cand_log_p = np.where(cand_class >= 0, np.take_along_axis(log_p, np.maximum(cand_class, 0), axis=1),
                          log_p.min(1, keepdims=True))
    logits = logits + predictor.cfg.region_weight * cand_log_p
    if top is None:
        return logits
    inside = (cand_class >= 0) & np.take_along_axis(top, np.maximum(cand_class, 0), axis=1)
    return np.where(inside.any(axis=1, keepdims=True) & ~inside, -np.inf, logits)


