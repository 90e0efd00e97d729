"""Embedding on a Ray cluster, for collections that outgrow one machine.

Ray Data reads the run's photo list, `map_batches` embeds it with one model per worker (an actor
loads the encoder once, then takes batch after batch), and each block is written as a Parquet shard
under `RUN/shards/<encoder key>/`. The driver reads the shards back in photo order, so the run gets
the same `embeddings.npy` (and `patches.npy`) as the single-process path: same encoder, same
preprocessing, same failures reported per file.

Workers must see the photos and the weights file at the same paths as the driver (a shared file
system, or the same layout on every node). `address` is a Ray address ("auto" for a running
cluster, "ray://head:10001" for a remote one), or "local" to start Ray on this machine.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from geoloc_core.config import EmbedConfig
from geoloc_core.features.embed import Embeddings, embed_images
from geoloc_core.features.encoders import load_encoder

log = logging.getLogger(__name__)


class EmbedWorker:
    """One Ray actor: loads the encoder once, embeds each batch of photo paths it is given."""

    def __init__(self, cfg: EmbedConfig, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.cfg = cfg
        self.encoder = load_encoder(cfg.model, cfg.checkpoint, cfg.pretrained, cfg.device, cfg.image_size)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """A batch of photos (columns `row`, `abs_path`) -> per photo: its row, embedding and patch-token bytes, and
        why it failed ("" if it did not)."""
        paths = [Path(p) for p in batch["abs_path"]]
        out = embed_images(paths, self.encoder, batch_size=self.cfg.batch_size, patches=self.cfg.patches,
                           progress=False, workers=2)
        return pd.DataFrame({
            "row": batch["row"].to_numpy(),
            "emb": [v.tobytes() for v in out.emb],
            "patches": [t.tobytes() for t in out.patches] if out.patches is not None else [b""] * len(paths),
            "n_tokens": out.patches.shape[1] if out.patches is not None else 0,  # a batch of failures has none
            "failed": [out.failed.get(i, "") for i in range(len(paths))],
        })


def embed_with_ray(paths: list[Path], cfg: EmbedConfig, shard_dir: Path, address: str = "local",
                   n_workers: int | None = None) -> Embeddings:
    """Embed `paths` on Ray (one encoder per worker), via Parquet shards in `shard_dir`; rows in input order."""
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = int(ray.cluster_resources().get("GPU", 0)) if cfg.device in ("auto", "cuda") else 0
    spare = 1  # a CPU left to Ray Data's own read / write tasks, or the actors starve them
    n_workers = n_workers or (gpus if gpus else max(1, (cpus - spare) // 2))
    per_worker = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": max(1, (cpus - spare) // n_workers)}
    shard_dir = Path(shard_dir)
    shutil.rmtree(shard_dir, ignore_errors=True)  # shards of an interrupted earlier call are not this call's
    frame = pd.DataFrame({"row": np.arange(len(paths)), "abs_path": [str(p) for p in paths]})
    log.info("embedding %d photos on Ray: %d workers (%s each) -> %s", len(paths), n_workers, per_worker, shard_dir)
    (ray.data.from_pandas(frame)
        .repartition(max(1, min(len(paths) // (4 * cfg.batch_size), 1000)))
        .map_batches(EmbedWorker, fn_constructor_kwargs={"cfg": cfg, "threads": int(per_worker["num_cpus"])},
                     batch_format="pandas", batch_size=4 * cfg.batch_size,
                     compute=ray.data.ActorPoolStrategy(size=n_workers), **per_worker)
        .write_parquet(str(shard_dir)))
    return read_shards(shard_dir, len(paths))


def read_shards(shard_dir: Path, n: int) -> Embeddings:
    """The Parquet shards of `embed_with_ray` -> Embeddings in row order (every row must be there once)."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(shard_dir)).to_pandas().sort_values("row")
    if not np.array_equal(table["row"].to_numpy(), np.arange(n)):
        raise RuntimeError(f"{shard_dir}: shards hold {len(table)} rows for {n} photos (missing or repeated rows)")
    failed = {int(r): reason for r, reason in zip(table["row"], table["failed"]) if reason}
    dim = max(len(b) for b in table["emb"])  # a batch whose photos all failed has empty rows
    emb = np.stack([np.frombuffer(b or bytes(dim), np.float32) for b in table["emb"]])
    patches = None
    if n_tokens := int(table["n_tokens"].max()):
        width = max(len(b) for b in table["patches"])
        patches = (np.stack([np.frombuffer(b or bytes(width), np.float16) for b in table["patches"]])
                   .reshape(n, n_tokens, -1))
    return Embeddings(emb=emb, patches=patches, failed=failed)
