"""Photos -> L2-normalised float32 embeddings (+ patch tokens, + a head's outputs), batched and cached.

Decoding runs in threads one batch ahead of the model. A photo can be seen in several augmentations (`AUGMENTATIONS`:
itself, its mirror image, its four corner crops) that go through the encoder in the same batch; its embedding is then
the normalised mean of theirs (test-time augmentation). Embeddings are cached in one SQLite file per
encoder key, keyed by the photo's content hash: a photo that changes is embedded again, an unchanged
one never is, and two processes can share the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from geoloc_core.base.images import ImageDecodeError, decode_image
from geoloc_core.config import PROJECT_DIR
from geoloc_core.features.encoders import Encoder, Head

log = logging.getLogger(__name__)

# a corner crop's share of each side, seen 1 / 0.75 closer; the encoder's preprocessing then centre-crops it to a square
# as it does the photo, so on a square photo the four overlap and cover it, on a wide one they miss its far corners
CROP_SHARE = 0.75
# (x, y): 0 left / top
CORNERS = {"top_left": (0, 0), "top_right": (1, 0), "bottom_left": (0, 1), "bottom_right": (1, 1)}


def corner_crop(fx: int, fy: int) -> Callable[[Image.Image], Image.Image]:
    """The augmentation that crops the photo to its CROP_SHARE x CROP_SHARE corner (fx, fy) (`CORNERS`)."""
    def crop(image: Image.Image) -> Image.Image:
        w, h = round(image.width * CROP_SHARE), round(image.height * CROP_SHARE)
        x, y = fx * (image.width - w), fy * (image.height - h)
        return image.crop((x, y, x + w, y + h))
    return crop


AUGMENTATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {  # what the encoder may see of a photo
    "photo": lambda image: image, "mirror": ImageOps.mirror,
    **{f"crop_{name}": corner_crop(*c) for name, c in CORNERS.items()}}
TTA_AUGMENTATIONS = {"none": ("photo",), "flip": ("photo", "mirror"),  # config.TTAS -> those a photo is embedded in
                     "crops": ("photo", *(f"crop_{name}" for name in CORNERS))}


def cache_dir() -> Path:
    """Where embedding caches live: $GEOLOC_CACHE_DIR, else `.cache/` beside the package."""
    return Path(os.environ.get("GEOLOC_CACHE_DIR", PROJECT_DIR / ".cache"))


@dataclass
class Embeddings:
    """`emb` (N, D) float32 unit rows; `patches` (N, P, Dp) float16 or None; `failed` index -> reason;
    `head_out` (N, C) float32, a head's outputs, or None."""

    emb: np.ndarray
    patches: np.ndarray | None
    failed: dict[int, str]
    head_out: np.ndarray | None = None

    @property
    def ok(self) -> np.ndarray:
        """(N,) bool: the photos that were embedded (not in `failed`)."""
        mask = np.ones(len(self.emb), dtype=bool)
        mask[list(self.failed)] = False
        return mask


class EmbeddingCache:
    """content sha1 -> (embedding, patch tokens) for one encoder key, in SQLite (atomic, multi-process)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=120)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (sha1 TEXT PRIMARY KEY, dim INTEGER, vec BLOB, "
                         "patch_shape TEXT, patches BLOB)")

    @classmethod
    def for_encoder(cls, encoder: Encoder, root: Path | None = None) -> EmbeddingCache:
        """The cache of `encoder`'s weights (`encoder.key`), under `root` (default: `cache_dir()`)."""
        return cls((root or cache_dir()) / "embeddings" / f"{encoder.key}.sqlite")

    def get(self, sha1s: Sequence[str], patches: bool) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """The cached (embedding, patch tokens or None) of each sha1 found; with `patches`, only entries with tokens."""
        found = {}
        for start in range(0, len(sha1s), 500):
            chunk = list(sha1s[start:start + 500])
            rows = self._db.execute("SELECT sha1, vec, patch_shape, patches FROM emb WHERE sha1 IN "
                                    f"({','.join('?' * len(chunk))})", chunk)
            for sha1, vec, shape, blob in rows:
                if patches and blob is None:
                    continue
                pt = np.frombuffer(blob, np.float16).reshape([int(s) for s in shape.split(",")]) if patches else None
                found[sha1] = (np.frombuffer(vec, np.float32), pt)
        return found

    def put(self, sha1s: Sequence[str], emb: np.ndarray, patches: np.ndarray | None) -> None:
        """Store a batch: (N, D) embeddings and optional (N, P, Dp) patch tokens, keyed by the photos' sha1s."""
        rows = [(s, emb.shape[1], emb[i].astype(np.float32).tobytes(),
                 None if patches is None else ",".join(map(str, patches.shape[1:])),
                 None if patches is None else patches[i].astype(np.float16).tobytes()) for i, s in enumerate(sha1s)]
        with self._db:  # one transaction per batch: all rows or none
            self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        """Close the SQLite connection."""
        self._db.close()


