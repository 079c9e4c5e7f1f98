"""The maths of a query: normalisation, exact cosine scores, top-k with stable ties.

Everything here works on plain arrays (and FAISS search parameters), never on files, so
search.py (the bundle's search semantics), the benchmarks, the demo's metrics and the
server's neighbour lists share one implementation. Cosine similarity is the inner
product of L2-normalised float32 rows; results are (rows, scores) pairs ordered by score
descending, then row ascending, so equal scores always come out in the same order.
"""

from __future__ import annotations

import warnings

import faiss
import numpy as np
import torch

from parasal.core import top_k_filters

__all__ = [
    "normalize_rows",
    "cosine_top_k",
    "top_rows",
    "exact_scores",
    "flat_scan",
    "as_tensor",
    "inner_index",
    "row_selector_params",
]

#: float32 working set of one (queries, rows) similarity block of ``cosine_top_k``, and of
#: the stored rows it normalises at a time.
_CHUNK_BYTES = 256 << 20
_SIMS_BYTES = 64 << 20


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """float32, C-contiguous, each row L2-normalised (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    faiss.normalize_L2(x)
    return x


def inner_index(index: faiss.Index) -> faiss.Index:
    """The index inside the IDMap (searching it returns row positions)."""
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)) else index


def exact_scores(q: np.ndarray, rows: np.ndarray, profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine of one normalised query ``q`` (d,) with the stored ``profiles[rows]``."""
    if len(rows) == 0:
        return rows, np.zeros(0, np.float32)
    order = np.argsort(rows)
    x = normalize_rows(profiles[rows[order]])  # (m, d), read in row order
    scores = np.empty(len(rows), np.float32)
    scores[order] = x @ q
    return rows, scores


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``x``'s memory, read-only arrays included (nothing here writes
    to it; torch warns about read-only arrays because it cannot enforce that)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(x)


def flat_scan(xb: np.ndarray | torch.Tensor, qn: np.ndarray, k: int, mask: np.ndarray | None = None):
    """Exact inner-product search as one matrix product: [(rows, scores)] per query, each
    holding the ``k`` best rows (where ``mask``) *and every row tied with the k-th*, unsorted.

    FAISS's flat search scans the index once per query below 20 queries; the server batches
    concurrent queries (a handful each time), and one (Q, d) x (d, N) product costs about
    as much for 8 queries as FAISS's scan for 2. torch's sgemm releases the GIL and is the
    faster of the BLAS libraries installed with parasal. Including ties keeps the answer
    exact under the caller's (score, row) ordering.
    """
    n = len(xb)
    xb = xb if isinstance(xb, torch.Tensor) else as_tensor(xb)  # (N, d)
    scores = torch.from_numpy(np.ascontiguousarray(qn, np.float32)) @ xb.T  # (Q, N)
    if mask is not None:
        scores[:, torch.from_numpy(~np.asarray(mask, bool))] = -torch.inf
    available = n if mask is None else int(np.count_nonzero(mask))
    k = min(int(k), available)
    if k == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(len(qn))]
    kth = torch.topk(scores, k, dim=1, sorted=False).values.min(dim=1, keepdim=True).values  # (Q, 1)
    scores = scores.numpy()
    out = []
    for s, t in zip(scores, kth.numpy()):
        rows = np.flatnonzero(s >= t[0])
        out.append((rows.astype(np.int64), s[rows]))
    return out


def row_selector_params(index: faiss.Index, mask: np.ndarray):
    """Search parameters restricting ``inner_index(index)`` to rows where ``mask`` is True.

    Returns ``(params, keepalive)``; keep ``keepalive`` referenced until the search returns
    (the selector points into its buffer). None when this index type takes no selector.
    """
    bits = np.packbits(np.asarray(mask, dtype=bool), bitorder="little")
    sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))

    def params_for(ix):
        ix = faiss.downcast_index(ix)
        if isinstance(ix, faiss.IndexPreTransform):
            inner = params_for(ix.index)
            return None if inner is None else faiss.SearchParametersPreTransform(index_params=inner)
        if isinstance(ix, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=sel, nprobe=ix.nprobe)
        if isinstance(ix, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=sel, efSearch=ix.hnsw.efSearch)
        if isinstance(ix, (faiss.IndexFlat, faiss.IndexScalarQuantizer, faiss.IndexPQ)):
            return faiss.SearchParameters(sel=sel)
        return None

    params = params_for(inner_index(index))
    return (params, (bits, sel)) if params is not None else (None, None)


