"""Nearest-neighbour search over unit descriptors with faiss (inner product = cosine similarity).

Exact search (`IndexFlatIP`) up to `HNSW_THRESHOLD` vectors, where it costs well under a
millisecond per query; an HNSW graph beyond it, where exact search grows linearly. IVF (k-means
lists trained on a sample) builds several times faster than HNSW and is there for databases that
are rebuilt often; `benchmarks/bench_predict.py` measures both at 10^6. Indexes are saved as
faiss's own serialisation (no pickle), atomically.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from geoloc_core.base.storage import write_bytes

HNSW_THRESHOLD = 200_000
HNSW_M = 32  # graph degree: recall vs memory
HNSW_EF_SEARCH = 128  # search breadth: recall vs latency
IVF_NPROBE = 32  # inverted lists visited per query: recall vs latency
# k-means on a sample of this many vectors per list: training cost stays flat as the database grows
IVF_TRAIN_PER_LIST = 40


def build_index(vectors: np.ndarray, kind: str = "auto") -> faiss.Index:
    """(N, D) float32 unit vectors -> an inner-product index; kind: "auto", "flat" or "hnsw"."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "auto":
        kind = "hnsw" if len(vectors) > HNSW_THRESHOLD else "flat"
    if kind == "flat":
        index = faiss.IndexFlatIP(vectors.shape[1])
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "ivf":
        n_lists = int(4 * np.sqrt(len(vectors)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1], n_lists,
                                   faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(len(vectors), size=min(IVF_TRAIN_PER_LIST * n_lists, len(vectors)),
                                                 replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = IVF_NPROBE
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose auto, flat, hnsw or ivf")
    index.add(vectors)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) unit queries -> (similarities (M, k) float32, ids (M, k) int64), best first."""
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def save_index(index: faiss.Index, path: Path) -> Path:
    """Write a faiss index to `path` atomically; returns `path`."""
    return write_bytes(Path(path), faiss.serialize_index(index).tobytes())


def load_index(path: Path) -> faiss.Index:
    """A saved faiss index, with this module's search breadth (HNSW efSearch, IVF nprobe) set again."""
    index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = IVF_NPROBE
    return index
