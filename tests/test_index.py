import numpy as np
import pytest

from geoloc_core.index import build_index, load_index, save_index, search


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


def test_hnsw_recall_against_exact():
    rng = np.random.default_rng(1)
    db, q = unit(rng.normal(size=(20_000, 32))), unit(rng.normal(size=(200, 32)))
    exact = search(build_index(db, "flat"), q, 10)[1]
    approx = search(build_index(db, "hnsw"), q, 10)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95


def test_k_larger_than_the_database_and_unknown_kind():
    db = unit(np.random.default_rng(2).normal(size=(3, 8)))
    assert search(build_index(db), db, 10)[1].shape == (3, 3)
    with pytest.raises(ValueError):
        build_index(db, "ivf-pq-magic")
