"""Saved predictors: where each lives in a run, what it was built from (its provenance record), and opening one
(rebuilt when stale)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geoloc_core.base import storage
from geoloc_core.config import PredictConfig, PredictorConfig, from_dict
from geoloc_core.evaluate.linear_probe import LinearProbe
from geoloc_core.features.embed import TTA_AUGMENTATIONS
from geoloc_core.features.encoders import load_encoder
from geoloc_core.learn.classifier import load_region_head
from geoloc_core.locate.build import build_predictor, photo_regions
from geoloc_core.locate.index import load_index, save_index
from geoloc_core.locate.locators import load_locator, locator_meta, save_locator
from geoloc_core.locate.predictor import Predictor
from geoloc_core.runs import provenance
from geoloc_core.runs.folders import PredictorStore, Run
from geoloc_core.runs.provenance import Stale
from geoloc_core.runs.stages import tta_embeddings

log = logging.getLogger(__name__)


PREDICTOR_FORMAT = 7  # bump when a saved predictor's contents change meaning (7: cross-fitted radius, fine-tuned ones
#                        calibrated on unseen photos, the regression candidate)


@contextmanager
def locked(store: PredictorStore, shared: bool) -> Iterator[None]:
    """The store's lock (`flock` on its lock file, released by the kernel if the holder dies): shared while a predictor
    is read, exclusive while one is built and written, so a reader in any process sees a whole old predictor or a whole
    new one. Not re-entrant: a process holding it must not take it again (a second open file waits on the first)."""
    store.root.mkdir(parents=True, exist_ok=True)
    with open(store.lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def save_predictor(predictor: Predictor, store: PredictorStore) -> None:
    """Index, database (without regions), vocabulary, verifier, calibration errors, then the meta file last (its
    presence marks a whole predictor, should the writer die midway), under the store's exclusive lock."""
    with locked(store, shared=False):
        _write_predictor(predictor, store)


def _write_predictor(predictor: Predictor, store: PredictorStore) -> None:
    store.meta.unlink(missing_ok=True)  # until the new one is whole, there is no predictor here
    save_index(predictor.index, store.index)
    storage.write_csv(store.db, predictor.db.drop(columns="region"))
    store.vocabulary.unlink(missing_ok=True)  # a part the new predictor has not must not outlive the old one
    store.verifier.unlink(missing_ok=True)
    store.regressor.unlink(missing_ok=True)
    store.region_probe.unlink(missing_ok=True)
    if predictor.region_probe is not None:
        storage.write_npy(store.region_probe, predictor.region_probe.weights)
    if predictor.vocabulary is not None:
        storage.write_npy(store.vocabulary, predictor.vocabulary)
    if predictor.verifier is not None:
        v = predictor.verifier
        save_locator(v, store.verifier, locator_meta("verifier", v.cfg, v.in_dim, extent_rad=v.extent_rad))
    if predictor.regressor is not None:
        r = predictor.regressor
        save_locator(r, store.regressor, locator_meta("regressor", r.cfg, r.in_dim, extent_rad=r.extent_rad))
    storage.write_npy(store.calibration, predictor.calibration_errors_km)
    storage.write_npy(store.familiarity, predictor.familiar_sims)
    classes = None if predictor.region_probe is None else predictor.region_probe.classes.tolist()
    storage.write_json(store.meta, {"config": predictor.cfg, "bandwidth_km": predictor.bandwidth_km,
                                    "format": PREDICTOR_FORMAT, "region_classes": classes, "auto": predictor.choice})