def embed_images(paths: Sequence[Path], encoder: Encoder, sha1s: Sequence[str] | None = None, batch_size: int = 32,
                 patches: bool = False, cache: EmbeddingCache | None = None, workers: int = 4,
                 progress: bool = True, head: Head | None = None, head_only: bool = False,
                 augmentations: tuple[str, ...] = ("photo",)) -> Embeddings:
    """Embed photos in batches; decoding runs in threads one batch ahead of the model.

    Args:
        paths: image files.
        encoder: from load_encoder.
        sha1s: content hashes (PhotoTable.frame["sha1"]); computed from the bytes when None.
        batch_size: images per forward pass.
        patches: also return the patch tokens (float16), for GeM / VLAD aggregation.
        cache: looked up first and filled with what was computed.
        workers: decoding threads.
        head: also run on every photo in the same forward pass (`Encoder.forward_with`); needs no cache.
        head_only: the head's output is all that is wanted: the tower's own last blocks are skipped, and `emb`
            (and `patches`) come back with no columns.
        augmentations: names in `AUGMENTATIONS`, all of one photo in the same batch: its embedding is the normalised
            mean of the augmentations' unit embeddings, a head's output their mean, its patch tokens the first one's.
            The cache holds one augmentation ("photo") only.

    Returns:
        Embeddings; a file that fails to decode gets a zero row and its reason in `failed`.
    """
    if head is not None and cache is not None:
        raise ValueError("a head runs in the forward pass, which a cached photo skips: pass no cache with a head")
    if head_only and (head is None or patches):
        raise ValueError("head_only needs a head, and skips the blocks that give patch tokens")
    if cache is not None and tuple(augmentations) != ("photo",):
        raise ValueError(f"the cache holds the photo itself, not the augmentations {augmentations}: pass no cache with "
                         "other augmentations")
    n = len(paths)
    hits: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    if cache is not None:  # without one, nothing needs the (whole-file) hashes
        sha1s = list(sha1s) if sha1s is not None else [hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in paths]
        found = cache.get(sha1s, patches)
        hits = {i: found[s] for i, s in enumerate(sha1s) if s in found}
    todo = [i for i in range(n) if i not in hits]
    log.info("embedding %d photos with %s (%d cached)", n, encoder.key, len(hits))

    vecs: dict[int, np.ndarray] = {i: hit[0] for i, hit in hits.items()}
    toks: dict[int, np.ndarray] = {i: hit[1] for i, hit in hits.items()} if patches else {}
    outs: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}
    bar = tqdm(total=len(todo), desc="embed", unit="img", disable=not progress or not todo)
    n_augmentations = len(augmentations)
    for idx, pixels, errors in decoded_batches([paths[i] for i in todo], todo, encoder, batch_size, workers,
                                               augmentations):
        failed |= errors
        if len(idx):
            if head is None:
                pooled, tokens = encoder.forward(pixels)
            else:
                pooled, tokens, out = encoder.forward_with(pixels, head, finish=not head_only)
                outs |= dict(zip(idx, out.cpu().numpy().reshape(len(idx), n_augmentations, -1).mean(axis=1)))
        if len(idx) and not head_only:
            emb = mean_of_augmentations(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy(), n_augmentations)
            pt = tokens.half().cpu().numpy()[::n_augmentations] if patches else None
            for j, i in enumerate(idx):
                vecs[i] = emb[j]
                if patches:
                    toks[i] = pt[j]
            if cache is not None:
                cache.put([sha1s[i] for i in idx], emb, pt)
        bar.update(len(idx) + len(errors))
    bar.close()

    for i, reason in failed.items():
        log.warning("could not embed %s: %s", paths[i], reason)
    emb = _rows(vecs, n, np.float32)
    return Embeddings(emb=np.zeros((n, 0), np.float32) if emb is None else emb, patches=_rows(toks, n, np.float16),
                      failed=failed, head_out=_rows(outs, n, np.float32))


