"""Precomputed neighbour lists answer exactly what an exact search answers, or nothing.

Oracle: ``faiss_index.flat_scan`` (the server's exact search, itself tested against a
float64 brute force in tests/indexer) with the caller's (score desc, row asc) order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parasal.indexer import faiss_index
from parasal.server.neighbor_lists import NeighborLists, build_list


def unit_rows(rng, n, d, duplicates=0):
    x = rng.standard_normal((n, d)).astype(np.float32)
    for i in range(duplicates):  # exact copies: ties that every product computes equally
        x[n - 1 - i] = x[i]
    return faiss_index.normalize_rows(x)


def oracle(x, row, k, allowed=None, exclude=None):
    mask = np.ones(len(x), bool) if allowed is None else allowed.copy()
    if exclude is not None:
        mask[exclude] = False
    ((rows, scores),) = faiss_index.flat_scan(x, x[row : row + 1], k, mask)
    order = np.lexsort((rows, -scores))[:k]
    return rows[order].tolist(), scores[order]


def check(lists, x, row, k, allowed=None, exclude=None):
    """The list's answer (ids = rows here) equals the oracle, when it gives one."""
    got = lists.nearest(row, k, allowed, exclude)
    if got is None:
        return False
    want_rows, want_scores = oracle(x, row, k, allowed, exclude)
    assert [i for i, _ in got] == want_rows, (row, k)
    np.testing.assert_allclose([s for _, s in got], want_scores, rtol=0, atol=1e-6)
    return True


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = unit_rows(rng, 400, 24, duplicates=30)
    misclassified = rng.random(400) < 0.15
    lists = NeighborLists.build(torch.from_numpy(x), np.arange(400), misclassified, size=16)
    return x, misclassified, lists, rng


def test_unfiltered_answers_equal_the_exact_search_and_exclude_the_query(data):
    x, _, lists, _ = data
    rows = range(0, 400, 3)
    assert all(check(lists, x, row, k, exclude=row) for row in rows for k in (1, 5, 10))
    # Near the list's size a tie across its end (duplicated rows) can leave it one short.
    assert sum(check(lists, x, row, 15, exclude=row) for row in rows) >= 0.9 * len(rows)
    assert all(i != 7 for i, _ in lists.nearest(7, 10, exclude=7))
    assert check(lists, x, 7, 10)  # the query itself included: first, tied with its copy (row 392)
    assert [i for i, _ in lists.nearest(7, 2)] == [7, 392]


def test_filtered_answers_are_exact_or_refused(data):
    x, misclassified, lists, rng = data
    labels = rng.integers(0, 4, 400)
    answered = refused = 0
    for row in range(0, 400, 2):
        for allowed in (misclassified, misclassified & (labels == 1), labels == 2):
            for k in (1, 5, 10):
                ok = check(lists, x, row, k, allowed=allowed, exclude=row)
                answered += ok
                refused += not ok
    assert answered > 0 and refused > 0  # both paths taken (label 2 alone is not a listed subset)


def test_misclassified_filter_uses_its_own_list(data):
    x, misclassified, lists, _ = data
    # Misclassified rows are 15 %: the all-rows list (16) rarely holds 10 of them, the misclassified list does.
    assert all(check(lists, x, row, 10, allowed=misclassified, exclude=row) for row in range(400))


def test_k_beyond_the_list_is_refused_unless_the_list_holds_every_row(data):
    x, misclassified, lists, _ = data
    assert lists.nearest(3, 16, exclude=3) is None  # needs a 17th row, the list keeps 16
    small = misclassified.copy()
    small[np.flatnonzero(small)[10:]] = False  # a subset of 10 rows, smaller than the list
    complete = NeighborLists.build(torch.from_numpy(x), np.arange(400), small, size=16)
    for row in range(0, 400, 7):  # asks for more than there are: all of them, in order
        assert check(complete, x, row, 50, allowed=small, exclude=row)
        assert len(complete.nearest(row, 50, small, row)) == int(small.sum()) - bool(small[row])


def test_rows_tied_with_the_first_row_left_out_are_never_listed():
    # 1 query-like row, then 3 rows at cosine 0.8 and 5 identical rows at 0.6: a list of 5 holds
    # the 3 above, and the 0.6 rows (some in, some out of a top-6) tie with the bound.
    d = 8
    base = np.eye(d, dtype=np.float32)[0]
    other = np.eye(d, dtype=np.float32)[1]
    rows = [base] + [0.8 * base + 0.6 * np.eye(d, dtype=np.float32)[j] for j in (2, 3, 4)]
    rows += [0.6 * base + 0.8 * other] * 5
    x = faiss_index.normalize_rows(np.stack(rows))
    neighbor_list = build_list(torch.from_numpy(x), 5, None)
    listed = neighbor_list.rows[0][neighbor_list.rows[0] >= 0]
    assert sorted(listed.tolist()) == [0, 1, 2, 3]  # the tied 0.6 rows all stay out
    assert neighbor_list.bound[0] == pytest.approx(0.6, abs=1e-6)
    lists = NeighborLists([neighbor_list], np.arange(len(x)))
    assert [i for i, _ in lists.nearest(0, 3, exclude=0)] == [1, 2, 3]
    assert lists.nearest(0, 4, exclude=0) is None  # the 4th best is a tie only a search orders


def test_ids_are_reported_not_rows():
    rng = np.random.default_rng(1)
    x = unit_rows(rng, 50, 6)
    ids = np.arange(50) * 10 + 3
    lists = NeighborLists.build(torch.from_numpy(x), ids, np.zeros(50, bool), size=8)
    assert len(lists.lists) == 1  # no misclassified rows, no list for them
    want_rows, _ = oracle(x, 4, 5, exclude=4)
    assert [i for i, _ in lists.nearest(4, 5, exclude=4)] == [int(ids[r]) for r in want_rows]
