"""Core stage costs, each beside a reference measured in the same run.

    .venv/bin/python benchmarks/bench_core.py [--photos 64] [--max-points 100000]

- embedding: `embed_images` end to end (read, decode, resize, forward) vs the bare forward pass on
  the same photos already decoded and batched;
- graphs: DT + GG + RNG together vs the bare `scipy.spatial.Delaunay` call, from 10^3 points up;
- Louvain (networkx) on a feature-weighted Delaunay graph;
- fine-tuning: training images/s of the last k blocks on cached prefix tokens vs a full forward.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import Delaunay

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geoloc_core.config import DEFAULT_DATA  # noqa: E402
from geoloc_core.embed import embed_images, load_encoder  # noqa: E402
from geoloc_core.finetune import RegionClassifier  # noqa: E402
from geoloc_core.graphs import proximity_graphs  # noqa: E402
from geoloc_core.images import decode_image  # noqa: E402
from geoloc_core.regions import edge_weights, louvain_regions  # noqa: E402
from geoloc_core.towers import Suffix, prefix_tokens  # noqa: E402


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_embedding(n: int, batch_size: int) -> None:
    paths = sorted((DEFAULT_DATA / "images").glob("*.jpg"))[:n]
    enc = load_encoder(device="auto")
    pixels = torch.stack([enc.preprocess(decode_image(p.read_bytes(), enc.image_size)) for p in paths])
    enc.forward(pixels[:batch_size])  # warm-up
    bare = timed(lambda: [enc.forward(pixels[s:s + batch_size]) for s in range(0, n, batch_size)])
    full = timed(lambda: embed_images(paths, enc, batch_size=batch_size, progress=False))
    print(f"embedding  {n} photos, batch {batch_size}, {enc.device}: bare forward {n / bare:6.1f} img/s, "
          f"embed_images {n / full:6.1f} img/s, ratio {bare / full:.2f} (target >= 0.90)")


def bench_graphs(max_points: int) -> None:
    print("graphs     n          Delaunay s   DT+GG+RNG s   ratio")
    n = 1000
    while n <= max_points:
        xy = np.random.default_rng(0).random((n, 2)) * 1e5
        bare = timed(lambda: Delaunay(xy), repeat=2 if n < 100_000 else 1)
        ours = timed(lambda: proximity_graphs(xy), repeat=2 if n < 100_000 else 1)
        print(f"           {n:<10d} {bare:10.3f}   {ours:11.3f}   {ours / bare:5.2f}")
        n *= 10


def bench_louvain(n: int) -> None:
    rng = np.random.default_rng(0)
    xy = rng.random((n, 2))
    edges = proximity_graphs(xy)["dt"]
    emb = rng.normal(size=(n, 32)) + np.where(xy[:, :1] > 0.5, 3.0, -3.0)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    w = edge_weights(emb, edges)
    start = time.perf_counter()
    part = louvain_regions(n, edges, w, seed=0)
    print(f"louvain    {n} nodes, {len(edges)} edges: {time.perf_counter() - start:.2f} s, {part.n_regions} regions, "
          f"modularity {part.modularity:.3f}")


def bench_finetune(unfrozen: int, batch_size: int) -> None:
    enc = load_encoder(device="auto")
    x = torch.randn(batch_size, 3, enc.image_size, enc.image_size, device=enc.device)
    with torch.no_grad():
        tokens = prefix_tokens(enc.model, x, unfrozen)
    model = RegionClassifier(Suffix(enc.model, unfrozen), [20], enc.model.proj.shape[1], seed=0).to(enc.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    target = torch.randint(0, 20, (batch_size,), device=enc.device)

    def step():
        loss = torch.nn.functional.cross_entropy(model(tokens)[0], target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t_step = timed(lambda: [step() for _ in range(3)]) / 3
    t_fwd = timed(lambda: enc.forward(x))
    print(f"finetune   last {unfrozen} blocks, batch {batch_size}, {enc.device}: train step {batch_size / t_step:6.1f} img/s "
          f"vs full forward {batch_size / t_fwd:6.1f} img/s (ratio {t_fwd / t_step:.2f})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-points", type=int, default=100_000)
    p.add_argument("--louvain-nodes", type=int, default=10_000)
    a = p.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}")
    bench_embedding(a.photos, a.batch_size)
    bench_graphs(a.max_points)
    bench_louvain(a.louvain_nodes)
    bench_finetune(2, 32)


if __name__ == "__main__":
    main()
