"""Photo -> predicted location, uncertainty radius, region and nearest known photos, by retrieval.

A predictor is a database of geotagged photos (a run's photos), their descriptors in a faiss index,
and two numbers calibrated on the database alone by leave-location-out queries (each database
photo is located from the others, never from its own location):
- `bandwidth_km`: neighbours within this distance of each other vote together; the location is the
  similarity-weighted centre of the strongest group (bandwidth 0 is plain top-1 retrieval);
- `radius_km`: the `coverage` quantile of the calibration errors, the uncertainty a prediction
  reports ("the true location is within radius_km for 90 % of calibration photos").
A photo's EXIF GPS, where it has one, is reported beside the prediction as the truth, never used.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from PIL import Image
from scipy.spatial import cKDTree

from . import runs
from .config import PipelineConfig
from .descriptors import describe, fit_vlad_vocabulary
from .embed import Encoder, embed_images, load_encoder
from .evaluate import distance_metrics, recall_at_k
from .exif import GpsError, read_gps
from .geo import haversine_km, latlon_to_xyz, xyz_to_latlon
from .index import build_index, load_index, save_index, search
from .ingest import load_photo_table
from .pipeline import load_split

log = logging.getLogger(__name__)

BANDWIDTH_QUANTILES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)  # of database pairwise distances, tried in calibration


@dataclass(frozen=True)
class Neighbour:
    path: str
    lat_deg: float
    lon_deg: float
    similarity: float
    dist_km: float  # from the predicted location


@dataclass
class Prediction:
    path: str
    lat_deg: float
    lon_deg: float
    radius_km: float  # holds the truth for `coverage` of the calibration photos
    coverage: float
    region: int | None
    neighbours: list[Neighbour] = field(default_factory=list)
    true_lat_deg: float | None = None  # from the photo's EXIF GPS, shown, never used
    true_lon_deg: float | None = None

    @property
    def error_km(self) -> float | None:
        if self.true_lat_deg is None:
            return None
        return float(haversine_km(self.lat_deg, self.lon_deg, self.true_lat_deg, self.true_lon_deg))


@dataclass
class Predictor:
    """The database side: descriptors in an index, photo metadata, calibration, and the encoder."""

    descriptor: str
    index: object
    db: pd.DataFrame  # path (absolute), lat_deg, lon_deg, group, region
    vocabulary: np.ndarray | None
    bandwidth_km: float
    radius_km: float
    coverage: float
    k: int
    graph: str = "dt"  # whose w/o regions label the predictions
    encoder: Encoder | None = None

    @cached_property
    def _db_tree(self) -> cKDTree:
        return cKDTree(latlon_to_xyz(self.db["lat_deg"].to_numpy(), self.db["lon_deg"].to_numpy()))

    def region_at(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """(M,) region of the database photo nearest each location (-1 where the run has no regions)."""
        return self.db["region"].to_numpy()[self._db_tree.query(latlon_to_xyz(lat_deg, lon_deg))[1]]


def vote(sims: np.ndarray, lat: np.ndarray, lon: np.ndarray, bandwidth_km: float) -> tuple[np.ndarray, np.ndarray]:
    """(M, k) neighbour similarities and coordinates -> (M,) lat, lon of the strongest neighbour group.

    Each neighbour scores the summed similarity of the neighbours within `bandwidth_km` of it; the
    winner's group is averaged on the sphere, weighted by similarity.
    """
    d = haversine_km(lat[:, :, None], lon[:, :, None], lat[:, None, :], lon[:, None, :])  # (M, k, k)
    near = d <= bandwidth_km
    w = np.clip(sims, 1e-6, None)
    best = np.argmax(np.einsum("mij,mj->mi", near, w), axis=1)
    members = near[np.arange(len(sims)), best] * w  # (M, k)
    xyz = np.einsum("mk,mkc->mc", members, latlon_to_xyz(lat, lon))
    return xyz_to_latlon(xyz)


def _neighbour_coords(predictor: Predictor, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return predictor.db["lat_deg"].to_numpy()[ids], predictor.db["lon_deg"].to_numpy()[ids]


def calibrate(desc: np.ndarray, db: pd.DataFrame, index, k: int, coverage: float, max_queries: int = 2000,
              seed: int = 0) -> tuple[float, float]:
    """(bandwidth_km, radius_km) from leave-location-out queries of database photos against the rest."""
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(len(db), size=min(max_queries, len(db)), replace=False))
    groups = db["group"].to_numpy()
    extra = int(db["group"].value_counts().max())
    sims, ids = search(index, desc[q], k + extra)
    keep = groups[ids] != groups[q][:, None]  # drop the query's own location
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
    lat, lon = db["lat_deg"].to_numpy(), db["lon_deg"].to_numpy()
    pair = haversine_km(lat[ids][:, :, None], lon[ids][:, :, None], lat[ids][:, None, :], lon[ids][:, None, :])
    best_bw, best_err = 0.0, None
    for bw in np.quantile(pair, BANDWIDTH_QUANTILES):
        p_lat, p_lon = vote(sims, lat[ids], lon[ids], float(bw))
        err = haversine_km(p_lat, p_lon, lat[q], lon[q])
        if best_err is None or np.median(err) < np.median(best_err):
            best_bw, best_err = float(bw), err
    return best_bw, float(np.quantile(best_err, coverage))


def build_predictor(run_dir: Path, descriptor: str = "cls", graph: str = "dt", k: int = 10, coverage: float = 0.9,
                    database: str = "all", n_words: int = 32) -> Predictor:
    """A predictor over a run's photos (`database="train"` keeps the held-out locations out, for evaluation)."""
    run_dir = Path(run_dir)
    table = load_photo_table(run_dir)
    _, is_test = load_split(run_dir)
    keep = np.ones(len(table), bool) if database == "all" else ~is_test
    emb = runs.read_npy(run_dir / "embeddings.npy")
    patches = runs.read_npy(run_dir / "patches.npy", mmap=True) if (run_dir / "patches.npy").exists() else None
    db_patches = None if patches is None else patches[np.flatnonzero(keep)]
    vocabulary = fit_vlad_vocabulary(db_patches, n_words) if descriptor == "vlad" and db_patches is not None else None
    desc = describe(descriptor, emb[keep], db_patches, vocabulary)
    regions = pd.read_csv(run_dir / f"regions_{graph}.csv")["region"].to_numpy() if (run_dir / f"regions_{graph}.csv").exists() else np.full(len(table), -1)
    db = pd.DataFrame({"path": [str(p) for p, m in zip(table.abs_paths(), keep) if m], "lat_deg": table.lat_deg[keep],
                       "lon_deg": table.lon_deg[keep], "group": table.frame["group"].to_numpy()[keep], "region": regions[keep]})
    index = build_index(desc)
    bandwidth, radius = calibrate(desc, db, index, k, coverage)
    log.info("predictor %s over %d photos: bandwidth %.3f km, %d%% radius %.3f km", descriptor, len(db), bandwidth, coverage * 100, radius)
    return Predictor(descriptor, index, db, vocabulary, bandwidth, radius, coverage, k, graph)


