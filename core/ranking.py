"""Top-k filters of a profile: the one ranking rule every layer uses.

Largest first (or smallest first with ``largest=False``), ties broken by the lower profile
index, the order of ``sorted(range(F), key=lambda i: (-z[i], i))``. NaN ranks after every
number in both directions (numpy's sort order); callers that must not see NaN check for it.
"""

from __future__ import annotations

import operator

import numpy as np
import torch

__all__ = ["top_k_filters"]


def top_k_filters(scores, k: int, *, largest: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64, values) of the ``k`` largest (or smallest) scores, each (min(k, F),) or (n, min(k, F)).

    ``scores``: a numpy array or torch tensor of shape (F,) or (n, F). Values keep the input's
    float dtype (numpy; torch half/bfloat16 come back as float32, integers as float64).
    ``k`` above F is clipped to F; ``k < 0`` raises ValueError.
    """
    z = _as_numpy(scores)
    k = operator.index(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if z.ndim not in (1, 2):
        raise ValueError(f"scores must have shape (F,) or (n, F), got {z.shape}")
    rows = z.reshape(1, -1) if z.ndim == 1 else z  # (n, F)
    idx = _top_k_rows(rows, min(k, rows.shape[1]), largest)  # (n, k)
    values = np.take_along_axis(rows, idx, axis=1)
    if z.ndim == 1:
        return idx[0], values[0]
    return idx, values


def _as_numpy(scores) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        t = scores.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        scores = t.numpy()
    z = np.asarray(scores)
    return z if z.dtype.kind == "f" else z.astype(np.float64)


def _top_k_rows(z: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """(n, F) -> (n, k) int64 indices in rank order.

    ``argpartition`` finds the k best keys in O(F) per row, but it breaks a tie at the k-th
    key arbitrarily; rows where a tied key was left out of the candidates are redone with a
    stable full sort, so the result is always the lowest indices among the ties.
    """
    n, f = z.shape
    if k == 0:
        return np.zeros((n, 0), np.int64)
    key = -z if largest else z  # ascending key order is rank order; NaN sorts last
    if k == f:
        return np.argsort(key, axis=1, kind="stable").astype(np.int64)
    cand = np.argpartition(key, k - 1, axis=1)[:, :k]  # (n, k), unordered
    cand_key = np.take_along_axis(key, cand, axis=1)
    order = np.lexsort((cand, cand_key), axis=1)  # by key, then by index
    idx = np.take_along_axis(cand, order, axis=1)
    kth = np.take_along_axis(cand_key, order[:, -1:], axis=1)  # (n, 1) the k-th key
    at_kth = _same(key, kth).sum(1) > _same(cand_key, kth).sum(1)
    if at_kth.any():
        idx[at_kth] = np.argsort(key[at_kth], axis=1, kind="stable")[:, :k]
    return idx.astype(np.int64)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equality in which NaN equals NaN (NaNs tie with each other)."""
    return (a == b) | (np.isnan(a) & np.isnan(b))
