"""Photos -> predicted location, uncertainty radius, region and nearest known photos; CSV / GeoJSON exports.

Each photo is embedded once (with test-time augmentations, `PredictorConfig.tta`, all of them in one batch):
the predictor's region classifier (where the run has one) runs inside
that pass (`embed_images(head=...)`), as does a fine-tuned backbone the predictor retrieves with, then
`predictor.locate` retrieves and verifies. With `keep_tokens`, each prediction keeps the photo's patch tokens from that
same pass, for explaining its matches (`explain.explain_prediction`) without a second forward pass. The predicted region
is the classifier's answer, or else the region of the database photo nearest the predicted location. Photos of one place
(`groups`, `together.photo_groups`) are located together, with one answer. A photo's EXIF GPS, where it has one, is
reported beside the prediction as the truth, never used.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from PIL import Image
from scipy.special import log_softmax

from geoloc_core.base import storage
from geoloc_core.base.geo import haversine_km
from geoloc_core.base.places import place_labels, region_places
from geoloc_core.features.descriptors import describe
from geoloc_core.features.embed import TTA_AUGMENTATIONS, embed_images
from geoloc_core.ingest.exif import GpsError, read_gps
from geoloc_core.learn.classifier import BackboneHead
from geoloc_core.locate.predictor import Predictor, joint_log_proba, locate, neighbour_coords


@dataclass(frozen=True)
class Neighbour:
    """One database photo retrieved for a prediction, where it lies and how close it is."""
    path: str
    lat_deg: float
    lon_deg: float
    similarity: float
    dist_km: float  # from the predicted location
    photo: int = -1  # its row in the run's photos (and patch tokens)
    place: str = ""  # the nearest town: "near Porec, Istarska, HR (1.2 km)" (`places.place_label`)


@dataclass
class Prediction:
    """One photo's answer: the location, its uncertainty radius, its region, the neighbours behind it."""
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
    # share of the database's leave-location-out queries whose best match was no closer
    familiarity: float | None = None
    unfamiliar: bool = False  # familiarity under the predictor's threshold: unlike any photo of the database, a guess
    region_agrees: bool | None = None  # whether the classifier's region holds the predicted point (None: no classifier)
    # (P, Dp) float16 patch tokens of its one forward pass (keep_tokens)
    tokens: np.ndarray | None = field(default=None, repr=False)
    group: str | None = None  # the place it was located together with (`together`); None: located alone
    place: str = ""  # the town nearest the predicted location: "near Porec, Istarska, HR (1.2 km)"
    place_km: float | None = None  # the predicted location's distance to that town

    @property
    def error_km(self) -> float | None:
        """Great-circle km from the photo's own EXIF GPS; None without it."""
        if self.true_lat_deg is None:
            return None
        return float(haversine_km(self.lat_deg, self.lon_deg, self.true_lat_deg, self.true_lon_deg))


def predict(paths: list[Path], predictor: Predictor, batch_size: int = 16, keep_tokens: bool = False,
            groups: list[str | None] | None = None) -> tuple[list[Prediction], dict[str, str]]:
    """Predict each photo; returns the predictions and {path: reason} for photos that could not be read.

    `keep_tokens`: each prediction keeps its photo's patch tokens (`Prediction.tokens`), which the one forward pass
    computes anyway, for `explain.explain_prediction`. `groups`: one label per path (`together.photo_groups`); the
    readable photos that share one are located together and get one answer, a photo labelled None (or alone in its
    group after the others failed to read) is located alone."""
    paths = [Path(p) for p in paths]
    need_patches = predictor.descriptor != "cls" or keep_tokens
    backbone = BackboneHead(predictor.backbone) if predictor.backbone is not None else None
    out = embed_images(paths, predictor.encoder, batch_size=batch_size, patches=need_patches, progress=len(paths) > 20,
                       head=backbone or predictor.region_head, head_only=backbone is not None and not need_patches,
                       augmentations=TTA_AUGMENTATIONS[predictor.cfg.tta])
    ok = np.flatnonzero(out.ok)
    failed = {str(paths[i]): reason for i, reason in out.failed.items()}
    if not len(ok):
        return [], failed
    emb, log_probs = (backbone.split(out.head_out[ok]) if backbone
                      else (out.emb[ok], None if out.head_out is None else out.head_out[ok]))
    if log_probs is not None:
        # the mean over a photo's augmentations of its log-probabilities, normalised again
        log_probs = log_softmax(log_probs, axis=1)
    desc = describe(predictor.descriptor, emb, None if out.patches is None else out.patches[ok], predictor.vocabulary)
    group = _readable_groups(groups, ok, len(paths))
    p_lat, p_lon, sims, ids = locate(predictor, desc, emb, group)
    if group is not None and log_probs is not None:
        log_probs = joint_log_proba(log_probs, group)  # one place, one region: the classifier's evidence pooled as well
    at_point = predictor.region_at(p_lat, p_lon)
    if predictor.region_head is not None:
        regions, region_probs = log_probs.argmax(1), np.exp(log_probs.max(1))
    else:
        regions, region_probs = at_point, np.full(len(ok), np.nan)
    familiarity = predictor.familiarity(sims[:, 0])
    n_lat, n_lon = neighbour_coords(predictor, ids)
    dists = haversine_km(p_lat[:, None], p_lon[:, None], n_lat, n_lon)
    # the answers and their neighbours named in one query: (M,) answers' places, then (M, k) neighbours'
    places, places_km = place_labels(np.concatenate([p_lat, n_lat.ravel()]), np.concatenate([p_lon, n_lon.ravel()]))
    n_places = np.asarray(places[len(ok):], object).reshape(n_lat.shape)
    photo_rows = predictor.db["photo"].to_numpy() if "photo" in predictor.db else np.full(len(predictor.db), -1)
    preds = []
    for row, i in enumerate(ok):
        truth = exif_truth(paths[i])
        neighbours = [Neighbour(predictor.db["path"].iat[j], float(n_lat[row, c]), float(n_lon[row, c]),
                                float(sims[row, c]), float(dists[row, c]), int(photo_rows[j]), n_places[row, c])
                      for c, j in enumerate(ids[row])]
        preds.append(Prediction(str(paths[i]), float(p_lat[row]), float(p_lon[row]), predictor.radius_km,
                                predictor.coverage,
                                int(regions[row]) if regions[row] >= 0 else None, neighbours, *truth,
                                region_prob=None if np.isnan(region_probs[row]) else float(region_probs[row]),
                                familiarity=None if np.isnan(familiarity[row]) else float(familiarity[row]),
                                unfamiliar=bool(familiarity[row] < predictor.unfamiliar_below),
                                region_agrees=bool(regions[row] == at_point[row]) if predictor.region_head is not None
                                else None, tokens=out.patches[i] if keep_tokens else None,
                                group=None if group is None else group[row], place=places[row],
                                place_km=float(places_km[row])))
    return preds, failed


