"""Every way of locating a photo, on one split: the held-out locations of a run queried against its
training photos, one row per method, the same km metrics and Recall@K for all.

- kNN-<descriptor> top-1 / vote: retrieval alone (AnyLoc), per descriptor (CLS, GeM, VLAD);
- region centroid: the w/o linear probe's predicted region, answered at its centroid;
- regression: the lat/lon MLP (the MAE thesis baseline);
- verified: retrieve, propose candidates, let the GPS verifier choose (G3), once with every default
  source and once per source left out or alone, so each stage's contribution shows.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .classify import fit_linear_probe
from .descriptors import describe
from .evaluate import centroid_errors, distance_metrics, recall_at_k
from .geo import haversine_km
from .index import search
from .ingest import load_photo_table
from .locators import LocatorConfig, fit_regressor
from .pipeline import load_embeddings, load_split
from .predict import DEFAULT_SOURCES, SOURCES, Predictor, _neighbour_coords, build_predictor, locate, vote

log = logging.getLogger(__name__)


def source_variants(sources: tuple[str, ...] = DEFAULT_SOURCES) -> dict[str, tuple[str, ...]]:
    """Row name -> candidate sources: the default set, each source alone, and each left out."""
    variants = {"+".join(sources): sources}
    for s in SOURCES:
        variants.setdefault(s, (s,))
        if s in sources and len(sources) > 1:
            variants.setdefault("+".join(x for x in sources if x != s), tuple(x for x in sources if x != s))
    variants.setdefault("+".join(sources + ("regions",)), sources + ("regions",))
    return variants


def compare_methods(run_dir: Path, descriptors: tuple[str, ...] = ("cls", "gem", "vlad"), k: int = 10,
                    recall_radius_km: float = 0.025, locator: LocatorConfig = LocatorConfig(),
                    graph: str = "dt") -> tuple[list[dict], pd.DataFrame]:
    """One row per method (see the module docstring), graded on the run's held-out photos, and the
    default verified predictor's prediction for each of those photos (for the error map)."""
    run_dir = Path(run_dir)
    table = load_photo_table(run_dir)
    _, is_test = load_split(run_dir)
    emb, patches = load_embeddings(run_dir)
    test, train = np.flatnonzero(is_test), np.flatnonzero(~is_test)
    lat, lon = table.lat_deg, table.lon_deg
    truth = (lat[test], lon[test])
    rows = []

    def row(method: str, p_lat: np.ndarray, p_lon: np.ndarray, predictor: Predictor | None = None, ids=None, **extra) -> None:
        recall = {} if ids is None else recall_at_k(ids, predictor.db["lat_deg"].to_numpy(), predictor.db["lon_deg"].to_numpy(),
                                                     *truth, recall_radius_km)
        rows.append({"method": method, **distance_metrics(p_lat, p_lon, *truth), **recall, **extra})
        log.info("%s: median %.3f km", method, rows[-1]["median_km"])

    for name in descriptors:
        predictor = build_predictor(run_dir, name, k=k, database="train", verify=False, graph=graph)
        desc = describe(name, emb[test], None if patches is None else patches[test], predictor.vocabulary)
        sims, ids = search(predictor.index, desc, k)
        n_lat, n_lon = _neighbour_coords(predictor, ids)
        row(f"kNN-{name.upper()} top-1", n_lat[:, 0], n_lon[:, 0], predictor, ids)
        row(f"kNN-{name.upper()} vote", *vote(sims, n_lat, n_lon, predictor.bandwidth_km), predictor, ids,
            bandwidth_km=predictor.bandwidth_km, **{"radius_km@90": predictor.radius_km})

    regions_csv = run_dir / f"regions_{graph}.csv"
    if regions_csv.exists():
        labels = pd.read_csv(regions_csv)["region"].to_numpy()
        probe = fit_linear_probe(emb[train], labels[train], table.frame["group"].to_numpy()[train])
        rows.append({"method": f"region centroid ({graph.upper()} w/o)",
                     **centroid_errors(probe.predict(emb[test]), labels[train], lat[train], lon[train], *truth)})

    row("regression (lat/lon MLP)", *fit_regressor(emb[train], lat[train], lon[train], locator).predict(emb[test]))

    verified = build_predictor(run_dir, "cls", k=k, database="train", locator=locator, graph=graph)
    for name, sources in source_variants(verified.sources).items():
        p_lat, p_lon, _, ids = locate(replace(verified, sources=sources), emb[test], emb[test])
        row(f"verified: {name}", p_lat, p_lon, verified, ids,
            **{"radius_km@90": verified.radius_km} if sources == verified.sources else {})
        if sources == verified.sources:
            predictions = pd.DataFrame({"path": table.frame["path"].to_numpy()[test], "lat_deg": p_lat, "lon_deg": p_lon,
                                        "true_lat_deg": truth[0], "true_lon_deg": truth[1],
                                        "error_km": haversine_km(p_lat, p_lon, *truth)})
    return rows, predictions