def top_rows(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (rows, scores), by score descending then row ascending (stable ties)."""
    order = np.lexsort((rows, -scores))[:k]
    return rows[order], scores[order]


def cosine_top_k(
    queries: np.ndarray,
    vectors,
    k: int,
    *,
    mask: np.ndarray | None = None,
    cols: list[slice] | None = None,
    exclude: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact cosine top-k, brute force in chunks: [(rows, scores)] per query, best first
    (score descending, then row ascending), each of ``min(k, #candidate rows)`` entries.

    ``queries``: (Q, d) float32, already L2-normalised (over ``cols`` when given).
    ``vectors``: (N, D) rows of any float dtype (e.g. the float16 ``profiles.npy`` memmap),
    normalised here chunk by chunk over ``cols`` (slices of D summing to d; None = all).
    ``mask``: (N,) bool, the rows that may be returned (None = all). ``exclude``: (Q,) one
    row per query to leave out (itself, for k-nearest-neighbour graphs), -1 for none.
    Memory stays bounded by ``_CHUNK_BYTES`` whatever N and Q.
    """
    n, nq = len(vectors), len(queries)
    if k <= 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(nq)]
    d = queries.shape[1]
    take = int(k) + (exclude is not None)  # one more, in case the excluded row is among the best
    chunk = max(256, _CHUNK_BYTES // max(1, 4 * d))
    q_block = max(1, _SIMS_BYTES // (4 * max(1, min(n, chunk))))
    best_s = [np.full((min(q_block, nq - a), 0), -np.inf, np.float32) for a in range(0, nq, q_block)]
    best_r = [np.zeros((len(s), 0), np.int64) for s in best_s]
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        rows = np.arange(a, b) if mask is None else a + np.flatnonzero(mask[a:b])
        if len(rows) == 0:
            continue
        block = vectors[a:b] if mask is None else vectors[a:b][rows - a]
        x = normalize_rows(block if cols is None else np.concatenate([block[:, s] for s in cols], axis=1))  # (m, d)
        for j, qa in enumerate(range(0, nq, q_block)):
            sims = queries[qa : qa + q_block] @ x.T  # (q, m)
            best_s[j], best_r[j] = _merge_top(best_s[j], best_r[j], sims, rows, take)
    out = [top_rows(r, s, take) for bs, br in zip(best_s, best_r) for r, s in zip(br, bs)]
    if exclude is None:
        return out
    return [_without(rows, scores, int(skip), int(k)) for (rows, scores), skip in zip(out, exclude)]


def _merge_top(best_s: np.ndarray, best_r: np.ndarray, sims: np.ndarray, rows: np.ndarray, k: int):
    """The k best of (best so far, new chunk) per query, as (q, <=k) score and row arrays,
    unsorted: the chunk's own k best first (no (q, m) row array is built), then the merge."""
    top_s, top_r = _k_best(sims, rows, k)
    return _k_best(np.concatenate([best_s, top_s], axis=1), np.concatenate([best_r, top_r], axis=1), k)


def _k_best(s: np.ndarray, r: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(q, c) scores with rows ``r`` ((c,) shared or (q, c)) -> the k best per query, a
    score tied with the k-th going to the lower row, as ``top_rows`` orders them."""
    if s.shape[1] <= k:
        return s, np.array(np.broadcast_to(r, s.shape))
    if r.ndim == 1:  # rows shared and ascending: core's ranking rule is exactly this order
        idx, top_s = top_k_filters(s, k)
        return top_s, r[idx]
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    top_s = np.take_along_axis(s, part, axis=1)
    top_r = r[part] if r.ndim == 1 else np.take_along_axis(r, part, axis=1)
    kth = top_s.min(axis=1, keepdims=True)  # (q, 1)
    for j in np.flatnonzero(np.count_nonzero(s >= kth, axis=1) > k):  # ties at the k-th: argpartition picks any
        cand = np.flatnonzero(s[j] >= kth[j, 0])
        top_r[j], top_s[j] = top_rows(r[cand] if r.ndim == 1 else r[j, cand], s[j, cand], k)
    return top_s, top_r


def _without(rows: np.ndarray, scores: np.ndarray, skip: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = rows != skip
    return rows[keep][:k], scores[keep][:k]
