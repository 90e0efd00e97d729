"""Why a photo was placed where it was: which parts of it match which parts of each retrieved neighbour.

A ViT cuts the centre crop of a photo into a g x g grid of patches and gives each a token. Two
patches correspond when each is the other's nearest neighbour by cosine among the two photos' tokens
(mutual nearest neighbours). Of those, the pairs shown are the most distinctive: the best cosine
ahead of the runner-up by the widest margin, both ways (Lowe's ratio test, as a difference). A patch
of open sky is nearly as close to twenty others, a gable to one; sorting by cosine alone fills the
picture with sky.

The query's tokens come from the prediction's own forward pass (`predict(..., keep_tokens=True)`),
never a second one. A neighbour's tokens come from the run's stored patch tokens when the run kept
them for this encoder (`geoloc embed --patches`), else they are computed for those k photos alone,
through the embedding cache (a neighbour met again costs a lookup).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from geoloc_core.base import storage
from geoloc_core.config import ExplainConfig
from geoloc_core.features.descriptors import unit_vectors
from geoloc_core.features.embed import EmbeddingCache, embed_images
from geoloc_core.locate.predict import Neighbour, Prediction
from geoloc_core.locate.predictor import Predictor
from geoloc_core.runs.folders import Run


@dataclass
class Correspondences:
    """Mutual nearest patches of two photos' g x g patch grids (row-major patch indices)."""

    query_patch: np.ndarray  # (M,) int, the most distinctive pair first
    match_patch: np.ndarray  # (M,) int
    similarity: np.ndarray  # (M,) cosine of each pair
    margin: np.ndarray  # (M,) how far that cosine is ahead of either patch's runner-up (the order kept)
    query_heat: np.ndarray  # (P,) each query patch's best cosine against the other photo's patches
    match_heat: np.ndarray  # (Q,) each of the other photo's patches' best cosine against the query's
    n_mutual: int  # mutual pairs found before keeping the `max_matches` most distinctive


@dataclass
class MatchExplanation:
    """One neighbour of a prediction and the patches the two photos share."""

    rank: int  # 0: the best neighbour
    neighbour: Neighbour
    matches: Correspondences
    tokens_from: str  # "run" (its stored patch tokens) or "computed" (a forward pass for this neighbour)


def grid_side(n_patches: int) -> int:
    """Side of the square patch grid of `n_patches` tokens; a ValueError if they do not form one."""
    side = int(round(n_patches ** 0.5))
    if side * side != n_patches:
        raise ValueError(f"{n_patches} patch tokens are not a square grid")
    return side


def mutual_matches(query_tokens: np.ndarray, match_tokens: np.ndarray,
                   max_matches: int = ExplainConfig.max_matches) -> Correspondences:
    """(P, D) and (Q, D) patch tokens -> their mutual nearest neighbours by cosine,
    the `max_matches` most distinctive."""
    sim = unit_vectors(query_tokens) @ unit_vectors(match_tokens).T  # (P, Q)
    forward, backward = sim.argmax(axis=1), sim.argmax(axis=0)
    query = np.flatnonzero(backward[forward] == np.arange(len(sim)))
    match = forward[query]
    best = sim[query, match]
    runner_up = np.maximum(_second(sim, axis=1)[query],
                           _second(sim, axis=0)[match]) if min(sim.shape) > 1 else np.full(len(best), -1.0)
    margin = best - runner_up
    order = np.argsort(-margin, kind="stable")[:max_matches]
    return Correspondences(query[order], match[order], best[order], margin[order], sim.max(axis=1), sim.max(axis=0),
                           len(query))


def _second(sim: np.ndarray, axis: int) -> np.ndarray:
    """The second-highest value along `axis`."""
    n = sim.shape[axis]
    return np.take(np.partition(sim, n - 2, axis=axis), n - 2, axis=axis)


