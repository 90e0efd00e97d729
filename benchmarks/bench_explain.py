"""What explaining a match and finding places like a photo cost, beside the prediction's own latency measured in the
same run.

    .venv/bin/python benchmarks/bench_explain.py [--run runs/croatia] [--photos 10]

It needs a built run; with patch tokens stored (`geoloc embed --patches`) the neighbours' tokens are read
from it, and the case of a run without them (one forward pass per neighbour) is measured too. Queries are
the run's held-out photos against the predictor without them (the Predict page's).

- explain: per photo, `predict` without and with `keep_tokens` (the reference, and what keeping the tokens
  adds), then per neighbour pair: the whole explanation (tokens read + mutual nearest patches), the
  matching alone, the picture the page draws, and a neighbour's tokens computed (cold) or looked up in the
  embedding cache (warm) for a run that kept none;
- find places like this: per query, a photo of the run, a region, and a new photo (one forward pass in
  the chosen space), every site scored and the closest 10 named.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_core import machine  # noqa: E402
from geoloc_core.base import storage
from geoloc_core.base.images import upright
from geoloc_core.config import PredictConfig  # noqa: E402
from geoloc_core.features.embed import EmbeddingCache, embed_images  # noqa: E402
from geoloc_core.locate.explain import explain_prediction, mutual_matches  # noqa: E402
from geoloc_core.locate.predict import predict  # noqa: E402
from geoloc_core.locate.similar import (  # noqa: E402
    find_similar,
    photo_query,
    region_query,
    run_encoder,
    site_scores,
    space_embeddings,
    spaces,
    upload_query,
)
from geoloc_core.locate.store import open_predictor  # noqa: E402
from geoloc_core.runs.folders import Run  # noqa: E402
from geoloc_core.share.pictures import match_figure


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - start) * 1e3


def bench_explain(run: Run, paths: list[Path]) -> float:
    predictor = open_predictor(run.root, PredictConfig(device="cpu", region_from="nearest"), database="train")
    predict(paths[:1], predictor, keep_tokens=True)  # warm-up: threads, allocator, first-call costs
    stored = run.read_embeddings()[1]
    plain, kept, whole, matching, drawing, pairs = [], [], [], [], [], 0
    source = "-"
    for p in paths:  # interleaved photo by photo, so machine noise hits the variants alike
        plain.append(timed(predict, [p], predictor)[1])
        (preds, _), t = timed(predict, [p], predictor, keep_tokens=True)
        kept.append(t)
        explanations, t = timed(explain_prediction, preds[0], predictor, run.root)
        whole.append(t / len(explanations))
        source = explanations[0].tokens_from
        query = upright(str(p), 800)
        for e in explanations:
            tokens = preds[0].tokens if stored is None else np.asarray(stored[e.neighbour.photo])
            matching.append(timed(mutual_matches, preds[0].tokens, tokens)[1])
            thumb = upright(e.neighbour.path, 320)
            drawing.append(timed(match_figure, query, thumb, e.matches, side=320, vertical=True)[1])
        pairs += len(explanations)
    ref = np.median(plain)
    print(f"explain    {len(paths)} photos, {pairs} neighbour pairs, {predictor.encoder.key}, k = {predictor.k}, "
          f"{len(preds[0].tokens)} patches per photo")
    print(f"  reference: predict one photo, p50 {ref:.1f} ms; with its patch tokens kept: p50 {np.median(kept):.1f} ms "
          f"({np.median(kept) / ref:.2f}x: the same one forward pass)")
    print(f"  per neighbour pair, neighbours' tokens {source}: explanation p50 {np.median(whole):.2f} ms "
          f"({np.median(whole) / ref:.1%} of a prediction), of which mutual nearest patches {np.median(matching):.2f} "
          f"ms; the page's picture {np.median(drawing):.2f} ms")
    k_paths = [Path(n.path) for n in preds[0].neighbours]
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(Path(tmp) / "cache.sqlite")
        _, cold = timed(embed_images, k_paths, predictor.encoder, patches=True, cache=cache, progress=False)
        _, warm = timed(embed_images, k_paths, predictor.encoder, patches=True, cache=cache, progress=False)
        cache.close()
    print(f"  a run without stored patch tokens: a neighbour's tokens computed {cold / len(k_paths):.1f} ms "
          f"({cold / len(k_paths) / ref:.2f}x a prediction), from the embedding cache the next time "
          f"{warm / len(k_paths):.2f} ms")
    return ref


def bench_similar(run: Run, paths: list[Path], ref: float) -> None:
    labels = run.regions(run.graphs()[0]).labels()["region"].to_numpy()
    site_of_photo = storage.read_npy(run.site_of_photo)
    encoder = run_encoder(run, "cpu")
    for space in spaces(run):
        emb = space_embeddings(run, space)
        find_similar(run.root, photo_query(emb, 0, "warm-up"), space, emb=emb)  # the geocoder's tree, first reads
        rows = np.linspace(0, len(emb) - 1, len(paths)).astype(int)
        scoring = [timed(site_scores, emb, site_of_photo, emb[i])[1] for i in rows]
        by_photo = [timed(find_similar, run.root, photo_query(emb, i, str(i)), space, emb=emb)[1] for i in rows]
        regions = np.unique(labels)[: len(paths)]
        by_region = [timed(find_similar, run.root, region_query(emb, labels, r, str(r)), space, emb=emb)[1]
                     for r in regions]
        uploads = []
        for p in paths:
            query, t_embed = timed(upload_query, p, encoder, space)
            uploads.append(t_embed + timed(find_similar, run.root, query, space, emb=emb)[1])
        print(f"similar    {space.label}: {len(emb)} photos, {len(run.read_sites())} sites")
        print(f"  per query, p50: a photo of the run {np.median(by_photo):.1f} ms ({np.median(by_photo) / ref:.2f}x a "
              f"prediction; scoring every site {np.median(scoring):.2f} ms of it), a region {np.median(by_region):.1f} "
              f"ms, a new photo {np.median(uploads):.1f} ms ({np.median(uploads) / ref:.2f}x, its forward pass "
              "included)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    ap.add_argument("--photos", type=int, default=10, help="held-out photos timed one at a time")
    a = ap.parse_args(argv)
    print(f"machine: {machine()}")
    run = Run(a.run)
    _, is_test = run.read_split()
    held = [p for p, t in zip(run.photo_table().abs_paths(), is_test) if t]
    paths = held[:: max(1, len(held) // a.photos)][: a.photos]
    ref = bench_explain(run, paths)
    bench_similar(run, paths, ref)


if __name__ == "__main__":
    main()