def save_predictor(predictor: Predictor, out: Path) -> None:
    out = Path(out)
    save_index(predictor.index, out / "index.faiss")
    runs.write_csv(out / "db.csv", predictor.db)
    if predictor.vocabulary is not None:
        runs.write_npy(out / "vocabulary.npy", predictor.vocabulary)
    runs.write_json(out / "predictor.json", {"descriptor": predictor.descriptor, "bandwidth_km": predictor.bandwidth_km,
                                             "radius_km": predictor.radius_km, "coverage": predictor.coverage, "k": predictor.k,
                                             "graph": predictor.graph})


def load_predictor(out: Path, run_dir: Path, device: str = "auto") -> Predictor:
    """A saved predictor with the run's encoder, ready to `predict` new photos."""
    out = Path(out)
    meta = runs.read_json(out / "predictor.json")
    embed_cfg = PipelineConfig.from_dict(runs.read_json(Path(run_dir) / runs.CONFIG)).embed
    vocabulary = runs.read_npy(out / "vocabulary.npy") if (out / "vocabulary.npy").exists() else None
    return Predictor(meta["descriptor"], load_index(out / "index.faiss"), pd.read_csv(out / "db.csv", dtype={"group": str}), vocabulary,
                     meta["bandwidth_km"], meta["radius_km"], meta["coverage"], meta["k"], meta["graph"],
                     load_encoder(embed_cfg.model, embed_cfg.checkpoint, embed_cfg.pretrained, device, embed_cfg.image_size))


def open_predictor(run_dir: Path, descriptor: str = "cls", device: str = "auto", **build: object) -> Predictor:
    """The run's saved predictor (`RUN/predictor_{descriptor}`), built and saved first if there is none."""
    store = Path(run_dir) / f"predictor_{descriptor}"
    if not (store / "predictor.json").exists():
        save_predictor(build_predictor(run_dir, descriptor, **build), store)
    return load_predictor(store, run_dir, device)


