"""Photo -> predicted location, uncertainty radius, region and nearest known photos.

A predictor is a database of geotagged photos (a run's photos), their descriptors in a faiss index,
a GPS-aware verifier trained on them (`locators.GpsVerifier`), and numbers calibrated on the
database alone. Locating a photo is G3's retrieve-then-verify:
1. retrieve its top-k database photos;
2. propose candidate coordinates from several sources (`SOURCES`): the top-1 neighbour, the centre
   of each neighbour's group (neighbours within `bandwidth_km` of it, similarity-weighted), the
   database sites whose GPS code the photo's image code matches best (GeoCLIP's gallery), and the
   region centroids;
3. answer the candidate the verifier scores highest. Without a verifier (or with no sources) the
   answer is the strongest neighbour group, a similarity vote.
`bandwidth_km` is calibrated by leave-location-out queries (each database photo located from the
others, never from its own location). `radius_km`, the uncertainty a prediction reports, is the
`coverage` quantile of errors on database locations held out of a calibration verifier's training
("the true location is within radius_km for 90 % of calibration photos").
The predicted region comes from the latest fine-tuning round's classifier (`region_head`), run in the
photo's embedding pass, where the run has one; otherwise it is the w/o region of the database photo
nearest the predicted location.
A photo's EXIF GPS, where it has one, is reported beside the prediction as the truth, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field, replace
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
from .exif import GpsError, read_gps
from .geo import haversine_km, latlon_to_xyz, xyz_to_latlon
from .index import build_index, load_index, save_index, search
from .ingest import PhotoTable, load_photo_table
from .locators import GpsVerifier, LocatorConfig, fit_verifier, load_locator, locator_meta, save_locator
from .pipeline import load_embeddings, load_split
from .region_head import RegionHead, latest_round, load_region_head
from .regions import region_table
from .splits import grouped_split

log = logging.getLogger(__name__)

BANDWIDTH_QUANTILES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)  # of database pairwise distances, tried in calibration
SOURCES = ("top1", "clusters", "gallery", "regions")  # where candidate coordinates come from
DEFAULT_SOURCES = ("top1", "clusters", "gallery")  # region centroids are too coarse to help at street scale
GALLERY_SIZE = 10  # database sites proposed by the verifier's own GPS-code search
CALIBRATION_FRAC = 0.2  # database locations held out of the calibration verifier
PREDICTOR_FORMAT = 2  # bump when a saved predictor's contents change meaning


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
    region_prob: float | None = None  # the classifier's probability of `region`; None for the nearest-photo region

    @property
    def error_km(self) -> float | None:
        if self.true_lat_deg is None:
            return None
        return float(haversine_km(self.lat_deg, self.lon_deg, self.true_lat_deg, self.true_lon_deg))


@dataclass
class Predictor:
    """The database side: descriptors in an index, photo metadata, verifier, calibration, and the encoder."""

    descriptor: str
    index: object
    db: pd.DataFrame  # path (absolute), lat_deg, lon_deg, group, region
    vocabulary: np.ndarray | None
    bandwidth_km: float
    radius_km: float
    coverage: float
    k: int
    graph: str = "dt"  # whose w/o regions label the predictions
    verifier: GpsVerifier | None = None
    sources: tuple[str, ...] = DEFAULT_SOURCES
    encoder: Encoder | None = None
    region_head: RegionHead | None = None
    regions: Path | None = None  # the regions CSV (polygons in the .geojson beside it) that `Prediction.region` numbers

    @property
    def region_source(self) -> str:
        return f"{self.graph.upper()} {self.region_head.name}" if self.region_head else f"{self.graph.upper()} w/o, nearest photo"

    @cached_property
    def _db_tree(self) -> cKDTree:
        return cKDTree(latlon_to_xyz(self.db["lat_deg"].to_numpy(), self.db["lon_deg"].to_numpy()))

    def region_at(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """(M,) region of the database photo nearest each location (-1 where the run has no regions)."""
        return self.db["region"].to_numpy()[self._db_tree.query(latlon_to_xyz(lat_deg, lon_deg))[1]]

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


def _neighbour_coords(predictor: Predictor, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return predictor.db["lat_deg"].to_numpy()[ids], predictor.db["lon_deg"].to_numpy()[ids]


def candidates(predictor: Predictor, emb: np.ndarray, sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, C) candidate latitudes and longitudes from `predictor.sources`, for the verifier to choose among."""
    n_lat, n_lon = _neighbour_coords(predictor, ids)
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


