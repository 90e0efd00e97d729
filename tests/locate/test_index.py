import numpy as np
import pytest

from geoloc_core.locate.index import build_index, load_index, save_index, search


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_search_equals_brute_force_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    db, q = unit(rng.normal(size=(2000, 64))), unit(rng.normal(size=(50, 64)))
    index = build_index(db)
    sims, ids = search(index, q, 10)
    expected = np.argsort(-(q @ db.T), axis=1)[:, :10]
    assert (ids == expected).all()
    assert np.allclose(sims, np.take_along_axis(q @ db.T, expected, axis=1), atol=1e-5)
    again = load_index(save_index(index, tmp_path / "index.faiss"))
    assert (search(again, q, 10)[1] == ids).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_against_exact_survives_a_round_trip(kind, tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(200, 32))  # clustered, like photo embeddings
    db = unit(centres[rng.integers(200, size=20_000)] + rng.normal(scale=0.3, size=(20_000, 32)))
    q = unit(centres[rng.integers(200, size=200)] + rng.normal(scale=0.3, size=(200, 32)))
    exact = search(build_index(db, "flat"), q, 10)[1]
    index = load_index(save_index(build_index(db, kind), tmp_path / "index.faiss"))
    approx = search(index, q, 10)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95


def test_k_larger_than_the_database_and_unknown_kind():
    db = unit(np.random.default_rng(2).normal(size=(3, 8)))
    assert search(build_index(db), db, 10)[1].shape == (3, 3)
    with pytest.raises(ValueError):
        build_index(db, "ivf-pq-magic")
