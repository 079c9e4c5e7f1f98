"""RunningStats / standardize: streaming, mergeable float64 statistics."""

import numpy as np
import pytest
import torch

from parasal.core.stats import SIGMA_FLOOR, RunningStats, standardize


def _profiles(n=97, f=13, seed=0):
    rng = np.random.default_rng(seed)
    # saliency-like: positive, spread comparable to the mean, scales varying over filters
    scale = np.geomspace(1e-4, 10, f)
    return (scale * (3 + rng.standard_normal((n, f)))).astype(np.float32)


def _close(a, b, rel=1e-12):
    np.testing.assert_allclose(a, b, rtol=rel, atol=0)


def test_one_pass_matches_numpy_float64():
    x = _profiles()
    stats = RunningStats.of(x)
    x64 = x.astype(np.float64)
    assert stats.count == len(x) and stats.mean.dtype == np.float64
    _close(stats.mean, x64.mean(0))
    _close(stats.var, x64.var(0, ddof=1), rel=1e-10)  # ddof=1, like torch.std in the paper's code
    _close(stats.std, x64.std(0, ddof=1), rel=1e-10)


def test_merge_of_shards_equals_one_pass():
    x = _profiles(n=211)
    whole = RunningStats.of(x)
    bounds = [0, 1, 2, 40, 41, 150, 211]  # uneven shards, including single rows
    shards = [RunningStats.of(x[a:b]) for a, b in zip(bounds, bounds[1:])]
    merged = shards[0]
    for shard in shards[1:]:
        merged = merged.merge(shard)
    assert merged.count == whole.count
    _close(merged.mean, whole.mean)
    _close(merged.m2, whole.m2)
    tree = shards[0].merge(shards[1]).merge(shards[2].merge(shards[3])).merge(shards[4].merge(shards[5]))
    _close(tree.mean, whole.mean)  # merge order does not matter
    _close(tree.m2, whole.m2)


def test_update_in_place_and_torch_batches():
    x = _profiles(n=64)
    stats = RunningStats.empty(x.shape[1])
    for chunk in np.array_split(x, 5):
        assert stats.update(torch.from_numpy(chunk)) is stats
    whole = RunningStats.of(x)
    assert stats.count == 64
    _close(stats.mean, whole.mean)
    _close(stats.m2, whole.m2)


def test_empty_shards():
    x = _profiles(n=10)
    empty = RunningStats.empty(x.shape[1])
    assert empty.count == 0 and not empty.mean.any() and not empty.var.any()
    of_empty = RunningStats.of(np.zeros((0, x.shape[1]), np.float32))
    assert of_empty.count == 0 and of_empty.num_filters == x.shape[1]
    stats = RunningStats.of(x)
    for merged in (stats.merge(empty), empty.merge(stats), stats.merge(of_empty)):
        assert merged.count == 10
        _close(merged.mean, stats.mean)
        _close(merged.m2, stats.m2)
    both_empty = empty.merge(of_empty)
    assert both_empty.count == 0 and np.isfinite(both_empty.mean).all()
    assert RunningStats.of(x[:1]).var.tolist() == [0.0] * x.shape[1]  # one sample: no spread yet


def test_sigma_floor():
    x = np.ones((6, 4), np.float64)
    x[:, 1] += np.arange(6) * 1e-16  # below the floor
    x[:, 2] += np.arange(6) * 1e-3  # above it
    x[:, 3] = 0.0  # dead filter
    stats = RunningStats.of(x)
    assert np.sqrt(stats.var[1]) <= SIGMA_FLOOR
    np.testing.assert_array_equal(stats.std[[0, 1, 3]], [1.0, 1.0, 1.0])
    _close(stats.std[2], np.std(x[:, 2], ddof=1))
    z = stats.standardize(x)
    _close(z[:, 0], x[:, 0] - stats.mean[0])  # σ -> 1: z = s - µ, not a division by ~0
    assert np.abs(z).max() < 10


def test_standardize_numpy_and_torch_keep_type_and_dtype():
    x = _profiles(n=30, f=7)
    stats = RunningStats.of(x)
    expected = (x.astype(np.float64) - stats.mean) / stats.std
    z = stats.standardize(x)
    assert isinstance(z, np.ndarray) and z.dtype == np.float32
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)
    z64 = standardize(x.astype(np.float64), stats.mean, stats.std)
    assert z64.dtype == np.float64
    _close(z64, expected)
    zt = stats.standardize(torch.from_numpy(x))
    assert isinstance(zt, torch.Tensor) and zt.dtype == torch.float32
    np.testing.assert_allclose(zt.numpy(), expected, rtol=1e-6, atol=1e-6)
    zt64 = stats.standardize(torch.from_numpy(x).double())
    assert zt64.dtype == torch.float64
    _close(zt64.numpy(), expected)
    one = stats.standardize(x[0])  # a single (F,) profile
    assert one.shape == (7,)
    np.testing.assert_allclose(one, expected[0], rtol=1e-6, atol=1e-6)
    zi = standardize(np.arange(7), stats.mean, stats.std)  # integer input -> float32
    assert zi.dtype == np.float32


def test_arrays_round_trip_and_mismatch():
    stats = RunningStats.of(_profiles(n=20))
    back = RunningStats.from_arrays(stats.to_arrays())
    assert back.count == stats.count
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.m2, stats.m2)
    with pytest.raises(ValueError, match="cannot merge"):
        stats.merge(RunningStats.empty(stats.num_filters + 1))
    with pytest.raises(ValueError, match=r"\(B, F\)"):
        RunningStats.of(np.zeros(5))
