"""Region signatures: which photos show what a region looks like, and what sets it apart from the others.

- **Typical** photos lie closest (cosine) to their region's mean embedding: what the region mostly looks like.
- **Distinctive** photos have the largest margin of their own region's score over the best other region's:
  what no other region looks like. The score is the fine-tuning round's cosine head where a round learnt
  this partition (`FT{r} cosine head`: its logits on the embeddings that round produced), else the cosine
  to each region's mean embedding (`nearest region mean`, a nearest-centroid classifier on the features
  the partition was cut from).
- **Contrast** of two adjacent regions (a graph edge joins them): the photos of each whose score for their
  own region most exceeds their score for the other.

Only training photos are ranked (they shaped the regions), and at most one photo per location is shown, so
four headings of one Street View stop do not fill a list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from geoloc_core.base import storage
from geoloc_core.regions.partition import SiteGraph
from geoloc_core.runs.folders import RegionFiles, Run

HEAD_METHOD = "FT{round} cosine head"
CENTROID_METHOD = "nearest region mean (cosine)"


def region_means(emb: np.ndarray, labels: np.ndarray, n_regions: int) -> np.ndarray:
    """(R, D) unit mean embedding of each region's photos (zero for a region with none)."""
    sums = np.zeros((n_regions, emb.shape[1]), np.float64)
    np.add.at(sums, labels, emb)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def region_scores(emb: np.ndarray, labels: np.ndarray, train: np.ndarray, head_weight: np.ndarray | None = None,
                  head_emb: np.ndarray | None = None) -> np.ndarray:
    """(N, R) cosine of every photo to every region: to the cosine head's class weights (`head_weight` (R, D), read on
    `head_emb`), else to the region means of the training photos' `emb`."""
    if head_weight is not None:
        weight = head_weight / np.linalg.norm(head_weight, axis=1, keepdims=True)
        return np.asarray(head_emb, np.float32) @ weight.T.astype(np.float32)
    return np.asarray(emb, np.float32) @ region_means(emb[train], labels[train], int(labels.max()) + 1).T


def margins(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) own region's score minus the best other region's (> 0: the photo is classified into its region)."""
    own = scores[np.arange(len(labels)), labels]
    others = scores.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return own - others.max(axis=1)


def top_per_region(values: np.ndarray, labels: np.ndarray, candidates: np.ndarray, groups: np.ndarray,
                   n: int) -> pd.DataFrame:
    """The `n` candidate photos of each region with the highest `values`, at most one per location:
    region, rank, photo, score."""
    rows = []
    for region in np.unique(labels[candidates]):
        members = candidates[labels[candidates] == region]
        members = members[np.argsort(-values[members], kind="stable")]
        _, first = np.unique(groups[members], return_index=True)
        picked = members[np.sort(first)][:n]
        rows += [{"region": int(region), "rank": i + 1, "photo": int(p), "score": float(values[p])}
                 for i, p in enumerate(picked)]
    return pd.DataFrame(rows, columns=["region", "rank", "photo", "score"])


def adjacent_regions(graph: SiteGraph, labels: np.ndarray) -> pd.DataFrame:
    """Pairs of regions that a graph edge joins (a < b) and how many edges do: the boundaries of the partition."""
    site_labels = np.full(len(graph.site_xy_m), -1)
    site_labels[graph.site_of_photo] = labels
    a, b = site_labels[graph.edges[:, 0]], site_labels[graph.edges[:, 1]]
    cut = a != b
    pairs = pd.DataFrame({"a": np.minimum(a, b)[cut], "b": np.maximum(a, b)[cut]})
    return (pairs.value_counts().rename("n_edges").reset_index()
            .sort_values(["n_edges", "a", "b"], ascending=[False, True, True], ignore_index=True))


@dataclass(frozen=True)
class Signatures:
    """One partition's typical and distinctive photos per region, its boundaries, and the scores behind them."""

    typical: pd.DataFrame  # region, rank, photo, score (cosine to the region mean)
    distinctive: pd.DataFrame  # region, rank, photo, score (margin over the best other region)
    adjacent: pd.DataFrame  # a, b, n_edges
    scores: np.ndarray  # (N, R) cosine of every photo to every region
    labels: np.ndarray  # (N,)
    train: np.ndarray  # (N,) bool
    groups: np.ndarray  # (N,) location of each photo
    method: str  # what `scores` are: HEAD_METHOD or CENTROID_METHOD

    def contrast(self, a: int, b: int, n: int = 4) -> pd.DataFrame:
        """The photos that best tell regions a and b apart: side (a or b), rank, photo, score
        (own minus other region's)."""
        candidates = np.flatnonzero(self.train & np.isin(self.labels, [a, b]))
        gap = self.scores[:, a] - self.scores[:, b]
        gap = np.where(self.labels == a, gap, -gap)
        return top_per_region(gap, self.labels, candidates, self.groups, n).rename(columns={"region": "side"})


def signatures(emb: np.ndarray, labels: np.ndarray, train: np.ndarray, groups: np.ndarray, graph: SiteGraph, n: int = 4,
               head_weight: np.ndarray | None = None, head_emb: np.ndarray | None = None,
               head_round: int | None = None) -> Signatures:
    """Typical and distinctive photos of every region (see the module docstring) from plain arrays."""
    candidates = np.flatnonzero(train)
    means = region_means(emb[train], labels[train], int(labels.max()) + 1)
    to_mean = np.einsum("nd,nd->n", np.asarray(emb, np.float32), means[labels])
    scores = region_scores(emb, labels, train, head_weight, head_emb)
    method = CENTROID_METHOD if head_weight is None else HEAD_METHOD.format(round=head_round)
    typical = top_per_region(to_mean, labels, candidates, groups, n)
    distinctive = top_per_region(margins(scores, labels), labels, candidates, groups, n)
    return Signatures(typical, distinctive, adjacent_regions(graph, labels), scores, labels, train, groups, method)


def partition_signatures(run: Run, graph: str, regions: RegionFiles, n: int = 4) -> Signatures:
    """`signatures` of one partition of a run (an entry of `Run.iterations(graph)`),
    with its round's cosine head if it has one."""
    sources = run.partition_sources(regions)
    labels = regions.labels()["region"].to_numpy()
    site_graph = run.site_graph(graph)
    groups = run.photo_table().frame["group"].to_numpy()
    emb = storage.read_npy(sources.features)
    weight = head_emb = head_round = None
    if sources.head is not None:
        state = torch.load(sources.head, map_location="cpu", weights_only=True)
        weight, head_emb = state["head"]["weight"].float().numpy(), storage.read_npy(sources.head_features)
        head_round = int(sources.head.stem.removeprefix("round"))
    return signatures(emb, labels, ~site_graph.is_test, groups, site_graph, n, weight, head_emb, head_round)
