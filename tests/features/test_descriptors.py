import numpy as np
import pytest

from geoloc_core.features.descriptors import describe, fit_vlad_vocabulary, gem, vlad


def test_gem_is_the_power_mean_of_clamped_tokens():
    x = np.abs(np.random.default_rng(0).normal(size=(4, 10, 8))).astype(np.float32) + 0.1
    expected = np.mean(x**3, axis=1) ** (1 / 3)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(gem(x), expected, atol=1e-6)
    assert np.allclose(gem(-x), gem(np.full_like(x, 1e-6)))  # negatives clamp to eps, as in AnyLoc


def test_vlad_matches_a_loop_over_words():
    rng = np.random.default_rng(1)
    patches = rng.normal(size=(3, 20, 6)).astype(np.float32)
    vocab = fit_vlad_vocabulary(patches, n_words=4, seed=0)
    assert vocab.shape == (4, 6) and np.allclose(np.linalg.norm(vocab, axis=1), 1, atol=1e-5)
    got = vlad(patches, vocab)
    for n in range(3):
        x = patches[n] / np.linalg.norm(patches[n], axis=1, keepdims=True)
        words = np.argmax(x @ vocab.T, axis=1)
        parts = []
        for k in range(4):
            r = (x[words == k] - vocab[k]).sum(axis=0)
            parts.append(r / max(np.linalg.norm(r), 1e-12))
        v = np.concatenate(parts)
        assert np.allclose(got[n], v / np.linalg.norm(v), atol=1e-5)


def test_describe_dispatches_and_explains_what_is_missing():
    emb = np.eye(3, dtype=np.float32)
    assert describe("cls", emb, None) is not None
    with pytest.raises(ValueError, match="--patches"):
        describe("gem", emb, None)
    with pytest.raises(ValueError, match="vocabulary"):
        describe("vlad", emb, np.ones((3, 4, 3), np.float32))
