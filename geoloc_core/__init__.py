"""geoloc: image geolocation over proximity-graph regions (Fushimi & Koike 2025), with retrieval and verification.

The floors, lowest first; a module imports only from its own floor or lower ones (tests/test_layers.py):

    config      one frozen dataclass per stage: every setting, default and help text
    base        storage (atomic writes), geo, images, places
    ingest      load_photos           photo folder / manifest / EXIF / GPX -> PhotoTable + rejections
    features    load_encoder, embed_images   photos -> (N, D) unit embeddings, descriptors
    regions     build_graph, SiteGraph.partition   DT / GG / RNG -> Louvain regions; Mesh, CPlaNet
    evaluate    metrics, the place-level bootstrap, the w/o linear probe, splits
    runs        Run (every file of a run folder), stages.run_all (`geoloc run`)
    learn       finetune_rounds       w/o, FT1, FT2 ... (the region classifier)
    locate      open_predictor, predict   index + verifier + calibration -> Prediction
    analysis    run_experiment, compare_methods, levers
    share       GIS files, HTML maps, the report
    server      data roots, the job queue, jobs
    cli         main: the `geoloc` command

The app (`app.py`, `views/`) sits above all of them; nothing here imports streamlit, plotly or pydeck.
"""

import importlib
import os

# No hub downloads at run time, ever: weights come from files the user or the install step provides.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_EXPORTS = {
    "load_photos": "ingest.photos", "PhotoTable": "ingest.photos",
    "load_encoder": "features.encoders", "embed_images": "features.embed",
    "build_graph": "regions.graphs", "SiteGraph": "regions.partition",
    "finetune_rounds": "learn.finetune", "run_experiment": "analysis.experiment",
    "open_predictor": "locate.store", "predict": "locate.predict", "Prediction": "locate.predict",
    "compare_methods": "analysis.compare", "run_all": "runs.stages",
    "Run": "runs.folders", "PipelineConfig": "config", "FinetuneConfig": "config", "PredictConfig": "config",
    "main": "cli",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Entry points load on first use, so `import geoloc_core` stays cheap."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geoloc_core' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
