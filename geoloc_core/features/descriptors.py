"""Image descriptors for retrieval: the CLS embedding, or ViT patch tokens aggregated by GeM or VLAD.

AnyLoc's finding is that DINOv2's patch features, aggregated without training, recognise places
better than its CLS token. GeM needs no vocabulary. VLAD needs one: k-means centroids of patch
features, learned from the database side only, so a query never shapes the space it is matched in.
Every descriptor is L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

import faiss
import numpy as np

from geoloc_core.config import DESCRIPTORS


def unit_vectors(x: np.ndarray) -> np.ndarray:
    """(..., D) -> float32 vectors along the last axis scaled to length 1 (a zero vector stays zero): inner products of
    them are cosines."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def gem(patches: np.ndarray, p: float = 3.0, eps: float = 1e-6, chunk: int = 256) -> np.ndarray:
    """(N, P, D) patch tokens -> (N, D) unit generalised-mean pooled descriptors (AnyLoc's clamp at eps)."""
    out = np.empty((len(patches), patches.shape[2]), np.float32)
    for s in range(0, len(patches), chunk):
        x = np.clip(patches[s:s + chunk].astype(np.float32), eps, None)
        out[s:s + chunk] = np.mean(x**p, axis=1) ** (1.0 / p)
    return unit_vectors(out)


def fit_vlad_vocabulary(patches: np.ndarray, n_words: int = 32, seed: int = 0,
                        max_samples: int = 200_000) -> np.ndarray:
    """(N, P, D) database patch tokens -> (n_words, D) unit centroids (spherical k-means, faiss)."""
    rng = np.random.default_rng(seed)
    flat = patches.reshape(-1, patches.shape[2])
    take = rng.choice(len(flat), size=min(max_samples, len(flat)), replace=False)
    sample = unit_vectors(flat[np.sort(take)].astype(np.float32))
    kmeans = faiss.Kmeans(sample.shape[1], n_words, niter=25, seed=seed, spherical=True, verbose=False)
    kmeans.train(sample)
    return unit_vectors(kmeans.centroids.astype(np.float32))


def vlad(patches: np.ndarray, vocabulary: np.ndarray, chunk: int = 64) -> np.ndarray:
    """(N, P, D) patch tokens -> (N, K*D) unit VLAD: hard-assigned residuals, intra-normalised per word."""
    k, d = vocabulary.shape
    out = np.empty((len(patches), k * d), np.float32)
    for s in range(0, len(patches), chunk):
        x = unit_vectors(patches[s:s + chunk].astype(np.float32))  # (B, P, D)
        words = np.argmax(x @ vocabulary.T, axis=2)  # (B, P)
        onehot = np.eye(k, dtype=np.float32)[words]  # (B, P, K)
        residual = np.einsum("bpk,bpd->bkd", onehot, x) - onehot.sum(axis=1)[..., None] * vocabulary[None]
        out[s:s + chunk] = unit_vectors(unit_vectors(residual).reshape(len(x), -1))
    return out


def describe(kind: str, emb: np.ndarray, patches: np.ndarray | None,
             vocabulary: np.ndarray | None = None) -> np.ndarray:
    """The descriptor `kind` of photos given their unit CLS embeddings and (for gem / vlad) patch tokens."""
    if kind == "cls":
        return np.ascontiguousarray(emb, dtype=np.float32)
    if patches is None:
        raise ValueError(f"descriptor {kind!r} needs patch tokens (embed with --patches)")
    if kind == "gem":
        return gem(patches)
    if kind == "vlad":
        if vocabulary is None:
            raise ValueError("descriptor 'vlad' needs a vocabulary (fit_vlad_vocabulary on the database)")
        return vlad(patches, vocabulary)
    raise ValueError(f"unknown descriptor {kind!r}; choose from {DESCRIPTORS}")
