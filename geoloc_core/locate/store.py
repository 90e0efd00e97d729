"""Saved predictors: where each lives in a run, what it was built from (its provenance record), and opening one
(rebuilt when stale)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geoloc_core.base import storage
from geoloc_core.config import PredictConfig, PredictorConfig, from_dict
from geoloc_core.evaluate.linear_probe import LinearProbe
from geoloc_core.features.embed import TTA_VIEWS
from geoloc_core.features.encoders import load_encoder
from geoloc_core.learn.classifier import load_region_head
from geoloc_core.locate.build import build_predictor, photo_regions
from geoloc_core.locate.index import load_index, save_index
from geoloc_core.locate.locators import load_locator, locator_meta, save_locator
from geoloc_core.locate.predictor import Predictor
from geoloc_core.runs import provenance
from geoloc_core.runs.folders import PredictorStore, Run
from geoloc_core.runs.provenance import Stale
from geoloc_core.runs.stages import view_embeddings

log = logging.getLogger(__name__)


PREDICTOR_FORMAT = 5  # bump when a saved predictor's contents change meaning


def save_predictor(predictor: Predictor, store: PredictorStore) -> None:
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
    storage.write_json(store.meta, {"config": predictor.cfg, "bandwidth_km": predictor.bandwidth_km,
                                    "format": PREDICTOR_FORMAT, "region_classes": classes})


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
    regions_file, regions = photo_regions(run, cfg.graph)
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


def predictor_inputs(run_dir: Path, cfg: PredictorConfig, database: str, graph: str) -> dict[str, Any]:
    """What a saved predictor is built from, for its provenance record: the run's photos, embeddings (with their patch
    tokens) and split, the passes of test-time views, the fine-tuning round it retrieves with, the graph's regions where
    their centroids are candidates or the hierarchy classifies them, and its settings and database."""
    run = Run(run_dir)
    settings = {"format": PREDICTOR_FORMAT, "config": cfg, "database": database,
                "graph": graph if _depends_on_graph(cfg) else None}
    inputs: dict[str, Any] = {**run.base_inputs(), "settings: predictor": provenance.settings(settings)}
    for view in TTA_VIEWS[cfg.tta]:
        if view != "photo":
            inputs[run.view_embeddings(view).name] = lambda view=view: run.check(f"view:{view}")
    if cfg.ft_round:
        ft = run.finetune_round(graph, cfg.ft_round)
        inputs[f"{ft.root.name} round {cfg.ft_round}"] = lambda: ft.round_digest(cfg.ft_round)
    if _uses_regions(cfg):
        inputs[run.regions(graph).csv.name] = lambda: run.check(f"regions:{graph}")
    return inputs


def _uses_regions(cfg: PredictorConfig) -> bool:
    """Whether the predictor depends on the run's regions: their centroids as candidates, or the hierarchy's classes."""
    return "regions" in cfg.sources or bool(cfg.top_regions or cfg.region_weight)


def _depends_on_graph(cfg: PredictorConfig) -> bool:
    """Whether the predictor is built from a graph's regions or fine-tuning, so each graph has its own."""
    return _uses_regions(cfg) or bool(cfg.ft_round)


def predictor_version(run_dir: Path, cfg: PredictConfig) -> str:
    """What an opened predictor depends on, the regions it labels with and the region head it picks included, as the
    provenance digests of those artefacts (their records' stamps make this a few small reads): the key for a predictor
    held in memory (the app's). A stale input gives a key of its own, so opening it again refuses or rebuilds it."""
    run = Run(run_dir)
    parts = []
    for key in ("photos", "embeddings", "split", f"regions:{cfg.graph}"):
        try:
            parts.append(run.check(key))
        except (Stale, FileNotFoundError) as why:
            parts.append(f"{key}: {why}")
    latest = run.latest_round(cfg.graph)
    parts.append("" if latest is None else f"{latest[0].root}:{latest[1]}:{latest[0].round_digest(latest[1])}")
    return provenance.settings(parts)


def open_predictor(run_dir: Path, cfg: PredictConfig = PredictConfig(), database: str = "all") -> Predictor:
    """The run's saved predictor for `cfg` (`database="train"`: without the held-out locations), built first if there is
    none or its provenance record says it was built from anything (settings included) other than the run has now."""
    if cfg.predictor.tta != "none":
        view_embeddings(run_dir, cfg.predictor.tta)  # the views' passes are inputs: made (or made again) first
    store = predictor_store(run_dir, cfg.predictor, database, cfg.graph)
    inputs = predictor_inputs(run_dir, cfg.predictor, database, cfg.graph)
    try:
        provenance.check(store.root.name, store.record, store.files, inputs)
    except Stale as stale:
        log.info("building %s (%s)", store.root.name, stale)
        store.record.unlink(missing_ok=True)
        save_predictor(build_predictor(run_dir, cfg.predictor, database, cfg.graph), store)
        provenance.record(store.record, store.files, inputs)
    return load_predictor(store, run_dir, cfg)
