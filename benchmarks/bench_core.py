"""Core stage costs, each beside a reference measured in the same run.

    .venv/bin/python benchmarks/bench_core.py [--photos 64] [--max-points 1000000] [--louvain-nodes 100000]

- embedding: `embed_images` end to end (read, decode, resize, forward) vs the bare forward pass on
  the same photos already decoded and batched;
- graphs: DT + GG + RNG together vs the bare `scipy.spatial.Delaunay` call, 10^3 points up, with
  the growth exponent between sizes (n log n reads as a little above 1);
- Louvain: networkx (the reference) and igraph (the backend past 20,000 nodes) on a feature-weighted
  Delaunay graph, time and modularity;
- memory: peak resident memory of graphs + site embeddings (memory-mapped) + Louvain + region table
  for n sites, in a fresh process;
- fine-tuning: training images/s of the last k blocks on cached prefix tokens (the last block for the class
  token only) vs the same step over every token of the last block, and vs a full forward.

Every function returns result rows (figure, measured, target, met) for `run_all.py`'s table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import Delaunay

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geoloc_core.base.images import decode_image  # noqa: E402
from geoloc_core.config import DEFAULT_DATA  # noqa: E402
from geoloc_core.features.embed import embed_images  # noqa: E402
from geoloc_core.features.encoders import load_encoder  # noqa: E402
from geoloc_core.features.towers import Suffix, prefix_tokens  # noqa: E402
from geoloc_core.learn.finetune import RegionClassifier  # noqa: E402
from geoloc_core.regions.graphs import proximity_graphs  # noqa: E402
from geoloc_core.regions.partition import edge_weights, louvain_regions, region_table, site_embeddings  # noqa: E402

Row = dict


def row(figure: str, measured: str, target: str = "", met: bool | None = None) -> Row:
    return {"figure": figure, "measured": measured, "target": target, "met": met}


def machine() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_embedding(n: int, batch_size: int, device: str = "auto") -> list[Row]:
    paths = sorted((DEFAULT_DATA / "images").glob("*.jpg"))[:n]
    enc = load_encoder(device=device)
    pixels = torch.stack([enc.preprocess(decode_image(p.read_bytes(), enc.image_size)) for p in paths])
    enc.forward(pixels[:batch_size])  # warm-up
    sync = torch.cuda.synchronize if enc.device.type == "cuda" else (lambda: None)
    bare = timed(lambda: ([enc.forward(pixels[s:s + batch_size]) for s in range(0, n, batch_size)], sync()), repeat=2)
    full = timed(lambda: (embed_images(paths, enc, batch_size=batch_size, progress=False), sync()), repeat=2)
    print(f"embedding  {n} photos, batch {batch_size}, {enc.device}: bare forward {n / bare:6.1f} img/s, "
          f"embed_images {n / full:6.1f} img/s, ratio {bare / full:.2f} (target >= 0.90)")
    return [row(f"embed_images vs bare forward ({enc.device}, batch {batch_size})",
                f"{n / full:.1f} vs {n / bare:.1f} img/s = {bare / full:.2f}", ">= 0.90", bare / full >= 0.9)]


def bench_graphs(max_points: int) -> list[Row]:
    print("graphs     n          Delaunay s   DT+GG+RNG s   ratio   growth exponent (DT+GG+RNG)")
    n, previous, rows = 1000, None, []
    while n <= max_points:
        xy = np.random.default_rng(0).random((n, 2)) * 1e5
        repeat = 3 if n < 100_000 else 1
        bare = timed(lambda xy=xy: Delaunay(xy), repeat)
        ours = timed(lambda xy=xy: proximity_graphs(xy), repeat)
        growth = "" if previous is None else f"{np.log(ours / previous[1]) / np.log(n / previous[0]):.2f}"
        print(f"           {n:<10d} {bare:10.3f}   {ours:11.3f}   {ours / bare:5.2f}   {growth}")
        rows.append(row(f"DT+GG+RNG / bare Delaunay, {n:,} points", f"{ours:.3f} s / {bare:.3f} s = {ours / bare:.2f}",
                        "<= 1.5", ours / bare <= 1.5))
        previous = (n, ours)
        n *= 10
    return rows


def _feature_graph(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2))
    edges = proximity_graphs(xy)["dt"]
    emb = np.column_stack([np.sin(6 * xy[:, 0]), np.cos(6 * xy[:, 1]), rng.normal(scale=0.5, size=(n, 30))])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return edges, edge_weights(emb.astype(np.float32), edges)


def bench_louvain(sizes: tuple[int, ...], networkx_max: int) -> list[Row]:
    rows = []
    for n in sizes:
        edges, w = _feature_graph(n)
        start = time.perf_counter()
        fast = louvain_regions(n, edges, w, backend="igraph")
        t_fast = time.perf_counter() - start
        line = (f"louvain    {n:,} nodes, {len(edges):,} edges: igraph {t_fast:.2f} s, {fast.n_regions} regions, Q "
                f"{fast.modularity:.4f}")
        target = 5.0 if n <= 100_000 else 120.0
        rows.append(row(f"Louvain (igraph), {n:,} nodes", f"{t_fast:.2f} s", f"<= {target:g} s", t_fast <= target))
        if n <= networkx_max:
            start = time.perf_counter()
            ref = louvain_regions(n, edges, w, backend="networkx")
            t_ref = time.perf_counter() - start
            gap = (ref.modularity - fast.modularity) / ref.modularity
            line += f"; networkx {t_ref:.2f} s, Q {ref.modularity:.4f}: igraph's Q is {gap:+.2%} below"
            rows.append(row(f"Louvain modularity, igraph vs networkx, {n:,} nodes",
                            f"{fast.modularity:.4f} vs {ref.modularity:.4f} "
                            f"({t_fast:.1f} s vs {t_ref:.1f} s)", "within 1 %", gap <= 0.01))
        print(line)
    return rows


def regions_at_scale(n: int, dim: int, out: Path) -> None:
    """Graphs, memory-mapped site embeddings, Louvain and the region table for n random sites (the memory case)."""
    rng = np.random.default_rng(0)
    xy = rng.random((n, 2)) * 1e6
    emb = np.lib.format.open_memmap(out, mode="w+", dtype=np.float16, shape=(n, dim))
    for s in range(0, n, 100_000):
        chunk = rng.normal(size=(min(100_000, n - s), dim)).astype(np.float32) + np.sin(xy[s:s + 100_000, :1] / 1e5)
        emb[s:s + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    emb.flush()
    emb = np.load(out, mmap_mode="r")
    graphs = proximity_graphs(xy)
    sites = site_embeddings(emb, np.arange(n), n)
    for kind in ("dt", "gg", "rng"):
        part = louvain_regions(n, graphs[kind], edge_weights(sites, graphs[kind]))
        region_table(part.labels, xy[:, 1] / 1e6, xy[:, 0] / 1e6)


def bench_memory(n: int, dim: int = 384) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_core; "
                f"bench_core.regions_at_scale({n}, {dim}, __import__('pathlib').Path({tmp!r}) / 'emb.npy')")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        took = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    print(f"memory     {n:,} sites x {dim}-d embeddings (float16, memory-mapped): DT+GG+RNG, Louvain on each, region "
          f"tables: peak RSS {peak_gb:.2f} GB in {took:.0f} s (target <= 8 GB)")
    return [row(f"peak memory, graphs + regions, {n:,} sites", f"{peak_gb:.2f} GB ({took:.0f} s)", "<= 8 GB",
                peak_gb <= 8)]


def bench_finetune(unfrozen: int, batch_size: int, device: str = "auto", repeat: int = 3) -> list[Row]:
    """A training step of the last k blocks (class-token last block, as `Suffix` runs it) vs the same step
    computing every token of the last block (the reference: what the suffix did before), and a full forward."""
    from geoloc_core.features.encoders import autocast

    enc = load_encoder(device=device)
    x = torch.randn(batch_size, 3, enc.image_size, enc.image_size, device=enc.device)
    with torch.no_grad():
        tokens = prefix_tokens(enc.model, x, unfrozen)
    model = RegionClassifier(Suffix(enc.model, unfrozen), [20], enc.model.proj.shape[1], seed=0).to(enc.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    target = torch.randint(0, 20, (batch_size,), device=enc.device)
    sync = torch.cuda.synchronize if enc.device.type == "cuda" else (lambda: None)

    def every_token(t: torch.Tensor) -> torch.Tensor:
        s = model.suffix
        for block in s.blocks:
            t = block(t)
        return model.heads[0](s.ln_post(t)[:, 0] @ s.proj)

    def step(logits_of) -> None:
        with autocast(enc.device):
            loss = torch.nn.functional.cross_entropy(logits_of(tokens).float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()

    def timed_steps(logits_of) -> float:
        step(logits_of)
        return timed(lambda: step(logits_of), repeat)

    t_step, t_ref = timed_steps(lambda t: model(t)[0]), timed_steps(every_token)
    t_fwd = timed(lambda: (enc.forward(x), sync()), repeat)
    print(f"finetune   last {unfrozen} blocks, batch {batch_size}, {enc.device}: train step {batch_size / t_step:6.1f} "
          f"img/s (every token of the last block: {batch_size / t_ref:6.1f} img/s, {t_ref / t_step:.2f}x slower) vs "
          f"full forward {batch_size / t_fwd:6.1f} img/s (step / forward speed {t_fwd / t_step:.2f})")
    return [row(f"fine-tuning step, last {unfrozen} blocks ({enc.device}, batch {batch_size})",
                f"{batch_size / t_step:.1f} img/s (every token of the last block {batch_size / t_ref:.1f}; full "
                f"forward {batch_size / t_fwd:.1f})")]


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-points", type=int, default=1_000_000)
    p.add_argument("--louvain-nodes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--networkx-max", type=int, default=100_000, help="largest graph networkx is run on, for the "
                                                                     "reference")
    p.add_argument("--memory-sites", type=int, default=1_000_000, help="0: skip")
    p.add_argument("--device", default="auto")
    p.add_argument("--only-finetune", action="store_true", help="just the fine-tuning step figures")
    a = p.parse_args(argv)
    if a.only_finetune:
        return bench_finetune(2, 32, a.device)
    print(f"machine: {machine()}, {torch.get_num_threads()} torch threads")
    rows = bench_embedding(a.photos, a.batch_size, a.device)
    rows += bench_graphs(a.max_points)
    rows += bench_louvain(tuple(a.louvain_nodes), a.networkx_max)
    if a.memory_sites:
        rows += bench_memory(a.memory_sites)
    return rows + bench_finetune(2, 32, a.device)


if __name__ == "__main__":
    main()
