"""Precomputed exact neighbour lists: "samples like this indexed one" without a search.

Most neighbour questions name an indexed sample, and a bundle never changes while served,
so the answer to each can be worked out once. At start-up the server computes, for every
indexed sample, its ``size`` most similar rows (cosine over the whole profile, the exact
``Flat`` index's own vectors) among all rows, and again among the misclassified rows alone,
the two sets asked about most. A by-id query is then answered from its sample's list when
the list provably holds the exact answer, and searched as before otherwise.

Why the answer is exact: a list keeps only the rows scoring *strictly* above ``bound``, the
best score left outside it, so every row outside scores at most ``bound``. Filtering the
list (true/predicted labels, the query itself) keeps its order; when at least ``k`` rows
remain and the k-th of them scores above ``bound``, no outside row can be among (or tie
with) the k best. Lists holding a whole row set have ``bound = -inf``. Otherwise (filters
that leave too few rows, large ``k``, layer subsets) the caller searches.

Cost: one (N, d) x (d, N) product, about 1 s for 10k x 672 on 2 cores, growing with N²,
hence ``ServerConfig.neighbor_lists_max_samples``; memory N x size x 8 bytes per list.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from .config import NEIGHBOR_LIST_SIZE

__all__ = ["NeighborList", "NeighborLists"]

log = logging.getLogger("parasal.server")

_BLOCK_ROWS = 1024  # query rows per product: a (1024, N) float32 block


@dataclass(frozen=True)
class NeighborList:
    """The nearest rows of every row among ``subset`` rows, best first."""

    rows: np.ndarray  # (N, size) int64 row positions by (score desc, row asc); -1 pads
    scores: np.ndarray  # (N, size) float32 cosine; -inf pads
    bound: np.ndarray  # (N,) float32: every row of the subset not listed scores <= bound
    subset: np.ndarray | None  # (N,) bool rows the list draws from; None = all

    def covers(self, allowed: np.ndarray | None) -> bool:
        """Whether every row ``allowed`` (None = all) is in this list's subset."""
        if self.subset is None:
            return True
        return allowed is not None and not np.any(allowed & ~self.subset)

    def nearest(self, row: int, k: int, allowed: np.ndarray | None, exclude: int | None):
        """The exact k best (rows, scores) for ``row`` among ``allowed`` rows other than
        ``exclude``, or None when the list cannot prove them (see module docstring)."""
        rows, scores = self.rows[row], self.scores[row]
        ok = rows >= 0
        if allowed is not None:
            ok &= allowed[rows]  # a pad (-1) reads allowed[-1] but is already False
        if exclude is not None:
            ok &= rows != exclude
        keep = np.flatnonzero(ok)[:k]
        if len(keep) < k and np.isfinite(self.bound[row]):
            return None
        if len(keep) == k and not scores[keep[-1]] > self.bound[row]:
            return None
        return rows[keep], scores[keep]


class NeighborLists:
    """Neighbour lists of one exact index, among all rows and among ``misclassified`` ones."""

    def __init__(self, lists: list[NeighborList], ids: np.ndarray):
        self.lists = lists
        self.ids = ids  # (N,) sample id of each row

    @classmethod
    def build(
        cls,
        vectors: torch.Tensor,
        ids: np.ndarray,
        misclassified: np.ndarray,
        size: int = NEIGHBOR_LIST_SIZE,
        name: str = "",
    ) -> NeighborLists:
        """``vectors`` (N, d): the normalised rows of the exact index (queries by id use
        these same vectors, so the lists equal what a search would return)."""
        start = time.perf_counter()
        lists = [build_list(vectors, size, None)]
        if misclassified.any():
            lists.append(build_list(vectors, size, np.asarray(misclassified, bool)))
        log.info(
            "bundle %r: neighbour lists of %d samples (%d each) in %.1f s",
            name,
            len(ids),
            size,
            time.perf_counter() - start,
        )
        return cls(lists, np.asarray(ids, np.int64))

    def nearest(
        self, row: int, k: int, allowed: np.ndarray | None = None, exclude: int | None = None
    ) -> list[tuple[int, float]] | None:
        """The exact k best (sample id, cosine) for indexed ``row``, or None (search instead)."""
        for neighbor_list in self.lists[::-1]:  # the narrowest list that covers the filter first
            if neighbor_list.covers(allowed):
                found = neighbor_list.nearest(row, k, allowed, exclude)
                if found is not None:
                    rows, scores = found
                    return list(zip(self.ids[rows].tolist(), scores.tolist()))
        return None


def build_list(vectors: torch.Tensor, size: int, subset: np.ndarray | None) -> NeighborList:
    """The ``size`` nearest rows of every row among ``subset`` (None = all), exactly."""
    # Not parasal.indexer.cosine_top_k, the indexer's chunked top-k: it normalises the rows
    # again and multiplies in numpy, so its scores differ from the exact search's (a torch
    # product over these same vectors, scoring.flat_scan) by up to ~8e-7, enough to reorder
    # near-ties and break "a list answers what a search would"; and for 10k x 672 on 2 cores
    # it took twice as long (8.8 s against 4.5 s, measured side by side).
    n = len(vectors)
    columns = np.arange(n) if subset is None else np.flatnonzero(subset)
    candidates = vectors if subset is None else vectors[torch.from_numpy(columns)]  # (m, d)
    m = len(columns)
    take = min(size + 1, m)  # one more than kept: its score is the bound
    rows = np.full((n, size), -1, np.int64)
    scores = np.full((n, size), -np.inf, np.float32)
    bound = np.full(n, -np.inf, np.float32)
    for a in range(0, n, _BLOCK_ROWS):
        block = vectors[a : a + _BLOCK_ROWS] @ candidates.T  # (b, m)
        top_s, top_c = torch.topk(block, take, dim=1)  # (b, take), ties in no set order
        top_s, top_c = top_s.numpy(), columns[top_c.numpy()]
        for j in range(len(top_s)):
            s, r = top_s[j], top_c[j]
            if take > size:  # rows left out: keep only those strictly above the best of them
                limit = s[size]
                bound[a + j] = limit
                above = s > limit
                s, r = s[above], r[above]
            order = np.lexsort((r, -s))
            rows[a + j, : len(order)] = r[order]
            scores[a + j, : len(order)] = s[order]
    return NeighborList(rows, scores, bound, subset)
