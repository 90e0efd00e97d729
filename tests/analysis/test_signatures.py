"""Region signatures on a tiny real run: typical photos sit closest to their region's mean, distinctive ones have the
largest margin, adjacent regions share a graph edge, and a fine-tuned partition is scored by its round's cosine head."""

import numpy as np
import pytest

from geoloc_core.analysis.signatures import CENTROID_METHOD, margins, partition_signatures, region_means, signatures
from geoloc_core.config import FinetuneConfig
from geoloc_core.learn.finetune import finetune_rounds
from geoloc_core.runs.folders import Run


def _best_per_location(values, labels, train, groups, region):
    members = np.flatnonzero(train & (labels == region))
    return max(values[members]), {g: values[members[groups[members] == g]].max() for g in np.unique(groups[members])}


def test_typical_photos_are_closer_to_their_region_mean_than_the_rest(tiny_run):
    run = Run(tiny_run)
    sig = partition_signatures(run, "dt", run.regions("dt"), n=2)
    emb, _ = run.read_embeddings()
    assert sig.method == CENTROID_METHOD
    means = region_means(emb[sig.train], sig.labels[sig.train], int(sig.labels.max()) + 1)
    to_mean = (emb * means[sig.labels]).sum(axis=1)
    for region, picks in sig.typical.groupby("region"):
        members = np.flatnonzero(sig.train & (sig.labels == region))
        assert set(picks["photo"]) <= set(members) and picks["rank"].tolist() == list(range(1, len(picks) + 1))
        rest = np.setdiff1d(members, picks["photo"])
        # one photo per location: others of a picked one aside
        rest = rest[~np.isin(sig.groups[rest], sig.groups[picks["photo"]])]
        assert picks["score"].to_numpy() == pytest.approx(to_mean[picks["photo"]], abs=1e-5)
        assert (rest.size == 0) or picks["score"].min() >= to_mean[rest].max() - 1e-6
        assert len(set(sig.groups[picks["photo"]])) == len(picks)  # never two photos of one location


def test_distinctive_photos_have_the_largest_margin_over_other_regions(tiny_run):
    run = Run(tiny_run)
    sig = partition_signatures(run, "dt", run.regions("dt"), n=3)
    margin = margins(sig.scores, sig.labels)
    for region, picks in sig.distinctive.groupby("region"):
        members = np.flatnonzero(sig.train & (sig.labels == region))
        assert picks["score"].iloc[0] == pytest.approx(margin[members].max(), abs=1e-6)
        assert (np.diff(picks["score"].to_numpy()) <= 1e-9).all()
    # a margin is the own region's score minus the best other's: positive exactly where the scores classify correctly
    assert ((margin > 0) == (sig.scores.argmax(axis=1) == sig.labels)).all()


def test_adjacent_regions_share_an_edge_and_their_contrast_favours_each_side(tiny_run):
    run = Run(tiny_run)
    sig = partition_signatures(run, "dt", run.regions("dt"), n=2)
    graph = run.site_graph("dt")
    site_labels = np.full(len(graph.site_xy_m), -1)
    site_labels[graph.site_of_photo] = sig.labels
    pairs = {tuple(sorted(p)) for p in site_labels[graph.edges].tolist() if p[0] != p[1]}
    assert set(zip(sig.adjacent["a"], sig.adjacent["b"])) == pairs and len(pairs) > 0
    assert sig.adjacent["n_edges"].sum() == sum(site_labels[graph.edges[:, 0]] != site_labels[graph.edges[:, 1]])
    a, b = int(sig.adjacent["a"].iloc[0]), int(sig.adjacent["b"].iloc[0])
    contrast = sig.contrast(a, b, n=2)
    assert set(contrast["side"]) == {a, b}
    for side, picks in contrast.groupby("side"):
        other = b if side == a else a
        assert (sig.labels[picks["photo"]] == side).all()
        assert picks["score"].to_numpy() == pytest.approx(sig.scores[picks["photo"], side]
                                                          - sig.scores[picks["photo"], other])


def test_a_fine_tuned_partition_is_scored_by_its_rounds_cosine_head(tiny_run):
    list(finetune_rounds(tiny_run, FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")))
    run = Run(tiny_run)
    iterations = run.iterations("dt")
    learnt = partition_signatures(run, "dt", iterations["w/o (fine-tuning run)"])
    assert learnt.method == "FT1 cosine head"
    assert np.abs(learnt.scores).max() <= 1 + 1e-5 and learnt.scores.shape[1] == int(learnt.labels.max()) + 1
    last = partition_signatures(run, "dt", iterations["after FT1"])  # no round learnt FT1's regions yet
    assert last.method == CENTROID_METHOD


def test_head_weights_equal_to_the_region_means_score_like_the_means():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels, train, groups = np.arange(30) % 3, np.ones(30, bool), np.arange(30)
    from geoloc_core.regions.partition import SiteGraph

    graph = SiteGraph(np.arange(30), rng.normal(size=(30, 2)), np.arange(30), np.array([[0, 1], [1, 2]]),
                      np.zeros(30, bool))
    plain = signatures(emb, labels, train, groups, graph)
    head = signatures(emb, labels, train, groups, graph, head_weight=3 * region_means(emb, labels, 3), head_emb=emb,
                      head_round=2)
    assert head.method == "FT2 cosine head"
    assert head.scores == pytest.approx(plain.scores, abs=1e-5)
    assert head.distinctive["photo"].tolist() == plain.distinctive["photo"].tolist()
