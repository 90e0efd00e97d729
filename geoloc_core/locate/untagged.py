"""The photos of a folder that came without a location, located by the database the others made, in the same run.

An analyst's folder mixes photos with GPS and photos without (a camera without a receiver, GPS switched
off, a fix lost indoors): the ones without are exactly those to locate. `geoloc run` builds the run from
the tagged photos and then answers for the others with the run's own default predictor, which the
Predict page opens too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from geoloc_core.base import storage
from geoloc_core.config import PredictConfig
from geoloc_core.locate.predict import predict, predictions_frame
from geoloc_core.locate.store import open_predictor
from geoloc_core.runs.folders import Run

log = logging.getLogger(__name__)


def locate_untagged(run_dir: Path, cfg: PredictConfig | None = None) -> pd.DataFrame:
    """Locate the run's photos to locate (`Run.to_locate`) and write the answers (`Run.located`, paths relative to the
    photo root, as in photos.csv); a photo that no longer reads gets its reason in `error`. Returns the answers.

    `cfg`: default, the default predictor labelling regions of the run's first graph."""
    run = Run(run_dir)
    cfg = cfg or PredictConfig(graph=run.pipeline_config().graph.kinds[0])
    todo = run.read_to_locate()
    if todo.empty:
        run.located.unlink(missing_ok=True)
        return pd.DataFrame()
    root = run.photo_table().root
    paths = [root / p for p in todo["path"]]
    preds, failed = predict(paths, open_predictor(run_dir, cfg))
    answers = predictions_frame(preds)
    rel = {str(p): written for p, written in zip(paths, todo["path"])}
    answers["path"] = answers["path"].map(rel) if len(answers) else pd.Series(dtype=str)
    errors = pd.DataFrame({"path": [rel[p] for p in failed], "error": list(failed.values())})
    answers = pd.concat([answers, errors], ignore_index=True) if len(errors) else answers.assign(error="")
    storage.write_csv(run.located, answers)
    upstream = ["photos", "embeddings", "split"] + ([f"regions:{cfg.graph}"] if run.regions(cfg.graph).exists() else [])
    run.record_table([run.located], upstream, cfg)  # shown only while the run's predictor would answer the same
    run.append_metrics({"stage": "locate_untagged", "n_to_locate": len(todo), "n_located": len(preds),
                        "n_failed": len(failed)})
    log.info("%s: located %d of %d photos without a location", run.root, len(preds), len(todo))
    return answers
