"""Stability of a partition over Louvain's seeds: solid where the graph says so, and the run's own cut reproduced."""

import numpy as np
import pytest

from geoloc_core.analysis.stability import coassignment, partition_stability
from geoloc_core.regions.graphs import build_graph
from geoloc_core.regions.partition import SiteGraph
from geoloc_core.runs.folders import Run


def _two_clusters(n: int = 7, seed: int = 0) -> tuple[SiteGraph, np.ndarray, np.ndarray]:
    """Two clusters of n sites 10 km apart whose photos look alike inside a cluster and unalike across."""
    rng = np.random.default_rng(seed)
    xy = np.concatenate([rng.uniform(0, 1000, (n, 2)), rng.uniform(0, 1000, (n, 2)) + [10_000, 0]])
    emb = np.zeros((2 * n, 4), np.float32)
    emb[:n, 0], emb[n:, 1] = 1, 1
    edges = build_graph("dt", xy)
    graph = SiteGraph(np.arange(2 * n), xy, np.arange(2 * n), edges, np.zeros(2 * n, bool))
    return graph, emb, np.arange(2 * n) >= n


def test_two_separated_clusters_are_certain_inside_and_apart_across():
    graph, emb, cluster = _two_clusters()
    edges, weights = graph.weighted_edges(emb)
    rate, n_regions = coassignment(len(graph.train_sites), edges, weights, seeds=tuple(range(8)))
    across = cluster[edges[:, 0]] != cluster[edges[:, 1]]
    assert across.any() and (~across).any()
    assert (rate[~across] == 1.0).all()
    assert (rate[across] == 0.0).all()
    assert (n_regions == 2).all()


def test_a_noisy_graph_has_uncertain_edges_and_rates_are_shares_of_seeds():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1000, (60, 2))
    edges = build_graph("dt", xy)
    weights = rng.uniform(0.5, 1.0, len(edges))  # no community structure: seeds disagree
    seeds = tuple(range(10))
    rate, n_regions = coassignment(60, edges, weights, seeds=seeds)
    assert ((rate > 0) & (rate < 1)).any()
    assert np.allclose(rate * len(seeds), np.round(rate * len(seeds)))
    assert len(n_regions) == len(seeds) and (n_regions >= 2).all()


def test_the_runs_own_seed_reproduces_its_regions_boundaries(tiny_run):
    run = Run(tiny_run)
    cfg = run.pipeline_config().regions
    one = partition_stability(run, "dt", run.regions("dt"), cfg.resolution, seeds=(cfg.seed,))
    assert len(one.edges) == len(run.site_graph("dt").edges)
    assert (one.edges["rate"] == (~one.edges["boundary"]).astype(float)).all()  # seed 0 is the cut on the page
    assert one.boundary_certainty == 1.0
    assert one.n_regions.tolist() == [len(run.regions("dt").read_summary())]
    many = partition_stability(run, "dt", run.regions("dt"), 2.0, seeds=(0, 1, 2, 3))
    assert many.edges["rate"].between(0, 1).all() and len(many.n_regions) == 4
    assert many.n_regions.min() >= one.n_regions[0] - 1  # a higher resolution does not merge regions wholesale
    assert many.edges[["lat0", "lon0", "lat1", "lon1"]].notna().all().all()
    assert one.edges[["lat0",
                      "lon0"]].to_numpy() == pytest.approx(run.graph_edges_latlon("dt")[["lat0", "lon0"]].to_numpy())