def _rows(rows: dict[int, np.ndarray], n: int, dtype) -> np.ndarray | None:
    """{index: row} -> (n, *row shape), zeros at the missing indices (failed photos); None without rows."""
    if not rows:
        return None
    out = np.zeros((n, *next(iter(rows.values())).shape), dtype)
    for i, row in rows.items():
        out[i] = row
    return out


def mean_of_augmentations(emb: np.ndarray, n_augmentations: int) -> np.ndarray:
    """(B * A, D) unit embeddings, each photo's A augmentations in a row -> (B, D) the unit mean of each photo's."""
    if n_augmentations == 1:
        return emb
    mean = emb.reshape(-1, n_augmentations, emb.shape[1]).mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def _load_pixels(path: Path, encoder: Encoder, augmentations: tuple[str, ...] = ("photo",)) -> torch.Tensor | str:
    """(A, 3, S, S) the photo's augmentations. A crop is decoded larger, so that it keeps the detail of the encoder's
    input side; every other augmentation is decoded as a run's embedding pass decodes the photo, so an augmentation
    means the same pixels in a query and in the database's pass of it."""
    try:
        data = Path(path).read_bytes()
        sides = {_decode_side(a, encoder) for a in augmentations}
        decoded = {side: decode_image(data, min_side=side) for side in sides}
    except (ImageDecodeError, OSError) as exc:
        return str(exc)
    return torch.stack([encoder.preprocess(AUGMENTATIONS[a](decoded[_decode_side(a, encoder)])) for a in augmentations])


def _decode_side(augmentation: str, encoder: Encoder) -> int:
    """The shorter side a JPEG is decoded to at the least for `augmentation` (`images.decode_image`'s min_side)."""
    return round(encoder.image_size / CROP_SHARE) if augmentation.startswith("crop_") else encoder.image_size


def decoded_batches(paths: Sequence[Path], ids: Sequence[int], encoder: Encoder, batch_size: int, workers: int,
                    augmentations: tuple[str, ...] = ("photo",),
                    ) -> Iterator[tuple[list[int], torch.Tensor, dict[int, str]]]:
    """Yield (ids, pixels (B * A, 3, S, S), {id: error}), each photo's A augmentations in a row; the next batch
    decodes while this one runs.

    A single photo (the app's and the CLI's common case) decodes inline: a pool would only add its start-up.
    """
    if len(paths) == 1:
        r = _load_pixels(paths[0], encoder, augmentations)
        yield ([ids[0]], r, {}) if isinstance(r, torch.Tensor) else ([], torch.empty(0), {ids[0]: r})
        return
    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def submit(s: int) -> list[Future]:
            return [pool.submit(_load_pixels, p, encoder, augmentations) for p in paths[s:s + batch_size]]

        pending = submit(0) if len(paths) else []
        for k, s in enumerate(starts):
            current, pending = pending, (submit(starts[k + 1]) if k + 1 < len(starts) else [])
            results = [f.result() for f in current]
            good = [(ids[s + j], r) for j, r in enumerate(results) if isinstance(r, torch.Tensor)]
            errors = {ids[s + j]: r for j, r in enumerate(results) if isinstance(r, str)}
            pixels = torch.cat([r for _, r in good]) if good else torch.empty(0)
            yield [i for i, _ in good], pixels, errors