def locate(predictor: Predictor, desc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(M, D) query descriptors -> (lat (M,), lon (M,), sims (M, k), ids (M, k))."""
    sims, ids = search(predictor.index, desc, predictor.k)
    lat, lon = _neighbour_coords(predictor, ids)
    p_lat, p_lon = vote(sims, lat, lon, predictor.bandwidth_km)
    return p_lat, p_lon, sims, ids


def predict(paths: list[Path], predictor: Predictor, batch_size: int = 16) -> tuple[list[Prediction], dict[str, str]]:
    """Predict each photo; returns the predictions and {path: reason} for photos that could not be read."""
    paths = [Path(p) for p in paths]
    need_patches = predictor.descriptor != "cls"
    out = embed_images(paths, predictor.encoder, batch_size=batch_size, patches=need_patches, progress=len(paths) > 20)
    ok = np.flatnonzero(out.ok)
    failed = {str(paths[i]): reason for i, reason in out.failed.items()}
    if not len(ok):
        return [], failed
    desc = describe(predictor.descriptor, out.emb[ok], None if out.patches is None else out.patches[ok], predictor.vocabulary)
    p_lat, p_lon, sims, ids = locate(predictor, desc)
    regions = predictor.region_at(p_lat, p_lon)
    n_lat, n_lon = _neighbour_coords(predictor, ids)
    dists = haversine_km(p_lat[:, None], p_lon[:, None], n_lat, n_lon)
    preds = []
    for row, i in enumerate(ok):
        truth = exif_truth(paths[i])
        neighbours = [Neighbour(predictor.db["path"].iat[j], float(n_lat[row, c]), float(n_lon[row, c]), float(sims[row, c]), float(dists[row, c]))
                      for c, j in enumerate(ids[row])]
        preds.append(Prediction(str(paths[i]), float(p_lat[row]), float(p_lon[row]), predictor.radius_km, predictor.coverage,
                                int(regions[row]) if regions[row] >= 0 else None, neighbours, *truth))
    return preds, failed


def exif_truth(path: Path) -> tuple[float | None, float | None]:
    """The photo's own EXIF GPS, if it has a usable one."""
    try:
        return read_gps(Image.open(io.BytesIO(Path(path).read_bytes())))
    except (GpsError, OSError, ValueError):
        return None, None


def predictions_frame(preds: list[Prediction]) -> pd.DataFrame:
    """One row per prediction, its top-k neighbours as a JSON list: the CSV export."""
    return pd.DataFrame([{
        "path": p.path, "lat_deg": p.lat_deg, "lon_deg": p.lon_deg, "radius_km": p.radius_km, "coverage": p.coverage,
        "region": p.region, "true_lat_deg": p.true_lat_deg, "true_lon_deg": p.true_lon_deg, "error_km": p.error_km,
        "neighbours": json.dumps([vars(n) for n in p.neighbours]),
    } for p in preds])


def predictions_geojson(preds: list[Prediction]) -> str:
    """Points at the predicted locations with every field as a property: the GeoJSON export."""
    frame = predictions_frame(preds)
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame["lon_deg"], frame["lat_deg"]), crs="EPSG:4326").to_json()


def evaluate_retrieval(run_dir: Path, descriptors: tuple[str, ...] = ("cls", "gem", "vlad"), k: int = 10,
                       recall_radius_km: float = 0.025) -> list[dict]:
    """Held-out locations queried against the training photos: km metrics and Recall@1/5/10 per descriptor.

    Two rows per descriptor: top-1 retrieval, and the calibrated neighbour vote.
    """
    run_dir = Path(run_dir)
    table = load_photo_table(run_dir)
    _, is_test = load_split(run_dir)
    emb = runs.read_npy(run_dir / "embeddings.npy")
    patches = runs.read_npy(run_dir / "patches.npy", mmap=True) if (run_dir / "patches.npy").exists() else None
    test = np.flatnonzero(is_test)
    true_lat, true_lon = table.lat_deg[test], table.lon_deg[test]
    rows = []
    for name in descriptors:
        predictor = build_predictor(run_dir, name, k=k, database="train")
        desc = describe(name, emb[test], None if patches is None else patches[test], predictor.vocabulary)
        sims, ids = search(predictor.index, desc, k)
        n_lat, n_lon = _neighbour_coords(predictor, ids)
        recall = recall_at_k(ids, predictor.db["lat_deg"].to_numpy(), predictor.db["lon_deg"].to_numpy(), true_lat, true_lon, recall_radius_km)
        for method, bw in ((f"kNN-{name.upper()} top-1", 0.0), (f"kNN-{name.upper()} vote", predictor.bandwidth_km)):
            p_lat, p_lon = vote(sims, n_lat, n_lon, bw)
            rows.append({"method": method, **distance_metrics(p_lat, p_lon, true_lat, true_lon), **recall,
                         "bandwidth_km": bw, "radius_km@90": predictor.radius_km})
        log.info("%s: median %.2f km (vote)", name, rows[-1]["median_km"])
    return rows
