import numpy as np
import pytest

from geoloc_core.regions.graphs import build_graph, delaunay_edges, proximity_graphs, unique_sites


def textbook(xy: np.ndarray) -> tuple[set, set]:
    """Gabriel (closed diametral disc empty) and RNG (open lune empty) edges by brute force."""
    n = len(xy)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    gg, rng = set(), set()
    for i in range(n):
        for j in range(i + 1, n):
            others = np.ones(n, bool)
            others[[i, j]] = False
            if not (np.linalg.norm(xy[others] - (xy[i] + xy[j]) / 2, axis=1) <= d[i, j] / 2).any():
                gg.add((i, j))
            if not (np.maximum(d[i, others], d[j, others]) < d[i, j]).any():
                rng.add((i, j))
    return gg, rng


def as_set(edges: np.ndarray) -> set:
    return set(map(tuple, edges.tolist()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_graphs_match_their_textbook_definitions(seed):
    xy = np.random.default_rng(seed).random((300, 2)) * 5000
    g = proximity_graphs(xy)
    gg, rng = textbook(xy)
    assert as_set(g["gg"]) == gg
    assert as_set(g["rng"]) == rng
    assert as_set(g["rng"]) <= as_set(g["gg"]) <= as_set(g["dt"])
    assert len(g["dt"]) == 3 * 300 - 3 - len(__import__("scipy.spatial").spatial.ConvexHull(xy).vertices)  # Euler


def test_edges_are_canonical_unique_and_builders_agree():
    xy = np.random.default_rng(3).random((150, 2))
    g = proximity_graphs(xy)
    for kind, edges in g.items():
        assert edges.dtype == np.int64 and edges.shape[1] == 2
        assert (edges[:, 0] < edges[:, 1]).all()
        assert len(as_set(edges)) == len(edges)
        assert as_set(build_graph(kind, xy)) == as_set(edges)


def test_photos_at_one_spot_become_one_site_and_stay_connected():
    rng = np.random.default_rng(4)
    spots = rng.random((30, 2)) * 1000
    xy = np.repeat(spots, 4, axis=0)  # four headings per location, like Street View
    sites, site_of = unique_sites(xy)
    assert len(sites) == 30 and (sites[site_of] == np.round(xy, 3)).all()
    import networkx as nx

    graph = nx.Graph(delaunay_edges(sites).tolist())
    assert graph.number_of_nodes() == 30 and nx.is_connected(graph)


def test_degenerate_inputs():
    assert delaunay_edges(np.zeros((1, 2))).shape == (0, 2)
    assert as_set(delaunay_edges(np.array([[0.0, 0], [1, 1]]))) == {(0, 1)}
    line = np.array([[3.0, 3], [0, 0], [1, 1], [2, 2]])  # collinear: the path along the line
    for kind in ("dt", "gg", "rng"):
        assert as_set(build_graph(kind, line)) == {(1, 2), (2, 3), (0, 3)}
    with pytest.raises(ValueError, match="unknown graph kind"):
        build_graph("knn", line)