def patch_centres(n_patches: int, width: int, height: int) -> np.ndarray:
    """(P, 2) centre of each patch as (x, y) fractions of the whole upright photo.

    The encoder sees the photo's centred square crop (its shorter side resized, then cropped: open_clip's
    eval transform), so the grid covers that square, not the whole photo.
    """
    g = grid_side(n_patches)
    side = min(width, height)
    crop_w, crop_h = side / width, side / height
    step = (np.arange(g) + 0.5) / g
    x = (1 - crop_w) / 2 + step * crop_w
    y = (1 - crop_h) / 2 + step * crop_h
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def upright_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of a photo as shown upright (EXIF orientation applied), read from its
    header; None if unreadable."""
    try:
        with Image.open(path) as image:
            w, h = image.size
            return (h, w) if image.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (w, h)
    except (OSError, ValueError, SyntaxError):
        return None


def neighbour_tokens(predictor: Predictor, run_dir: Path, neighbours: list[Neighbour], n_patches: int
                     ) -> tuple[list[np.ndarray | None], str]:
    """Each neighbour's (P, D) patch tokens (None where its photo cannot be read) and where they came from.

    The run's stored tokens serve when they were made by the predictor's encoder at the query's grid; otherwise
    these photos alone are embedded, through the embedding cache."""
    run = Run(run_dir)
    stored = _stored_patches(run, predictor, n_patches)
    if stored is not None and all(0 <= n.photo < len(stored) for n in neighbours):
        return [np.asarray(stored[n.photo]) for n in neighbours], "run"
    cache = EmbeddingCache.for_encoder(predictor.encoder)
    try:
        out = embed_images([Path(n.path) for n in neighbours], predictor.encoder, patches=True, cache=cache,
                           progress=False)
    finally:
        cache.close()
    return [None if i in out.failed else out.patches[i] for i in range(len(neighbours))], "computed"


def _stored_patches(run: Run, predictor: Predictor, n_patches: int) -> np.ndarray | None:
    """The run's memory-mapped patch tokens if they match the predictor's encoder and grid, else None."""
    if not run.patches.exists() or not run.embed_meta.exists():
        return None
    if storage.read_json(run.embed_meta).get("encoder") != predictor.encoder.key:
        return None
    patches = storage.read_npy(run.patches, mmap=True)
    rows = len(storage.read_npy(run.embeddings, mmap=True))  # tokens written with these embeddings, for these photos
    return patches if patches.shape[0] == rows and patches.shape[1] == n_patches else None


def explain_prediction(pred: Prediction, predictor: Predictor, run_dir: Path,
                       max_matches: int = ExplainConfig.max_matches) -> list[MatchExplanation]:
    """The patch correspondences between a predicted photo and each of its neighbours (`predict(keep_tokens=True)`)."""
    if pred.tokens is None:
        raise ValueError(f"{pred.path}: no patch tokens kept; predict it with keep_tokens=True")
    tokens, source = neighbour_tokens(predictor, run_dir, pred.neighbours, len(pred.tokens))
    return [MatchExplanation(rank, n, mutual_matches(pred.tokens, t, max_matches), source)
            for rank, (n, t) in enumerate(zip(pred.neighbours, tokens)) if t is not None]


def matches_frame(query_path: str, query_size: tuple[int, int] | None,
                  explanations: list[MatchExplanation]) -> pd.DataFrame:
    """One row per correspondence: the patches, their cosine and margin, and their centres as (x, y) fractions of each
    upright photo (NaN where a photo's size cannot be read)."""
    frames = []
    for e in explanations:
        m, size = e.matches, upright_size(e.neighbour.path)
        q_xy = _centres(len(m.query_heat), query_size)[m.query_patch]
        n_xy = _centres(len(m.match_heat), size)[m.match_patch]
        frames.append(pd.DataFrame({"photo": query_path, "rank": e.rank, "neighbour": e.neighbour.path,
                                    "query_patch": m.query_patch,
                                    "match_patch": m.match_patch, "cosine": m.similarity, "margin": m.margin,
                                    "query_x": q_xy[:, 0],
                                    "query_y": q_xy[:, 1], "match_x": n_xy[:, 0], "match_y": n_xy[:, 1],
                                    "tokens_from": e.tokens_from}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _centres(n_patches: int, size: tuple[int, int] | None) -> np.ndarray:
    return patch_centres(n_patches, *size) if size else np.full((n_patches, 2), np.nan)
