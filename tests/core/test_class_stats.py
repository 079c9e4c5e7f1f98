"""ClassFilterStats: exact percentiles and means against numpy on skewed data, merge order, round trip."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch

from parasal.core import ClassFilterStats

QS = (0.0, 0.1, 1.0, 25.0, 37.3, 50.0, 99.0, 99.9, 100.0)
K, N = 4, 6


def skewed(seed: int, m: int = 900):
    """(m, N) lognormal and gamma columns (the paper's distributions are skewed) and uneven labels; class 3 empty."""
    rng = np.random.default_rng(seed)
    alpha = np.concatenate([rng.lognormal(0, 1.5, (m, N // 2)), -rng.gamma(0.5, 2.0, (m, N - N // 2))], axis=1)
    labels = rng.choice(3, size=m, p=[0.6, 0.3, 0.1])
    return alpha.astype(np.float32), labels


def test_percentiles_and_means_match_numpy():
    alpha, labels = skewed(0)
    stats = ClassFilterStats.of(alpha, labels, K)
    assert stats.counts.tolist() == [int((labels == c).sum()) for c in range(3)] + [0]
    for c in range(3):
        rows = alpha[labels == c].astype(np.float64)
        np.testing.assert_allclose(stats.mean[c], rows.mean(axis=0), rtol=1e-12)
        for q in QS:
            np.testing.assert_allclose(stats.percentile(q)[c], np.percentile(rows, q, axis=0), rtol=1e-12, atol=0)
    assert np.isnan(stats.mean[3]).all() and np.isnan(stats.percentile(50)[3]).all()
    assert stats.percentiles([0.1, 99.9]).shape == (2, K, N)


def test_tiny_classes():
    stats = ClassFilterStats.of(np.array([[1.0], [3.0]]), np.array([0, 1]), 2).update(np.array([[2.0]]), [1])
    assert stats.percentile(99.9).ravel().tolist() == [1.0, 2.0 + 0.999]
    assert stats.percentile(0.1).ravel().tolist() == [1.0, 2.0 + 0.001]


def test_shards_merged_in_any_order_equal_one_pass():
    alpha, labels = skewed(1)
    whole = ClassFilterStats.of(alpha, labels, K).to_arrays()
    cuts = np.split(np.arange(len(alpha)), [100, 101, 430, 700])  # uneven, one of a single row
    shards = [ClassFilterStats.of(alpha[i], labels[i], K) for i in cuts]
    for order in list(itertools.permutations(range(len(shards))))[::17]:
        merged = shards[order[0]]
        for j in order[1:]:
            merged = merged.merge(shards[j])
        arrays = merged.to_arrays()
        assert np.array_equal(arrays["counts"], whole["counts"])
        assert np.array_equal(arrays["values"], whole["values"])
        assert np.array_equal(merged.mean, ClassFilterStats.from_arrays(whole).mean, equal_nan=True)
    # a tree of merges, and updates batch by batch, give the same arrays too
    tree = shards[0].merge(shards[1]).merge(shards[2].merge(shards[3].merge(shards[4])))
    streamed = ClassFilterStats.empty(K, N)
    for i in cuts:
        streamed.update(torch.from_numpy(alpha[i]), torch.from_numpy(labels[i]))
    for other in (tree, streamed):
        assert np.array_equal(other.to_arrays()["values"], whole["values"])
    assert shards[0].counts.sum() == 100  # merge left its inputs alone


def test_round_trip_through_npz():
    alpha, labels = skewed(2)
    stats = ClassFilterStats.of(alpha, labels, K)
    buffer = io.BytesIO()
    np.savez(buffer, **stats.to_arrays())
    buffer.seek(0)
    with np.load(buffer) as arrays:
        back = ClassFilterStats.from_arrays(dict(arrays))
    assert (back.num_classes, back.num_filters) == (K, N)
    for q in (0.1, 50, 99.9):
        assert np.array_equal(back.percentile(q), stats.percentile(q), equal_nan=True)
    assert np.array_equal(back.mean, stats.mean, equal_nan=True)


def test_refuses_bad_input():
    stats = ClassFilterStats.empty(3, 2)
    with pytest.raises(ValueError, match="labels must lie"):
        stats.update(np.zeros((1, 2)), [3])
    with pytest.raises(ValueError, match="shape"):
        stats.update(np.zeros((1, 5)), [0])
    with pytest.raises(ValueError, match="finite"):
        stats.update(np.array([[np.nan, 0.0]]), [0])
    with pytest.raises(TypeError, match="integers"):
        stats.update(np.zeros((1, 2)), [0.5])
    with pytest.raises(ValueError, match="cannot merge"):
        stats.merge(ClassFilterStats.empty(3, 4))
    with pytest.raises(ValueError, match="percentile"):
        stats.percentile(101)
    with pytest.raises(ValueError, match="inconsistent"):
        ClassFilterStats.from_arrays({"counts": np.array([2, 2]), "values": np.zeros((3, 2), np.float32)})


def test_percentile_tables_are_bounded_and_stay_exact():
    from parasal.core.class_stats import MAX_CACHED_PERCENTILES

    rng = np.random.default_rng(3)
    alpha = rng.normal(size=(200, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 200)
    stats = ClassFilterStats.of(alpha, labels, 3)
    for i in range(50):
        stats.percentile(i / 2)
    assert sum(isinstance(k, tuple) for k in stats._cache) <= MAX_CACHED_PERCENTILES
    # an evicted q is recomputed, equal to numpy's percentile
    np.testing.assert_allclose(stats.percentile(0.0)[1], np.percentile(alpha[labels == 1], 0.0, axis=0))


def test_percentiles_from_many_threads_at_once():
    import sys
    import threading

    rng = np.random.default_rng(5)
    alpha = rng.normal(size=(300, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 300)
    stats = ClassFilterStats.of(alpha, labels, 3)
    expected = {q: np.percentile(alpha[labels == 2], q, axis=0) for q in np.linspace(0, 100, 40)}
    errors = []

    def ask():
        try:
            for _ in range(5):
                for q, want in expected.items():
                    np.testing.assert_allclose(stats.percentile(q)[2], want)
        except Exception as exc:  # noqa: BLE001 - any failure in a thread fails the test
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]
