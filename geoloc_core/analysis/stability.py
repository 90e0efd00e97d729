"""How much a partition depends on Louvain's seed: the co-assignment rate of every graph edge over several seeds.

Louvain visits nodes in a random order, and on a graph without clear communities two seeds can cut it
differently. Cutting the same weighted graph with seeds 0..S-1 at one resolution and counting, for each
edge between two neighbouring sites, the share of cuts that put both in one region tells an analyst
which boundaries are solid (rate near 0: every seed separates them; near 1: every seed joins them) and
which are accidents of one run (in between).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from geoloc_core.base import storage
from geoloc_core.regions.partition import louvain_regions
from geoloc_core.runs.folders import RegionFiles, Run


def coassignment(n_nodes: int, edges: np.ndarray, weights: np.ndarray, resolution: float = 1.0,
                 seeds: tuple[int, ...] = tuple(range(10))) -> tuple[np.ndarray, np.ndarray]:
    """Louvain once per seed -> ((E,) share of seeds that put each edge's two nodes in one region, (S,) regions per
    seed)."""
    together = np.zeros(len(edges), np.float64)
    n_regions = np.empty(len(seeds), np.int64)
    for i, seed in enumerate(seeds):
        labels = louvain_regions(n_nodes, edges, weights, resolution, seed).labels
        together += labels[edges[:, 0]] == labels[edges[:, 1]]
        n_regions[i] = labels.max() + 1 if len(labels) else 0
    return together / max(len(seeds), 1), n_regions


@dataclass(frozen=True)
class Stability:
    """A partition's graph cut with several seeds at one resolution."""

    # lat0, lon0, lat1, lon1, rate (share of seeds that join the two sites), boundary (cut in the partition shown)
    edges: pd.DataFrame
    n_regions: np.ndarray  # (S,) regions of each seed's cut
    seeds: tuple[int, ...]
    resolution: float

    @property
    def boundary_certainty(self) -> float:
        """Mean share of seeds that agree with the shown partition on its boundary edges
        (1: every seed cuts them too)."""
        cut = self.edges["boundary"].to_numpy()
        return float(1 - self.edges["rate"].to_numpy()[cut].mean()) if cut.any() else float("nan")


def partition_stability(run: Run, graph: str, regions: RegionFiles, resolution: float = 1.0,
                        seeds: tuple[int, ...] = tuple(range(10))) -> Stability:
    """`coassignment` of the graph one partition of a run was cut from (its features, its negative-weight rule), with
    the partition's own boundaries marked, for drawing."""
    sources = run.partition_sources(regions)
    site_graph = run.site_graph(graph)
    local_edges, weights = site_graph.weighted_edges(storage.read_npy(sources.features), sources.regions.negative)
    rate, n_regions = coassignment(len(site_graph.train_sites), local_edges, weights, resolution, seeds)
    site_labels = np.full(len(site_graph.site_xy_m), -1)
    site_labels[site_graph.site_of_photo] = regions.labels()["region"].to_numpy()
    sites = run.read_sites()
    lat, lon, e = sites["lat_deg"].to_numpy(), sites["lon_deg"].to_numpy(), site_graph.edges
    frame = pd.DataFrame({"lat0": lat[e[:, 0]], "lon0": lon[e[:, 0]], "lat1": lat[e[:, 1]], "lon1": lon[e[:, 1]],
                          "rate": rate, "boundary": site_labels[e[:, 0]] != site_labels[e[:, 1]]})
    return Stability(frame, n_regions, tuple(seeds), resolution)