def locate(predictor: Predictor, desc: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(M, D) query descriptors and unit CLS embeddings -> (lat (M,), lon (M,), sims (M, k), ids (M, k))."""
    sims, ids = search(predictor.index, desc, predictor.k)
    if predictor.verifier is None or not predictor.sources:
        return *vote(sims, *_neighbour_coords(predictor, ids), predictor.bandwidth_km), sims, ids
    c_lat, c_lon = candidates(predictor, emb, sims, ids)
    best = np.argmax(predictor.verifier.scores(emb, c_lat, c_lon), axis=1)[:, None]
    return np.take_along_axis(c_lat, best, 1)[:, 0], np.take_along_axis(c_lon, best, 1)[:, 0], sims, ids


def calibrate_bandwidth(desc: np.ndarray, db: pd.DataFrame, index, k: int, max_queries: int = 2000, seed: int = 0) -> float:
    """The vote bandwidth with the lowest median error over leave-location-out queries of database photos."""
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
    errors = {float(bw): np.median(haversine_km(*vote(sims, lat[ids], lon[ids], float(bw)), lat[q], lon[q]))
              for bw in np.quantile(pair, BANDWIDTH_QUANTILES)}
    return min(errors, key=errors.get)


def _database(run_dir: Path, database: str) -> tuple[PhotoTable, np.ndarray, np.ndarray, np.ndarray | None]:
    """A run's photos as a predictor database: (photo table, kept mask, their CLS embeddings, their patch tokens or None)."""
    table = load_photo_table(run_dir)
    _, is_test = load_split(run_dir)
    keep = np.ones(len(table), bool) if database == "all" else ~is_test
    emb, patches = load_embeddings(run_dir)
    return table, keep, emb[keep], None if patches is None else patches[np.flatnonzero(keep)]


def fit_predictor(db: pd.DataFrame, emb: np.ndarray, patches: np.ndarray | None, descriptor: str = "cls", k: int = 10,
                  coverage: float = 0.9, n_words: int = 32, verify: bool = True, sources: tuple[str, ...] = DEFAULT_SOURCES,
                  locator: LocatorConfig = LocatorConfig(), graph: str = "dt") -> Predictor:
    """A predictor over database photos (`db`: lat_deg, lon_deg, group, region, path) and their embeddings.

    The uncertainty radius is measured honestly: a calibration predictor is fitted without a held-out
    share of the database's locations, which it then locates; the final predictor uses everything.
    """
    vocabulary = fit_vlad_vocabulary(patches, n_words) if descriptor == "vlad" and patches is not None else None
    desc = describe(descriptor, emb, patches, vocabulary)
    index = build_index(desc)
    bandwidth = calibrate_bandwidth(desc, db, index, k)
    verifier = fit_verifier(emb, db["lat_deg"].to_numpy(), db["lon_deg"].to_numpy(), db["group"].to_numpy(), locator) if verify else None
    predictor = Predictor(descriptor, index, db, vocabulary, bandwidth, float("nan"), coverage, k, graph, verifier, sources)
    if db["group"].nunique() >= 5:
        held = grouped_split(db["group"].to_numpy(), CALIBRATION_FRAC, seed=locator.seed)
        fit = np.flatnonzero(~held)
        probe = replace(predictor, index=build_index(desc[fit]), db=db.iloc[fit].reset_index(drop=True),
                        verifier=fit_verifier(emb[fit], db["lat_deg"].to_numpy()[fit], db["lon_deg"].to_numpy()[fit],
                                              db["group"].to_numpy()[fit], locator) if verify else None)
        p_lat, p_lon, _, _ = locate(probe, desc[held], emb[held])
        errors = haversine_km(p_lat, p_lon, db["lat_deg"].to_numpy()[held], db["lon_deg"].to_numpy()[held])
        predictor.radius_km = float(np.quantile(errors, coverage))
    log.info("predictor %s over %d photos: bandwidth %.3f km, %d%% radius %.3f km, verifier %s", descriptor, len(db),
             bandwidth, coverage * 100, predictor.radius_km, "on" if verify else "off")
    return predictor


def build_predictor(run_dir: Path, descriptor: str = "cls", graph: str = "dt", database: str = "all", **fit: object) -> Predictor:
    """A predictor over a run's photos (`database="train"` keeps the held-out locations out, for evaluation)."""
    run_dir = Path(run_dir)
    table, keep, emb, patches = _database(run_dir, database)
    regions_csv = run_dir / f"regions_{graph}.csv"
    regions = pd.read_csv(regions_csv)["region"].to_numpy() if regions_csv.exists() else np.full(len(table), -1)
    db = pd.DataFrame({"path": [str(p) for p, m in zip(table.abs_paths(), keep) if m], "lat_deg": table.lat_deg[keep],
                       "lon_deg": table.lon_deg[keep], "group": table.frame["group"].to_numpy()[keep], "region": regions[keep]})
    return fit_predictor(db, emb, patches, descriptor, graph=graph, **fit)


def save_predictor(predictor: Predictor, out: Path, inputs: str | None = None) -> None:
    """Index, database, vocabulary and verifier, then `predictor.json` last: its presence marks a whole predictor."""
    out = Path(out)
    save_index(predictor.index, out / "index.faiss")
    runs.write_csv(out / "db.csv", predictor.db)
    if predictor.vocabulary is not None:
        runs.write_npy(out / "vocabulary.npy", predictor.vocabulary)
    if predictor.verifier is not None:
        v = predictor.verifier
        save_locator(v, out / "verifier.safetensors", locator_meta("verifier", v.cfg, v.in_dim, extent_rad=v.extent_rad))
    runs.write_json(out / "predictor.json", {"descriptor": predictor.descriptor, "bandwidth_km": predictor.bandwidth_km,
                                             "radius_km": predictor.radius_km, "coverage": predictor.coverage, "k": predictor.k,
                                             "graph": predictor.graph, "sources": list(predictor.sources), "inputs": inputs})


def load_predictor(out: Path, run_dir: Path, device: str = "auto", region_head: bool = True) -> Predictor:
    """A saved predictor with the run's encoder, ready to `predict` new photos, and (with `region_head`)
    the latest fine-tuning round's region classifier for its graph, if the run has one."""
    out, run_dir = Path(out), Path(run_dir)
    meta = runs.read_json(out / "predictor.json")
    embed_cfg = PipelineConfig.from_dict(runs.read_json(Path(run_dir) / runs.CONFIG)).embed
    vocabulary = runs.read_npy(out / "vocabulary.npy") if (out / "vocabulary.npy").exists() else None
    verifier = load_locator(out / "verifier.safetensors") if (out / "verifier.safetensors").exists() else None
    encoder = load_encoder(embed_cfg.model, embed_cfg.checkpoint, embed_cfg.pretrained, device, embed_cfg.image_size)
    checkpoint = latest_round(run_dir, meta["graph"]) if region_head else None
    head = load_region_head(checkpoint, encoder) if checkpoint else None
    regions = head.regions if head else run_dir / f"regions_{meta['graph']}.csv"
    return Predictor(meta["descriptor"], load_index(out / "index.faiss"), pd.read_csv(out / "db.csv", dtype={"group": str}), vocabulary,
                     meta["bandwidth_km"], meta["radius_km"], meta["coverage"], meta["k"], meta["graph"], verifier,
                     tuple(meta["sources"]), encoder, head, regions if regions.exists() else None)


def _inputs_digest(run_dir: Path) -> str:
    """What a saved predictor was built from: the format, the run's photos and its embeddings."""
    h = hashlib.sha1(f"predictor-v{PREDICTOR_FORMAT}".encode())
    for name in ("photos.csv", "embeddings.npy", "patches.npy", "split.json"):
        if (Path(run_dir) / name).exists():
            with open(Path(run_dir) / name, "rb") as f:
                h.update(hashlib.file_digest(f, "sha1").digest())
    return h.hexdigest()


def open_predictor(run_dir: Path, descriptor: str = "cls", device: str = "auto", database: str = "all",
                   region_head: bool = True, **build: object) -> Predictor:
    """The run's saved predictor (`RUN/predictor_{descriptor}`, `..._train` without the held-out
    locations), (re)built first if there is none or the run's photos or embeddings changed since."""
    store = Path(run_dir) / (f"predictor_{descriptor}" + ("" if database == "all" else f"_{database}"))
    digest = _inputs_digest(run_dir)
    saved = runs.read_json(store / "predictor.json") if (store / "predictor.json").exists() else {}
    if saved.get("inputs") != digest:
        save_predictor(build_predictor(run_dir, descriptor, database=database, **build), store, inputs=digest)
    return load_predictor(store, run_dir, device, region_head)


def predict(paths: list[Path], predictor: Predictor, batch_size: int = 16) -> tuple[list[Prediction], dict[str, str]]:
    """Predict each photo; returns the predictions and {path: reason} for photos that could not be read."""
    paths = [Path(p) for p in paths]
    need_patches = predictor.descriptor != "cls"
    out = embed_images(paths, predictor.encoder, batch_size=batch_size, patches=need_patches, progress=len(paths) > 20,
                       head=predictor.region_head)
    ok = np.flatnonzero(out.ok)
    failed = {str(paths[i]): reason for i, reason in out.failed.items()}
    if not len(ok):
        return [], failed
    desc = describe(predictor.descriptor, out.emb[ok], None if out.patches is None else out.patches[ok], predictor.vocabulary)
    p_lat, p_lon, sims, ids = locate(predictor, desc, out.emb[ok])
    if predictor.region_head is not None:
        log_probs = out.head_out[ok]
        regions, region_probs = log_probs.argmax(1), np.exp(log_probs.max(1))
    else:
        regions, region_probs = predictor.region_at(p_lat, p_lon), np.full(len(ok), np.nan)
    n_lat, n_lon = _neighbour_coords(predictor, ids)
    dists = haversine_km(p_lat[:, None], p_lon[:, None], n_lat, n_lon)
    preds = []
    for row, i in enumerate(ok):
        truth = exif_truth(paths[i])
        neighbours = [Neighbour(predictor.db["path"].iat[j], float(n_lat[row, c]), float(n_lon[row, c]), float(sims[row, c]), float(dists[row, c]))
                      for c, j in enumerate(ids[row])]
        preds.append(Prediction(str(paths[i]), float(p_lat[row]), float(p_lon[row]), predictor.radius_km, predictor.coverage,
                                int(regions[row]) if regions[row] >= 0 else None, neighbours, *truth,
                                region_prob=None if np.isnan(region_probs[row]) else float(region_probs[row])))
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
        "region": p.region, "region_prob": p.region_prob, "true_lat_deg": p.true_lat_deg, "true_lon_deg": p.true_lon_deg,
        "error_km": p.error_km,
        "neighbours": json.dumps([vars(n) for n in p.neighbours]),
    } for p in preds])


def predictions_geojson(preds: list[Prediction]) -> str:
    """Points at the predicted locations with every field as a property: the GeoJSON export."""
    frame = predictions_frame(preds)
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame["lon_deg"], frame["lat_deg"]), crs="EPSG:4326").to_json()
