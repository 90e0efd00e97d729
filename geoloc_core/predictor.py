"""A predictor: the database side of locating photos, built from a run, saved in it, and reloaded.

A predictor is a database of geotagged photos (a run's photos), their descriptors in a faiss index,
a GPS-aware verifier trained on them (`locators.GpsVerifier`), and numbers calibrated on the
database alone. Locating photos (`locate`) is G3's retrieve-then-verify:
1. retrieve their top-k database photos;
2. propose candidate coordinates from several sources (`config.SOURCES`): the top-1 neighbour, the centre
   of each neighbour's group (neighbours within `bandwidth_km` of it, similarity-weighted), the
   database sites whose GPS code the photo's image code matches best (GeoCLIP's gallery), and the
   region centroids;
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
so any coverage can be asked for without a rebuild.

A saved predictor (`runs.PredictorStore`) records the settings it was built with and a digest of
everything it was built from; `open_predictor` rebuilds it when either changes. Region labels are
not copied into it: they are read from the run's current regions when it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.special import log_softmax

from . import storage
from .classifier import RegionHead, load_region_head
from .config import PredictConfig, PredictorConfig, from_dict
from .descriptors import describe, fit_vlad_vocabulary
from .embed import TTA_VIEWS
from .encoders import Encoder, load_encoder
from .geo import haversine_km, latlon_to_xyz, xyz_to_latlon
from .index import build_index, load_index, save_index, search
from .locators import GpsVerifier, fit_verifier, load_locator, locator_meta, save_locator
from .pipeline import view_embeddings
from .probe import LinearProbe, as_linear, fit_linear_probe
from .regions import region_table
from .retrieval import propagate_over_sites, retrieval_vectors
from .runs import PredictorStore, RegionFiles, Run, fingerprint
from .splits import grouped_split

log = logging.getLogger(__name__)

BANDWIDTH_QUANTILES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)  # of database pairwise distances, tried in calibration
GALLERY_SIZE = 10  # database sites proposed by the verifier's own GPS-code search
CALIBRATION_FRAC = 0.2  # database locations held out of the calibration verifier
PREDICTOR_FORMAT = 5  # bump when a saved predictor's contents change meaning
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
    backbone: RegionHead | None = None  # with cfg.ft_round: the round the database was embedded with; queries run its blocks
    region_probe: LinearProbe | None = None  # with the hierarchy: the database's region classifier over db["region"]

    @property
    def hierarchical(self) -> bool:
        return self.region_probe is not None and bool(self.cfg.top_regions or self.cfg.region_weight)

    @cached_property
    def _db_region_class(self) -> np.ndarray:
        """(len(db),) each database photo's region as a column of the probe's classes (-1: a region it does not know)."""
        classes, regions = self.region_probe.classes, self.db["region"].to_numpy()
        at = np.clip(np.searchsorted(classes, regions), 0, len(classes) - 1)
        return np.where(classes[at] == regions, at, -1)

    def region_class_at(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """(...) coordinates -> (...) the probe's class of the nearest database photo's w/o region (-1: unknown)."""
        return self._db_region_class[self._db_tree.query(latlon_to_xyz(lat_deg, lon_deg))[1]]

    @property
    def descriptor(self) -> str:
        return self.cfg.descriptor

    @property
    def k(self) -> int:
        return self.cfg.k

    @property
    def sources(self) -> tuple[str, ...]:
        return self.cfg.sources

    def with_sources(self, sources: tuple[str, ...]) -> Predictor:
        """The same predictor proposing candidates from other sources (for comparisons)."""
        return replace(self, cfg=replace(self.cfg, sources=sources))

    @property
    def radius_km(self) -> float:
        """Holds the truth for `coverage` of the calibration photos (nan with too few locations to calibrate)."""
        errors = self.calibration_errors_km
        return float(np.quantile(errors, self.coverage)) if len(errors) else float("nan")

    def familiarity(self, top1_sims: np.ndarray) -> np.ndarray:
        """(M,) share of leave-location-out database queries whose best match was no closer than each query's: how
        like the database a photo is, calibrated on the database alone (near 0: unlike any place it has seen)."""
        if not len(self.familiar_sims):
            return np.full(len(top1_sims), np.nan)
        return np.searchsorted(self.familiar_sims, top1_sims, side="right") / len(self.familiar_sims)

    @property
    def region_source(self) -> str:
        return f"{self.graph.upper()} {self.region_head.name}" if self.region_head else f"{self.graph.upper()} w/o, nearest photo"

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
        known = self.db[self.db["region"] >= 0]
        if known.empty:
            return np.empty(0), np.empty(0)
        table = region_table(known["region"].to_numpy(), known["lat_deg"].to_numpy(), known["lon_deg"].to_numpy())
        return table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy()


def neighbour_groups(sims: np.ndarray, lat: np.ndarray, lon: np.ndarray, bandwidth_km: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, k) neighbour similarities and coordinates -> each neighbour's group: (support, centre lat, centre lon), (M, k) each.

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
    return predictor.db["lat_deg"].to_numpy()[ids], predictor.db["lon_deg"].to_numpy()[ids]


def candidates(predictor: Predictor, emb: np.ndarray, sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        lats.append(predictor.sites["lat_deg"].to_numpy()[site]), lons.append(predictor.sites["lon_deg"].to_numpy()[site])
    r_lat, r_lon = predictor.region_centroids
    if "regions" in predictor.sources and len(r_lat):
        lats.append(np.broadcast_to(r_lat, (len(emb), len(r_lat)))), lons.append(np.broadcast_to(r_lon, (len(emb), len(r_lon))))
    return np.concatenate(lats, axis=1), np.concatenate(lons, axis=1)


def locate(predictor: Predictor, desc: np.ndarray, emb: np.ndarray, together: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(M, D) query descriptors and unit CLS embeddings -> (lat (M,), lon (M,), sims (M, k), ids (M, k)); the query is
    searched in the predictor's retrieval space (`retrieval.retrieval_vectors`), plain (the database alone is propagated).

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
            lat[rows], lon[rows] = group_answer(predictor, emb[rows], sims[rows], ids[rows], None if log_p is None else log_p[rows],
                                                None if top is None else top[rows])
    return lat, lon, sims, ids


def group_answer(predictor: Predictor, emb: np.ndarray, sims: np.ndarray, ids: np.ndarray, log_p: np.ndarray | None,
                 top: np.ndarray | None) -> tuple[float, float]:
    """One place's photos ((G, D) embeddings, their (G, k) neighbours, region log-probabilities and the group's top-region
    mask) -> the group's one answer: the candidate, of all the photos proposed, of highest summed verifier logit. The sum is
    linear in the photos (scale times the summed image codes against each candidate's code, plus the region prior times the
    summed log p(candidate's region): the product of the photos' region probabilities), so it costs one pass over the
    distinct candidates. Without a verifier, the vote over the group's strongest `MAX_POOLED` neighbours, pooled."""
    if predictor.verifier is None or not predictor.sources:
        photo, summed = np.unique(ids.ravel(), return_inverse=True)
        support = np.bincount(summed.ravel(), weights=sims.ravel().astype(np.float64))
        keep = np.argsort(-support, kind="stable")[:MAX_POOLED]
        lat, lon = vote(support[keep][None], *neighbour_coords(predictor, photo[keep][None]), predictor.bandwidth_km)
        return float(lat[0]), float(lon[0])
    c_lat, c_lon = candidates(predictor, emb, sims, ids)
    sites = np.unique(np.column_stack([c_lat.ravel(), c_lon.ravel()]), axis=0)
    c_lat, c_lon = sites[None, :, 0], sites[None, :, 1]
    scores = predictor.verifier.image_codes_np(emb).sum(0, keepdims=True) @ predictor.verifier.gps_codes(sites[:, 0], sites[:, 1]).T
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
    the pool holds fewer than k of them, the best of the rest fill it (their candidates are then refused in verification)."""
    sims, ids = search(predictor.index, desc, predictor.k * REGION_POOL)
    cls = predictor._db_region_class[ids]
    inside = (cls >= 0) & np.take_along_axis(top, np.maximum(cls, 0), axis=1)
    order = np.argsort(~inside, axis=1, kind="stable")[:, :predictor.k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)


def hierarchy_scores(predictor: Predictor, scores: np.ndarray, log_p: np.ndarray, top: np.ndarray | None,
                     cand_class: np.ndarray) -> np.ndarray:
    """(M, C) verifier cosines -> (M, C) the verifier's logits (cosine times its learned scale) plus `region_weight` times
    log p(candidate's region); with `top`, a candidate outside the query's top regions scores -inf (unless all do). For a
    group (`group_answer`): its summed cosines and summed log-probabilities, one row.

    A candidate whose region the probe does not know counts as the query's least likely region."""
    logits = scores * float(predictor.verifier.log_scale.detach().exp().clamp(max=100))
    cand_log_p = np.where(cand_class >= 0, np.take_along_axis(log_p, np.maximum(cand_class, 0), axis=1), log_p.min(1, keepdims=True))
    logits = logits + predictor.cfg.region_weight * cand_log_p
    if top is None:
        return logits
    inside = (cand_class >= 0) & np.take_along_axis(top, np.maximum(cand_class, 0), axis=1)
    return np.where(inside.any(axis=1, keepdims=True) & ~inside, -np.inf, logits)


def leave_location_out(desc: np.ndarray, db: pd.DataFrame, index, k: int, max_queries: int = 2000, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Database photos queried against the database without their own location: (query rows (Q,), sims (Q, k), ids (Q, k)).

    What a photo of a new place that the database covers meets: the reference for calibrating on the database alone.
    """
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(len(db), size=min(max_queries, len(db)), replace=False))
    groups = db["group"].to_numpy()
    extra = int(db["group"].value_counts().max())
    sims, ids = search(index, desc[q], k + extra)
    keep = groups[ids] != groups[q][:, None]  # drop the query's own location
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return q, np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)


def calibrate_bandwidth(db: pd.DataFrame, q: np.ndarray, sims: np.ndarray, ids: np.ndarray) -> float:
    """The vote bandwidth with the lowest median error over leave-location-out queries (`leave_location_out`)."""
    lat, lon = db["lat_deg"].to_numpy(), db["lon_deg"].to_numpy()
    pair = haversine_km(lat[ids][:, :, None], lon[ids][:, :, None], lat[ids][:, None, :], lon[ids][:, None, :])
    errors = {float(bw): np.median(haversine_km(*vote(sims, lat[ids], lon[ids], float(bw)), lat[q], lon[q]))
              for bw in np.quantile(pair, BANDWIDTH_QUANTILES)}
    return min(errors, key=errors.get)


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
        probe_verifier = fit_verifier(emb[fit], lat[fit], lon[fit], groups[fit], cfg.locator) if cfg.verify else None
        probe_index = database_index(retrieval_vectors(cfg.retrieval, desc[fit], emb[fit], probe_verifier), lat[fit], lon[fit], cfg.propagate)
        probe = replace(predictor, index=probe_index, db=fit_db, region_probe=fit_region_probe(emb[fit], fit_db, cfg), verifier=probe_verifier)
        p_lat, p_lon, _, _ = locate(probe, desc[held], emb[held])
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


def run_regions(run: Run, graph: str) -> tuple[RegionFiles | None, np.ndarray]:
    """The run's w/o regions of `graph` and the (N,) region of each of its photos (-1 everywhere if it has none)."""
    files = run.regions(graph)
    n = len(run.photo_table())
    if not files.exists():
        return None, np.full(n, -1)
    labels = files.labels()["region"].to_numpy()
    return files, labels if len(labels) == n else np.full(n, -1)


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
    regions_file, regions = run_regions(run, graph)
    db = pd.DataFrame({"photo": np.flatnonzero(keep), "path": [str(p) for p, m in zip(table.abs_paths(), keep) if m],
                       "lat_deg": table.lat_deg[keep], "lon_deg": table.lon_deg[keep],
                       "group": table.frame["group"].to_numpy()[keep], "region": regions[keep]})
    predictor = fit_predictor(db, emb[keep], None if patches is None else patches[np.flatnonzero(keep)], cfg, graph)
    predictor.regions = regions_file
    return predictor


def save_predictor(predictor: Predictor, store: PredictorStore, inputs: str | None = None, stamp: str | None = None) -> None:
    """Index, database (without regions), vocabulary, verifier, calibration errors, then the meta file last:
    its presence marks a whole predictor."""
    store.meta.unlink(missing_ok=True)  # until the new one is whole, there is no predictor here
    save_index(predictor.index, store.index)
    storage.write_csv(store.db, predictor.db.drop(columns="region"))
    store.vocabulary.unlink(missing_ok=True)  # a part the new predictor has not must not outlive the old one
    store.verifier.unlink(missing_ok=True)
    store.region_probe.unlink(missing_ok=True)
    if predictor.region_probe is not None:
        storage.write_npy(store.region_probe, predictor.region_probe.weights)
    if predictor.vocabulary is not None:
        storage.write_npy(store.vocabulary, predictor.vocabulary)
    if predictor.verifier is not None:
        v = predictor.verifier
        save_locator(v, store.verifier, locator_meta("verifier", v.cfg, v.in_dim, extent_rad=v.extent_rad))
    storage.write_npy(store.calibration, predictor.calibration_errors_km)
    storage.write_npy(store.familiarity, predictor.familiar_sims)
    classes = None if predictor.region_probe is None else predictor.region_probe.classes.tolist()
    storage.write_json(store.meta, {"config": predictor.cfg, "bandwidth_km": predictor.bandwidth_km, "inputs": inputs,
                                    "stamp": stamp, "format": PREDICTOR_FORMAT, "region_classes": classes})


def load_predictor(store: PredictorStore, run_dir: Path, cfg: PredictConfig = PredictConfig()) -> Predictor:
    """A saved predictor with the run's encoder, its current regions of `cfg.graph` and, with `cfg.region_from ==
    "classifier"`, the latest fine-tuning round's region classifier for that graph where the run has one. A predictor
    built with `ft_round` r retrieves with round r's backbone, and names regions with round r's classifier."""
    run = Run(run_dir)
    meta = store.read_meta()
    built = from_dict(PredictorConfig, meta["config"])
    embed_cfg = run.pipeline_config().embed
    vocabulary = storage.read_npy(store.vocabulary) if built.descriptor == "vlad" else None
    verifier = load_locator(store.verifier) if built.verify else None
    encoder = load_encoder(embed_cfg.model, embed_cfg.checkpoint, embed_cfg.pretrained, cfg.device, embed_cfg.image_size)
    backbone = load_region_head(run.finetune_round(cfg.graph, built.ft_round), built.ft_round, encoder) if built.ft_round else None
    latest = run.latest_round(cfg.graph) if cfg.region_from == "classifier" and backbone is None else None
    head = load_region_head(*latest, encoder) if latest else (backbone if cfg.region_from == "classifier" else None)
    db = pd.read_csv(store.db, dtype={"group": str})
    regions_file, regions = run_regions(run, cfg.graph)
    db["region"] = regions[db["photo"].to_numpy()]
    head_labels = head.regions.labels()["region"].to_numpy()[db["photo"].to_numpy()] if head else None
    classes = meta.get("region_classes")
    region_probe = LinearProbe(storage.read_npy(store.region_probe), np.asarray(classes)) if classes is not None else None
    return Predictor(built, load_index(store.index), db, vocabulary, meta["bandwidth_km"],
                     storage.read_npy(store.calibration), storage.read_npy(store.familiarity), cfg.coverage, cfg.unfamiliar_below,
                     cfg.graph, verifier, encoder, head, head.regions if head else regions_file, head_labels, backbone, region_probe)


def predictor_store(run_dir: Path, cfg: PredictorConfig, database: str, graph: str) -> PredictorStore:
    """Where the predictor for these settings is saved: one folder per descriptor, database and settings digest (with the
    graph, where the predictor depends on its regions or fine-tuning), so alternating settings reload each other's
    predictor instead of rebuilding it."""
    key = {"config": storage.to_jsonable(cfg), "graph": graph} if _depends_on_graph(cfg) else storage.to_jsonable(cfg)
    settings = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return Run(run_dir).predictor(cfg.descriptor, database, settings)


def predictor_inputs(run_dir: Path, cfg: PredictorConfig, graph: str) -> list[Path]:
    """The run's files a saved predictor is built from: photos, embeddings and split, the patch tokens for gem / vlad,
    the graph's regions where their centroids are candidates or the hierarchy classifies them, the passes of test-time views."""
    run = Run(run_dir)
    files = [run.photos, run.embeddings, run.split] + ([run.patches] if cfg.descriptor != "cls" else [])
    files += [run.view_embeddings(v) for v in TTA_VIEWS[cfg.tta] if v != "photo"]
    if cfg.ft_round:
        ft = run.finetune_round(graph, cfg.ft_round)
        files += [ft.embeddings(cfg.ft_round), ft.round_checkpoint(cfg.ft_round)]
    return files + ([run.regions(graph).csv] if "regions" in cfg.sources or _uses_regions(cfg) else [])


def _uses_regions(cfg: PredictorConfig) -> bool:
    """Whether the predictor depends on the run's regions: their centroids as candidates, or the hierarchy's classes."""
    return "regions" in cfg.sources or bool(cfg.top_regions or cfg.region_weight)


def _depends_on_graph(cfg: PredictorConfig) -> bool:
    """Whether the predictor is built from a graph's regions or fine-tuning, so each graph has its own."""
    return _uses_regions(cfg) or bool(cfg.ft_round)


def inputs_digest(files: list[Path], cfg: PredictorConfig, database: str, graph: str) -> str:
    """The digest of a predictor's input files' contents, with the format, its settings and the database."""
    h = hashlib.sha1(json.dumps({"format": PREDICTOR_FORMAT, "config": storage.to_jsonable(cfg), "database": database,
                                 "graph": graph if _depends_on_graph(cfg) else None}, sort_keys=True).encode())
    for path in files:
        if path.exists():
            with open(path, "rb") as f:
                h.update(hashlib.file_digest(f, "sha1").digest())
    return h.hexdigest()


def predictor_version(run_dir: Path, cfg: PredictConfig) -> str:
    """A cheap stamp (sizes and mtimes) of what an opened predictor depends on, the regions and classifiers included:
    the key for a predictor held in memory (the app's)."""
    run = Run(run_dir)
    return fingerprint([run.photos, run.embeddings, run.split, run.patches, run.regions(cfg.graph).csv,
                        *run.round_checkpoints(cfg.graph)])


def open_predictor(run_dir: Path, cfg: PredictConfig = PredictConfig(), database: str = "all") -> Predictor:
    """The run's saved predictor for `cfg` (`database="train"`: without the held-out locations), built first
    if there is none or what it was built from (settings included) has changed since."""
    if cfg.predictor.tta != "none":
        view_embeddings(run_dir, cfg.predictor.tta)  # the views' passes are inputs: made first, or the stamp changes with the build
    store = predictor_store(run_dir, cfg.predictor, database, cfg.graph)
    files = predictor_inputs(run_dir, cfg.predictor, cfg.graph)
    saved, stamp = store.read_meta(), fingerprint(files)
    if saved.get("stamp") != stamp or saved.get("format") != PREDICTOR_FORMAT:  # touched or outdated: the contents decide
        inputs = inputs_digest(files, cfg.predictor, database, cfg.graph)
        if saved.get("inputs") != inputs:
            save_predictor(build_predictor(run_dir, cfg.predictor, database, cfg.graph), store, inputs=inputs, stamp=stamp)
        else:
            storage.write_json(store.meta, {**saved, "stamp": stamp})
    return load_predictor(store, run_dir, cfg)