def region_names(predictor: Predictor) -> dict[int, str]:
    """Each region of the predictor's partition named by the towns nearest its database photos, the most frequent
    first: {3: "Karlovac (HR) 6, Duga Resa (HR) 4, Ozalj (HR) 2"}."""
    labels = predictor.db["region"] if predictor.region_labels is None else predictor.region_labels
    return region_places(np.asarray(labels), predictor.db["lat_deg"].to_numpy(), predictor.db["lon_deg"].to_numpy())


def _readable_groups(groups: list[str | None] | None, ok: np.ndarray, n: int) -> list[str | None] | None:
    """The group of each readable photo, None for one no other readable photo shares a group
    with; None when no two do."""
    if groups is None:
        return None
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group labels for {n} photos")
    labels = [None if pd.isna(groups[i]) else groups[i] for i in ok]
    counts = pd.Series([g for g in labels if g is not None], dtype=object).value_counts()
    labels = [g if g is not None and counts[g] > 1 else None for g in labels]
    return labels if any(g is not None for g in labels) else None


def exif_truth(path: Path) -> tuple[float | None, float | None]:
    """The photo's own EXIF GPS, if it has a usable one."""
    try:
        return read_gps(Image.open(io.BytesIO(Path(path).read_bytes())))
    except (GpsError, OSError, ValueError):
        return None, None


def predictions_frame(preds: list[Prediction]) -> pd.DataFrame:
    """One row per prediction, its top-k neighbours as a JSON list: the CSV export."""
    return pd.DataFrame([{
        "path": p.path, "lat_deg": p.lat_deg, "lon_deg": p.lon_deg, "place": p.place, "place_km": p.place_km,
        "radius_km": p.radius_km, "coverage": p.coverage,
        "region": p.region, "region_prob": p.region_prob, "true_lat_deg": p.true_lat_deg,
        "true_lon_deg": p.true_lon_deg,
        "error_km": p.error_km, "familiarity": p.familiarity, "unfamiliar": p.unfamiliar,
        "region_agrees": p.region_agrees, "group": p.group, "neighbours": json.dumps([vars(n) for n in p.neighbours]),
    } for p in preds])


def predictions_geojson(preds: list[Prediction]) -> str:
    """Points at the predicted locations with every field as a property: the GeoJSON export."""
    frame = predictions_frame(preds)
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame["lon_deg"], frame["lat_deg"]),
                            crs="EPSG:4326").to_json()


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions CSV or GeoJSON that `geoloc predict` (or the Predict page) wrote,
    back as `predictions_frame` rows."""
    path = Path(path)
    if path.suffix.lower() in (".geojson", ".json"):
        features = json.loads(path.read_text())["features"]
        frame = pd.DataFrame([f["properties"] for f in features])
    else:
        frame = storage.unguarded(pd.read_csv(path, dtype={"group": str}))  # a group named "7" stays the text "7"
    missing = {"path", "lat_deg", "lon_deg", "radius_km", "coverage", "region", "neighbours"} - set(frame)
    if missing:
        raise ValueError(f"{path} is not a predictions file of `geoloc predict`: "
                         f"no column {', '.join(sorted(missing))}")
    for column in ("region_prob", "true_lat_deg", "true_lon_deg", "error_km", "familiarity", "unfamiliar",
                   "region_agrees", "group"):
        if column not in frame:
            frame[column] = None
    if "place" not in frame:  # a file written before predictions were named: named now, from the same table
        frame["place"], frame["place_km"] = place_labels(frame["lat_deg"], frame["lon_deg"])
    return frame
