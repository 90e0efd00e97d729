"""Nearest-neighbour search over unit descriptors with faiss (inner product = cosine similarity).

Exact search (`IndexFlatIP`) up to `HNSW_THRESHOLD` vectors, where it costs well under a
millisecond per query; an HNSW graph beyond it, where exact search grows linearly. Indexes are
saved as faiss's own serialisation (no pickle), atomically.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from .runs import write_bytes

HNSW_THRESHOLD = 200_000
HNSW_M = 32  # graph degree: recall vs memory
HNSW_EF_SEARCH = 128  # search breadth: recall vs latency


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
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose auto, flat or hnsw")
    index.add(vectors)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) unit queries -> (similarities (M, k) float32, ids (M, k) int64), best first."""
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def save_index(index: faiss.Index, path: Path) -> Path:
    return write_bytes(Path(path), faiss.serialize_index(index).tobytes())


def load_index(path: Path) -> faiss.Index:
    index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    return index
