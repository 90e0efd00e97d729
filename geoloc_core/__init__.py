"""geoloc: image geolocation over proximity-graph regions (Fushimi & Koike 2025), with retrieval and verification.

The stages, in the order photos flow through them (each module named after its one job):

    ingest      load_photos           photo folder / manifest -> PhotoTable + what was rejected, and why
    embed       load_encoder, embed_images   photos -> (N, D) unit embeddings (encoders.py: the registry)
    graph       build_graph           site coordinates -> DT / GG / RNG edges (graphs.py)
    regions     SiteGraph.partition   feature-weighted graph -> Louvain regions (regions.py)
    finetune    finetune_rounds       w/o, FT1, FT2 ... (classifier.py: the head prediction reuses)
    experiment  run_experiment        Table 1: graphs x rounds, Mesh, CPlaNet
    predictor   open_predictor        a run's photos -> index + verifier + calibration, saved in the run
    predict     predict.predict       photos -> Prediction (location, radius, region, neighbours)
    compare     compare_methods       every locator on the held-out locations
    pipeline    run_all               ingest -> embed -> graph -> regions -> evaluate over a run folder

`runs.Run` names every file of a run folder and reads it back; `config.py` holds every setting;
`jobs.py` starts and stops background jobs; `cli.main` is the `geoloc` command; `viz.py` builds figures.
"""

import importlib
import os

# No hub downloads at run time, ever: weights come from files the user or the install step provides.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_EXPORTS = {
    "load_photos": "ingest", "PhotoTable": "ingest",
    "load_encoder": "encoders", "embed_images": "embed",
    "build_graph": "graphs", "SiteGraph": "regions",
    "finetune_rounds": "finetune", "run_experiment": "experiment",
    "open_predictor": "predictor", "Prediction": "predict",  # predict.predict: the package attribute `predict` is its module
    "compare_methods": "compare", "run_all": "pipeline",
    "Run": "runs", "PipelineConfig": "config", "FinetuneConfig": "config", "PredictConfig": "config", "main": "cli",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Entry points load on first use, so `import geoloc_core` stays cheap."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geoloc_core' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
