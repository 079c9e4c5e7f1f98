"""Search semantics over one opened bundle: exact, FAISS candidates, row filters, layer
subsets, re-ranking. ``Bundle.search`` delegates here; reading the files is bundle.py's job.

Cosine similarity; queries are *standardized* profiles, normalised here:

- no filter: the FAISS index (exact for the default ``Flat``). On CPU the exact ``Flat``
  index is scanned as one matrix product over its stored vectors for all queries at once
  (``scoring.flat_scan``; FAISS scans once per query below 20 queries), row filters
  included. Approximate index types fetch max(4k, 64) candidates and re-score them
  exactly against the stored float16 profiles (``rerank=``), so their similarities are
  true cosines;
- ``allowed`` (bool per row) and/or ``exclude_ids``: the index restricted to those rows
  with a FAISS ID selector; any query that gets fewer than ``min(k, #allowed)`` results
  that way (approximate indexes, GPU) is answered by exact search over the allowed rows;
- ``layers``: exact search over only those layers' dimensions of the stored float16
  profiles, each row renormalised over the subset (paper Fig. 5: shallow vs deep).

Each query's result is a list of ``(sample id, cosine)``, best first, of exactly
``min(k, #allowed rows)`` entries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from parasal.core import FilterLayout

from . import faiss_index
from .scoring import cosine_top_k, exact_scores, flat_scan, inner_index, normalize_rows, row_selector_params, top_rows

__all__ = ["BundleSearcher"]

Results = list[tuple[np.ndarray, np.ndarray]]  # per query: (rows, scores), best first


class BundleSearcher:
    """Searches one generation's rows: its FAISS index (a GPU clone when there is one, the
    exact ``Flat`` vectors as a tensor when there are those) and its stored profiles."""

    def __init__(
        self,
        ids: np.ndarray,
        layout: FilterLayout,
        profiles: np.ndarray,
        index,
        *,
        index_type: str,
        gpu=None,
        flat=None,
    ):
        self.ids = ids  # (N,) int64 ascending sample ids, row order
        self.layout = layout
        self.profiles = profiles  # (N, F) float16 standardized, read-only memmap
        self.index = index  # CPU IndexIDMap2, internal position = row
        self.gpu = gpu  # faiss_index.GpuSearcher or None
        self.flat = flat  # (N, F) float32 tensor of an exact Flat index's vectors, or None
        self.is_exact_index = index_type == "Flat"

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        layers: Sequence[str] | None = None,
        exclude_ids: Sequence[int] | None = None,
        rerank: int | None = None,
    ) -> list[list[tuple[int, float]]]:
        """See ``Bundle.search`` and the module docstring."""
        q = self._check_queries(queries, k)
        mask = self._row_mask(allowed, exclude_ids)
        available = len(self.ids) if mask is None else int(mask.sum())
        kk = min(int(k), available)
        if kk == 0 or len(q) == 0:
            return [[] for _ in range(len(q))]
        if layers is not None:
            cols = self._layer_slices(layers)
            qs = normalize_rows(np.concatenate([q[:, s] for s in cols], axis=1))
            return self._as_ids(cosine_top_k(qs, self.profiles, kk, mask=mask, cols=cols))
        qn = normalize_rows(q)
        if rerank is None:
            rerank = 0 if self.is_exact_index else max(4 * kk, 64)
        fetch = min(available, max(kk, int(rerank)))
        cand = self._candidates(qn, fetch, mask)  # [(rows, scores)] per query, or None
        if cand is None:
            return self._as_ids(cosine_top_k(qn, self.profiles, kk, mask=mask))
        if rerank and not self.is_exact_index:
            cand = [exact_scores(qn[j], rows, self.profiles) for j, (rows, _) in enumerate(cand)]
        results = [top_rows(rows, scores, kk) for rows, scores in cand]
        short = [j for j, (rows, _) in enumerate(results) if len(rows) < kk]  # an approximate index came up short
        if short:
            fill = cosine_top_k(qn[short], self.profiles, kk, mask=mask)
            for j, r in zip(short, fill):
                results[j] = r
        return self._as_ids(results)

    def _check_queries(self, queries: np.ndarray, k: int) -> np.ndarray:
        q = np.array(queries, dtype=np.float32, copy=True)
        if q.ndim == 1:
            q = q[None]
        f = self.layout.num_filters
        if q.ndim != 2 or q.shape[1] != f:
            raise ValueError(f"queries must have shape (Q, {f}), got {np.shape(queries)}")
        if not np.isfinite(q).all():
            raise ValueError("queries contain NaN or infinite values")
        if k < 0:
            raise ValueError("k must be non-negative")
        return q  # (Q, F)

    def _row_mask(self, allowed: np.ndarray | None, exclude_ids: Sequence[int] | None) -> np.ndarray | None:
        """(N,) bool rows a search may return, or None for all of them."""
        n = len(self.ids)
        mask = None
        if allowed is not None:
            allowed = np.asarray(allowed)
            if allowed.dtype != np.bool_ or allowed.shape != (n,):
                raise ValueError(f"allowed must be a bool array of shape ({n},), got {allowed.dtype} {allowed.shape}")
            mask = allowed.copy()
        if exclude_ids is not None and len(exclude_ids):
            ex = np.asarray(list(exclude_ids), dtype=np.int64)
            rows = np.searchsorted(self.ids, ex)
            hit = rows < n
            hit[hit] = self.ids[rows[hit]] == ex[hit]
            if mask is None:
                mask = np.ones(n, bool)
            mask[rows[hit]] = False
        if mask is not None and mask.all():
            mask = None
        return mask

    def _candidates(self, qn: np.ndarray, fetch: int, mask: np.ndarray | None) -> Results | None:
        """Up to ``fetch`` (rows, scores) per query: one matrix product over an exact Flat
        index on CPU, else the FAISS index; None when the index cannot apply the row filter
        (the caller then searches exactly)."""
        if self.gpu is None and self.flat is not None:
            return flat_scan(self.flat, qn, fetch, mask)
        if mask is None:
            if self.gpu is not None and fetch <= faiss_index.GPU_MAX_K:
                D, I = self.gpu.search(qn, fetch)  # sample ids
                R = np.where(I >= 0, np.searchsorted(self.ids, np.maximum(I, 0)), -1)
            else:
                D, R = inner_index(self.index).search(qn, fetch)  # row positions
        else:
            params, keep = row_selector_params(self.index, mask)
            if params is None:
                return None
            D, R = inner_index(self.index).search(qn, fetch, params=params)
            del keep
        out = []
        for d, r in zip(D, R):
            ok = r >= 0
            if mask is not None:
                ok[ok] = mask[r[ok]]  # the selector is authoritative; this guards against index quirks
            out.append((r[ok].astype(np.int64), d[ok].astype(np.float32)))
        return out

    def _as_ids(self, results: Results) -> list[list[tuple[int, float]]]:
        return [[(int(self.ids[r]), float(s)) for r, s in zip(rows, scores)] for rows, scores in results]

    def _layer_slices(self, layers: Sequence[str]) -> list[slice]:
        if isinstance(layers, str):
            layers = [layers]
        if not layers:
            raise ValueError("layers must name at least one layer")
        try:
            wanted = {self.layout.layer(name).name for name in layers}
        except KeyError as e:
            raise ValueError(str(e.args[0])) from e
        return [slice(s.offset, s.stop) for s in self.layout if s.name in wanted]
