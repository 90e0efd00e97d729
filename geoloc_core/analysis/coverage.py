"""Where the data is thin: photo density and location error per hexagon, so an analyst sees where more photos would
help.

Hexagons are binned in the run's local metric plane (azimuthal equidistant, metres), so every cell has
the same true area wherever it lies; no H3 package is needed. Each cell counts the run's photos (the
database) and summarises an error per photo located in it:

- `errors="loo"` (default): every photo located by the others with its own location left out (the
  predictor's calibration queries: `predictor.leave_location_out` and its kNN vote, on the CLS
  descriptor). It covers every photo, so every cell with photos has an error: what a new photo taken
  there would meet. A pass over every photo is a job's work (`geoloc coverage`): its answers are kept in
  the run (`Run.loo_answers`) while the photos and embeddings are those they came from; a page only reads them.
- `errors="compare"`: the verified predictor's answers for held-out photos that `geoloc compare` wrote
  (all photos with `--folds K`, else the run's held-out share).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from geoloc_core.base import storage
from geoloc_core.base.geo import LocalProjection, haversine_km
from geoloc_core.config import CoverageConfig, PredictorConfig
from geoloc_core.features.descriptors import describe
from geoloc_core.locate.calibration import calibrate_bandwidth, leave_location_out
from geoloc_core.locate.index import build_index
from geoloc_core.locate.predictor import vote
from geoloc_core.runs import provenance
from geoloc_core.runs.folders import Run, table_record

SQRT3 = np.sqrt(3.0)
CELLS_ACROSS = 25  # the automatic hexagon size: the photos' extent over this many cells


def hex_cells(xy_m: np.ndarray, size_m: float) -> np.ndarray:
    """(N, 2) metres -> (N, 2) int64 axial (q, r) of the pointy-top hexagon (centre-to-corner `size_m`) holding each
    point."""
    q = (SQRT3 / 3 * xy_m[:, 0] - xy_m[:, 1] / 3) / size_m
    r = 2 / 3 * xy_m[:, 1] / size_m
    x, z = q, r
    y = -x - z
    rx, ry, rz = np.round(x), np.round(y), np.round(z)  # cube rounding: fix the coordinate that moved most
    dx, dy, dz = np.abs(rx - x), np.abs(ry - y), np.abs(rz - z)
    fix_x = (dx > dy) & (dx > dz)
    fix_z = ~fix_x & (dz >= dy)
    rx = np.where(fix_x, -ry - rz, rx)
    rz = np.where(fix_z, -rx - ry, rz)
    return np.column_stack([rx, rz]).astype(np.int64)


def hex_centres(cells: np.ndarray, size_m: float) -> np.ndarray:
    """(H, 2) axial cells -> (H, 2) centres in metres."""
    return np.column_stack([size_m * SQRT3 * (cells[:, 0] + cells[:, 1] / 2), size_m * 1.5 * cells[:, 1]])


def hex_corners(centres_m: np.ndarray, size_m: float) -> np.ndarray:
    """(H, 2) centres -> (H, 7, 2) closed rings of corners in metres."""
    angles = np.radians(60 * np.arange(7) - 30)
    return centres_m[:, None, :] + size_m * np.stack([np.cos(angles), np.sin(angles)], axis=-1)[None]


def coverage_table(photo_xy_m: np.ndarray, error_xy_m: np.ndarray, error_km: np.ndarray, size_m: float) -> pd.DataFrame:
    """Per hexagon holding a photo or an error: q, r, x_m, y_m, n_photos, n_errors, median_error_km, p90_error_km.

    `n_photos` sums to len(photo_xy_m), `n_errors` to len(error_km); a cell without errors has nan error figures."""
    photos = pd.DataFrame(hex_cells(photo_xy_m, size_m), columns=["q", "r"]).value_counts().rename("n_photos")
    errors = pd.DataFrame(hex_cells(error_xy_m, size_m),
                          columns=["q", "r"]).assign(error_km=np.asarray(error_km, np.float64))
    stats = errors.groupby(["q", "r"])["error_km"].agg(n_errors="size", median_error_km="median",
                                                       p90_error_km=lambda e: float(np.quantile(e, 0.9)))
    table = pd.concat([photos, stats], axis=1).reset_index().rename(columns={"level_0": "q", "level_1": "r"})
    table["n_photos"] = table["n_photos"].fillna(0).astype(np.int64)
    table["n_errors"] = table["n_errors"].fillna(0).astype(np.int64)
    centres = hex_centres(table[["q", "r"]].to_numpy(), size_m)
    return table.assign(x_m=centres[:, 0], y_m=centres[:, 1]).sort_values(["r", "q"], ignore_index=True)


def auto_size_m(xy_m: np.ndarray) -> float:
    """A hexagon size that puts about CELLS_ACROSS cells across the photos' extent (at least 10 m)."""
    extent = float(np.ptp(xy_m, axis=0).max()) if len(xy_m) > 1 else 0.0
    return max(extent / CELLS_ACROSS / SQRT3, 10.0)