def load_predictor(store: PredictorStore, run_dir: Path, cfg: PredictConfig = PredictConfig()) -> Predictor:
    """A saved predictor with the run's encoder, its current regions of `cfg.graph` and, with `cfg.region_from ==
    "classifier"`, the latest fine-tuning round's region classifier for that graph where the run has one. A predictor
    built with `ft_round` r retrieves with round r's backbone, and names regions with round r's classifier. The store's
    files are read under its shared lock: all of one saved predictor."""
    run = Run(run_dir)
    with locked(store, shared=True):
        meta = store.read_meta()
        if not meta:
            raise FileNotFoundError(f"{store.root}: no saved predictor")
        built = from_dict(PredictorConfig, meta["config"])
        vocabulary = storage.read_npy(store.vocabulary) if built.descriptor == "vlad" else None
        verifier = load_locator(store.verifier) if built.verify else None
        regressor = load_locator(store.regressor) if store.regressor.exists() else None
        db = pd.read_csv(store.db, dtype={"group": str})
        classes = meta.get("region_classes")
        probe = None if classes is None else storage.read_npy(store.region_probe)
        region_probe = None if classes is None else LinearProbe(probe, np.asarray(classes))
        index, errors = load_index(store.index), storage.read_npy(store.calibration)
        familiar = storage.read_npy(store.familiarity)
    embed_cfg = run.pipeline_config().embed
    encoder = load_encoder(embed_cfg.model, embed_cfg.checkpoint, embed_cfg.pretrained, cfg.device,
                           embed_cfg.image_size)
    backbone = load_region_head(run.finetune_round(cfg.graph, built.ft_round), built.ft_round,
                                encoder) if built.ft_round else None
    latest = run.latest_round(cfg.graph) if cfg.region_from == "classifier" and backbone is None else None
    head = load_region_head(*latest, encoder) if latest else (backbone if cfg.region_from == "classifier" else None)
    regions_file, regions = photo_regions(run, cfg.graph)
    db["region"] = regions[db["photo"].to_numpy()]
    head_labels = head.regions.labels()["region"].to_numpy()[db["photo"].to_numpy()] if head else None
    return Predictor(built, index, db, vocabulary, meta["bandwidth_km"], errors, familiar, cfg.coverage,
                     cfg.unfamiliar_below, cfg.graph, verifier, encoder, head, head.regions if head else regions_file,
                     head_labels, backbone, region_probe, regressor, meta.get("auto"))


def predictor_store(run_dir: Path, cfg: PredictorConfig, database: str, graph: str) -> PredictorStore:
    """Where the predictor for these settings is saved: one folder per descriptor, database and settings digest
    (with the graph, where the predictor depends on its regions or fine-tuning), so alternating settings reload each
    other's predictor instead of rebuilding it."""
    key = {"config": storage.to_jsonable(cfg), "graph": graph} if _depends_on_graph(cfg) else storage.to_jsonable(cfg)
    settings = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return Run(run_dir).predictor(cfg.descriptor, database, settings)


def predictor_inputs(run_dir: Path, cfg: PredictorConfig, database: str, graph: str) -> dict[str, Any]:
    """What a saved predictor is built from, for its provenance record: the run's photos, embeddings (with their patch
    tokens) and split, the passes of test-time augmentations, the fine-tuning round it retrieves with, the graph's
    regions where their centroids are candidates or the hierarchy classifies them, and its settings and database."""
    run = Run(run_dir)
    settings = {"format": PREDICTOR_FORMAT, "config": cfg, "database": database,
                "graph": graph if _depends_on_graph(cfg) else None}
    inputs: dict[str, Any] = {**run.base_inputs(), "settings: predictor": provenance.settings(settings)}
    for aug in TTA_AUGMENTATIONS[cfg.tta]:
        if aug != "photo":
            inputs[run.augmented_embeddings(aug).name] = lambda aug=aug: run.check(f"augmentation:{aug}")
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


def open_predictor(run_dir: Path, cfg: PredictConfig = PredictConfig(), database: str = "all",
                   build: bool = True) -> Predictor:
    """The run's saved predictor for `cfg` (`database="train"`: without the held-out locations), built first if there is
    none or its provenance record says it was built from anything (settings included) other than the run has now.
    Checked, built and saved under the store's exclusive lock, so two processes opening one store build it once; then
    loaded under its shared lock. Without `build` (a page), one that is missing or stale raises
    (`provenance.Stale`, FileNotFoundError) instead: building is a job's work."""
    store = predictor_store(run_dir, cfg.predictor, database, cfg.graph)
    if not build:
        if not store.record.exists():  # nothing saved: said before the lock, which would make the store's folder
            raise FileNotFoundError(f"{store.root}: no saved predictor for these settings")
        with locked(store, shared=True):
            provenance.check(store.root.name, store.record, store.files,
                             predictor_inputs(run_dir, cfg.predictor, database, cfg.graph))
        return load_predictor(store, run_dir, cfg)  # a build in between saves a whole predictor: it is read whole
    if cfg.predictor.tta != "none":
        tta_embeddings(run_dir, cfg.predictor.tta)  # the augmentations' passes are inputs: made (or made again) first
    inputs = predictor_inputs(run_dir, cfg.predictor, database, cfg.graph)
    with locked(store, shared=False):
        try:
            provenance.check(store.root.name, store.record, store.files, inputs)
        except Stale as stale:
            log.info("building %s (%s)", store.root.name, stale)
            store.record.unlink(missing_ok=True)
            _write_predictor(build_predictor(run_dir, cfg.predictor, database, cfg.graph), store)
            provenance.record(store.record, store.files, inputs)
    return load_predictor(store, run_dir, cfg)
