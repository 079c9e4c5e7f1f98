"""top_k_filters against the slow oracle ``sorted(range(F), key=lambda i: (-z[i], i))``, with many ties."""

import numpy as np
import pytest
import torch

from parasal.core import top_k_filters


def _oracle(z, k, largest=True):
    sign = -1 if largest else 1
    order = sorted(range(len(z)), key=lambda i: (sign * z[i], i))[:k]
    return np.array(order, np.int64), np.array([z[i] for i in order], dtype=np.asarray(z).dtype)


def _tied(rng, shape, levels, dtype=np.float32):
    return rng.integers(-levels, levels + 1, shape).astype(dtype) / 2


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_oracle_with_many_ties(largest, dtype):
    rng = np.random.default_rng(0)
    for _ in range(300):
        f = int(rng.integers(1, 120))
        z = _tied(rng, (f,), int(rng.integers(0, 4)), dtype)
        k = int(rng.integers(0, f + 3))
        idx, val = top_k_filters(z, k, largest=largest)
        want_idx, want_val = _oracle(z.tolist(), k, largest)
        assert idx.dtype == np.int64 and val.dtype == dtype
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(val, want_val.astype(dtype))


@pytest.mark.parametrize("largest", [True, False])
def test_batched_rows_match_oracle(largest):
    rng = np.random.default_rng(1)
    z = _tied(rng, (64, 200), 2)  # (n, F): ~1/5 of entries share each value
    z[::7] = 0.0  # all-tied rows
    z[3, :] = np.arange(200)[::-1]  # distinct
    for k in (0, 1, 5, 10, 199, 200, 500):
        idx, val = top_k_filters(z, k, largest=largest)
        assert idx.shape == val.shape == (64, min(k, 200))
        for row in range(len(z)):
            want_idx, want_val = _oracle(z[row].tolist(), k, largest)
            np.testing.assert_array_equal(idx[row], want_idx)
            np.testing.assert_array_equal(val[row], want_val.astype(np.float32))


def test_torch_input_gives_numpy_in_its_dtype():
    z = torch.tensor([0.5, 2.0, 2.0, -1.0], dtype=torch.float64)
    idx, val = top_k_filters(z, 3)
    assert isinstance(idx, np.ndarray) and idx.tolist() == [1, 2, 0]
    assert val.dtype == np.float64 and val.tolist() == [2.0, 2.0, 0.5]
    idx, val = top_k_filters(z.half(), 2, largest=False)
    assert idx.tolist() == [3, 0] and val.dtype == np.float32


def test_matches_the_replaced_copies():
    """The torch stable argsort select_filters / input saliency used, and the server's numpy one."""
    rng = np.random.default_rng(2)
    for _ in range(100):
        z = _tied(rng, (int(rng.integers(1, 90)),), 3, np.float64)
        k = int(rng.integers(0, len(z) + 2))
        t = torch.from_numpy(z)
        most = torch.argsort(t, descending=True, stable=True)[:k].tolist()
        least = torch.argsort(t, descending=False, stable=True)[:k].tolist()
        server = np.argsort(-z.astype(np.float64), kind="stable")[:k].tolist()
        assert top_k_filters(z, k)[0].tolist() == most == server
        assert top_k_filters(z, k, largest=False)[0].tolist() == least


def test_nan_ranks_last_both_ways():
    z = np.array([np.nan, 1.0, np.nan, 3.0, 1.0], np.float32)
    assert top_k_filters(z, 5)[0].tolist() == [3, 1, 4, 0, 2]
    assert top_k_filters(z, 5, largest=False)[0].tolist() == [1, 4, 3, 0, 2]
    assert top_k_filters(np.full((2, 6), np.nan), 3)[0].tolist() == [[0, 1, 2]] * 2


def test_errors():
    with pytest.raises(ValueError, match="k must be >= 0"):
        top_k_filters(np.zeros(3), -1)
    with pytest.raises(ValueError, match="shape"):
        top_k_filters(np.zeros((2, 2, 2)), 1)
    with pytest.raises(TypeError):
        top_k_filters(np.zeros(3), 1.5)
