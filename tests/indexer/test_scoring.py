"""Query maths against slow oracles: chunked cosine top-k vs a float64 brute force (ties
included), and core.top_k_filters vs the indexer's former top_filters."""

from __future__ import annotations

import numpy as np
import pytest

from parasal.core import top_k_filters
from parasal.indexer import cosine_top_k, scoring


def brute_force(queries, vectors, k, mask=None, cols=None, exclude=None):
    """float64 cosine, ordered by (score desc, row asc) with scores rounded so float32
    noise cannot reorder exact ties."""
    x = np.asarray(vectors, np.float64)
    q = np.asarray(queries, np.float64)
    if cols is not None:
        x = np.concatenate([x[:, s] for s in cols], axis=1)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    out = []
    for j, s in enumerate(q @ x.T):
        rows = np.arange(len(x))
        keep = np.ones(len(x), bool) if mask is None else mask.copy()
        if exclude is not None and exclude[j] >= 0:
            keep[exclude[j]] = False
        rows, s = rows[keep], s[keep]
        order = np.lexsort((rows, -np.round(s, 5)))[:k]
        out.append((rows[order], s[order]))
    return out


def tied_vectors(n=300, d=12, seed=0):
    """Rows with many exact duplicates (equal cosines to any query) and a few zero rows."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n // 4, d)).astype(np.float32)
    x = base[rng.integers(0, len(base), n)]  # (n, d): each row repeated ~4 times
    x[::37] = 0
    return x.astype(np.float16)


def check(got, want):
    assert len(got) == len(want)
    for (gr, gs), (wr, ws) in zip(got, want):
        np.testing.assert_array_equal(gr, wr)
        np.testing.assert_allclose(gs, ws, atol=1e-5)


@pytest.mark.parametrize("k", [1, 5, 17, 300, 500])
def test_cosine_top_k_matches_brute_force_with_ties(k, monkeypatch):
    monkeypatch.setattr(scoring, "_CHUNK_BYTES", 4 * 12 * 256)  # 256-row chunks: ties cross chunk borders
    monkeypatch.setattr(scoring, "_SIMS_BYTES", 4 * 256 * 7)  # 7 queries per block
    x = tied_vectors()
    q = scoring.normalize_rows(x[[3, 10, 11, 40, 0, 77, 150, 299, 5, 6, 7, 8, 9, 12, 13]])  # zero row 0 too
    check(cosine_top_k(q, x, k), brute_force(q, x, k))


def test_cosine_top_k_with_mask_columns_and_exclusion():
    x = tied_vectors(seed=1)
    rng = np.random.default_rng(2)
    mask = rng.random(len(x)) < 0.6
    cols = [slice(0, 4), slice(8, 12)]
    q = scoring.normalize_rows(np.concatenate([x[:20, s] for s in cols], axis=1))
    check(cosine_top_k(q, x, 9, mask=mask, cols=cols), brute_force(q, x, 9, mask=mask, cols=cols))
    exclude = np.arange(20)
    exclude[3] = -1
    qa = scoring.normalize_rows(x[:20])
    got = cosine_top_k(qa, x, 6, exclude=exclude)
    check(got, brute_force(qa, x, 6, exclude=exclude))
    assert all(j not in rows for j, (rows, _) in enumerate(got) if j != 3)
    assert all(len(r) == 0 for r, _ in cosine_top_k(qa, x, 0))


def old_top_filters(z, k=10):
    """indexer/assemble.py's top_filters before core.top_k_filters replaced it."""
    n, f = z.shape
    k = min(k, f)
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), z.dtype)
    cand = np.argpartition(-z, k - 1, axis=1)[:, :k] if k < f else np.tile(np.arange(f), (n, 1))
    vals = np.take_along_axis(z, cand, axis=1)
    order = np.lexsort((cand, -vals), axis=1)
    idx = np.take_along_axis(cand, order, axis=1)
    return idx, np.take_along_axis(vals, order, axis=1)


@pytest.mark.parametrize("f", [3, 10, 64])
def test_core_top_k_filters_agrees_with_the_former_indexer_version(f):
    rng = np.random.default_rng(f)
    z = np.round(rng.standard_normal((50, f)), 1).astype(np.float16).astype(np.float32)  # many ties
    for k in (1, 10):
        old_i, old_v = old_top_filters(z, k)
        new_i, new_v = top_k_filters(z, k)
        if k < f:  # argpartition drops tied candidates arbitrarily; compare where the set is determined
            kth = old_v[:, -1:]
            determined = (z >= kth).sum(axis=1) == k
            np.testing.assert_array_equal(old_i[determined], new_i[determined])
        else:
            np.testing.assert_array_equal(old_i, new_i)
        np.testing.assert_array_equal(old_v, new_v)
        assert new_v.dtype == np.float32