def loo_errors(run: Run, build: bool = True, k: int = PredictorConfig.k) -> pd.DataFrame:
    """The run's kept leave-location-out answers (`loo_answers`), computed and kept first where missing or stale and
    `build` is set (a command); without `build` (a page) a missing or stale table raises (FileNotFoundError,
    `provenance.Stale`)."""
    files = [run.loo_answers]
    if not build and not run.loo_answers.exists():
        raise FileNotFoundError(f"{run.root} has no leave-location-out answers yet: `geoloc coverage` makes them")
    kept_k = (provenance.read(table_record(run.loo_answers)) or {"inputs": {}})["inputs"].get("settings")
    if build and (run.stale_table(files) is not None or kept_k != provenance.settings({"k": k})):
        storage.write_csv(run.loo_answers, loo_answers(run, k))
        run.record_table(files, ["photos", "embeddings"], {"k": k})
    elif kept_k != provenance.settings({"k": k}):
        raise provenance.Stale(run.loo_answers.name, ["settings"], f"`geoloc coverage` computes them for k={k}")
    run.check_table(files)
    return pd.read_csv(run.loo_answers)


def loo_answers(run: Run, k: int = PredictorConfig.k) -> pd.DataFrame:
    """Every photo located by the others with its location left out (kNN vote over CLS descriptors, the bandwidth the
    predictor's calibration picks): photo, lat_deg, lon_deg, error_km."""
    table = run.photo_table()
    emb, _ = run.read_embeddings()
    db = pd.DataFrame({"lat_deg": table.lat_deg, "lon_deg": table.lon_deg, "group": table.frame["group"].to_numpy()})
    desc = describe("cls", emb, None)
    q, sims, ids = leave_location_out(desc, db, build_index(desc), k, max_queries=len(db))
    lat, lon = db["lat_deg"].to_numpy(), db["lon_deg"].to_numpy()
    p_lat, p_lon = vote(sims, lat[ids], lon[ids], calibrate_bandwidth(db, q, sims, ids))
    return pd.DataFrame({"photo": q, "lat_deg": lat[q], "lon_deg": lon[q],
                         "error_km": haversine_km(p_lat, p_lon, lat[q], lon[q])})


def compare_errors(run: Run, build: bool = True) -> pd.DataFrame:
    """The verified predictor's held-out answers from `geoloc compare`: lat_deg, lon_deg (the truth), error_km (never
    built here, whatever `build` says: `geoloc compare` makes them)."""
    if not run.compare_predictions.exists():
        raise FileNotFoundError(f"{run.root} has no compare predictions: run `geoloc compare` first, or use errors=loo")
    run.check_table(run.compare_files)  # answers for other photos or another split are refused
    frame = pd.read_csv(run.compare_predictions, keep_default_na=False)
    return pd.DataFrame({"lat_deg": frame["true_lat_deg"], "lon_deg": frame["true_lon_deg"],
                         "error_km": frame["error_km"]})


ERROR_SOURCES = {"loo": loo_errors, "compare": compare_errors}


def run_coverage(run: Run, cfg: CoverageConfig = CoverageConfig(),
                 build: bool = True) -> tuple[pd.DataFrame, LocalProjection, float]:
    """A run's coverage hexagons (see `coverage_table`, plus lat_deg / lon_deg of each centre), its projection, and the
    hexagon size in metres; `build`: see `loo_errors`."""
    table = run.photo_table()
    projection, _ = run.read_split()
    photo_xy = projection.to_xy_m(table.lat_deg, table.lon_deg)
    errors = ERROR_SOURCES[cfg.errors](run, build)
    size_m = cfg.hex_km * 1000 if cfg.hex_km > 0 else auto_size_m(photo_xy)
    cells = coverage_table(photo_xy, projection.to_xy_m(errors["lat_deg"].to_numpy(), errors["lon_deg"].to_numpy()),
                           errors["error_km"].to_numpy(), size_m)
    lat, lon = projection.to_latlon(cells[["x_m", "y_m"]].to_numpy())
    return cells.assign(lat_deg=lat, lon_deg=lon), projection, size_m


def coverage_geojson(cells: pd.DataFrame, projection: LocalProjection, size_m: float, errors: str = "loo") -> dict:
    """The hexagons as a GeoJSON FeatureCollection (EPSG:4326) with their counts and error figures as properties."""
    corners = hex_corners(cells[["x_m", "y_m"]].to_numpy(), size_m)
    lat, lon = projection.to_latlon(corners.reshape(-1, 2))
    rings = np.stack([lon, lat], axis=-1).reshape(corners.shape)
    features = []
    for ring, (_, row) in zip(rings, cells.iterrows()):
        props = {"q": int(row["q"]), "r": int(row["r"]), "n_photos": int(row["n_photos"]),
                 "n_errors": int(row["n_errors"]),
                 "median_error_km": None if np.isnan(row["median_error_km"]) else float(row["median_error_km"]),
                 "p90_error_km": None if np.isnan(row["p90_error_km"]) else float(row["p90_error_km"])}
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring.round(6).tolist()]},
                         "properties": props})
    return {"type": "FeatureCollection", "features": features,
            "properties": {"hex_size_km": size_m / 1000, "errors": errors, "projection": projection.crs}}
