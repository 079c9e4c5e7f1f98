"""Exact per-(class, filter) distributions of filter importance over a reference set (Hartley et al. §3.2).

For every class ``c`` and filter ``n`` the reference samples of class ``c`` give a
distribution of α_n; surprise and expectation compare a new sample with its percentiles
P_cn(q) and its mean µ_cn. The paper's distributions are skewed, so no normal
approximation: :class:`ClassFilterStats` keeps every value, per class, each filter's
column sorted, and reads percentiles off the sorted columns exactly.

Size: ``M × N`` float32 values for ``M`` reference samples and ``N`` filters: 60,000 ×
128 (Fashion-MNIST's training split, the demo model's last conv) is 31 MB, ImageNet's
1.28 M × 512 is 2.6 GB. Exact storage is reasonable up to roughly 10⁸ values (400 MB);
beyond that a tail-accurate mergeable quantile sketch per (class, filter) (Apache
DataSketches' REQ, high-rank-accuracy mode for P(99.9), low for P(0.1)) would replace the
sorted columns: constant memory per cell, merge by sketch union, but percentiles with a
bounded *rank* error instead of exact values, and a mean kept as a running sum.

Percentiles use numpy's default ("linear", type 7): for sorted values ``v[0..n-1]`` and
``h = (n − 1)·q/100``, ``P(q) = v[⌊h⌋] + (h − ⌊h⌋)·(v[⌊h⌋+1] − v[⌊h⌋])``. Means are taken in
float64 over the sorted values, so they do not depend on the order in which shards
arrived: merging shards in any order gives the same arrays, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ClassFilterStats"]


#: Percentile tables kept per statistics object (the oldest is dropped first).
MAX_CACHED_PERCENTILES = 8


class ClassFilterStats:
    """Count, mean µ_cn and any percentile P_cn(q) for every (class c, filter n); mergeable and serialisable.

    Build with :meth:`of` or :meth:`empty` + :meth:`update`; combine shards or ranks with
    :meth:`merge`; store with :meth:`to_arrays` / :meth:`from_arrays` (plain numpy arrays,
    like :class:`parasal.core.RunningStats`). Classes without reference samples have
    count 0 and NaN means and percentiles.
    """

    def __init__(self, num_classes: int, num_filters: int) -> None:
        if num_classes < 1 or num_filters < 1:
            raise ValueError(f"need at least one class and one filter, got {num_classes} and {num_filters}")
        self.num_classes, self.num_filters = int(num_classes), int(num_filters)
        empty = np.empty((0, self.num_filters), np.float32)
        self._sorted = [empty] * self.num_classes  # per class (n_c, N), each column ascending
        self._pending: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        self._cache: dict = {}  # derived tables, dropped on every update

    @classmethod
    def empty(cls, num_classes: int, num_filters: int) -> ClassFilterStats:
        return cls(num_classes, num_filters)

    @classmethod
    def of(cls, alpha, labels, num_classes: int) -> ClassFilterStats:
        """Statistics of one batch: ``alpha`` ``(B, N)``, ``labels`` ``(B,)`` in ``[0, num_classes)``."""
        values = _as_values(alpha)
        return cls(num_classes, values.shape[1]).update(values, labels)

    def update(self, alpha, labels) -> ClassFilterStats:
        """Add a batch (numpy or torch ``(B, N)`` and ``(B,)``) in place; returns self."""
        values, y = _as_values(alpha, self.num_filters), self._labels(labels)
        if len(y) != len(values):
            raise ValueError(f"{len(values)} rows of importance but {len(y)} labels")
        for c in np.unique(y).tolist():
            self._pending[c].append(values[y == c])
        self._cache.clear()
        return self

    def merge(self, other: ClassFilterStats) -> ClassFilterStats:
        """A new object with both sets of values; neither input is modified."""
        if (other.num_classes, other.num_filters) != (self.num_classes, self.num_filters):
            raise ValueError(
                f"cannot merge stats over {self.num_classes}x{self.num_filters} and "
                f"{other.num_classes}x{other.num_filters} (classes x filters)"
            )
        merged = ClassFilterStats(self.num_classes, self.num_filters)
        for c in range(self.num_classes):
            merged._pending[c] = [self.values(c), other.values(c)]
        return merged

    @property
    def counts(self) -> np.ndarray:
        """(K,) int64 reference samples per class."""
        return np.array([len(self.values(c)) for c in range(self.num_classes)], np.int64)

    def values(self, c: int) -> np.ndarray:
        """(n_c, N) float32 of class ``c``, each column sorted ascending (read-only)."""
        if self._pending[c]:
            stacked = np.concatenate([self._sorted[c], *self._pending[c]])
            stacked.sort(axis=0)
            stacked.flags.writeable = False
            self._sorted[c], self._pending[c] = stacked, []
        return self._sorted[c]

    @property
    def mean(self) -> np.ndarray:
        """(K, N) float64 µ_cn; NaN rows for classes without samples."""
        if "mean" not in self._cache:
            rows = [self._column_mean(self.values(c)) for c in range(self.num_classes)]
            self._cache["mean"] = np.stack(rows)
        return self._cache["mean"]

    def percentile(self, q: float) -> np.ndarray:
        """(K, N) float64 P_cn(q) for one q in [0, 100] (numpy's linear interpolation); NaN for empty classes."""
        q = float(q)
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        key = ("percentile", q)
        table = self._cache.get(key)
        if table is None:
            table = np.stack([_sorted_percentile(self.values(c), q) for c in range(self.num_classes)])
            # Callers choose q (a service passes request values through): keep the most recent
            # few tables, not one (K, N) float64 table per q ever asked. Several threads may be
            # here at once: iterate over a snapshot, tolerate keys already gone, and return
            # the local table (another thread may evict it before we return).
            kept = [k for k in list(self._cache) if isinstance(k, tuple)]
            for old in kept[: max(0, len(kept) - MAX_CACHED_PERCENTILES + 1)]:
                self._cache.pop(old, None)
            self._cache[key] = table
        return table

    def percentiles(self, qs: Sequence[float]) -> np.ndarray:
        """(Q, K, N) float64: :meth:`percentile` for each q."""
        return np.stack([self.percentile(q) for q in qs])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``counts`` (K,) int64 and ``values`` (M, N) float32: each class's sorted columns, class after class."""
        values = [self.values(c) for c in range(self.num_classes)]
        return {"counts": self.counts, "values": np.concatenate(values)}

    @classmethod
    def from_arrays(cls, arrays) -> ClassFilterStats:
        counts = np.asarray(arrays["counts"], np.int64)
        values = np.asarray(arrays["values"], np.float32)
        if values.ndim != 2 or counts.ndim != 1 or counts.min(initial=0) < 0 or counts.sum() != len(values):
            raise ValueError(f"inconsistent arrays: counts sum to {counts.sum()}, values have shape {values.shape}")
        stats = cls(len(counts), values.shape[1])
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for c in range(len(counts)):
            # Re-sorting costs little and makes any stored order (or a hand-made array) valid.
            stats._pending[c] = [values[bounds[c] : bounds[c + 1]]]
        return stats

    def _labels(self, labels) -> np.ndarray:
        if hasattr(labels, "detach"):
            labels = labels.detach().cpu().numpy()
        y = np.asarray(labels).reshape(-1)
        if y.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers, got {y.dtype}")
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got [{y.min()}, {y.max()}]")
        return y.astype(np.int64)

    def _column_mean(self, values: np.ndarray) -> np.ndarray:
        if not len(values):
            return np.full(self.num_filters, np.nan)
        return values.astype(np.float64).mean(axis=0)


def _sorted_percentile(values: np.ndarray, q: float) -> np.ndarray:
    """(N,) numpy-linear percentile of each column of ``values`` (n, N), already sorted; NaN if n = 0."""
    n = len(values)
    if n == 0:
        return np.full(values.shape[1], np.nan)
    h = (n - 1) * q / 100.0
    lo = int(np.floor(h))
    hi = min(lo + 1, n - 1)
    low, high = values[lo].astype(np.float64), values[hi].astype(np.float64)
    return low + (h - lo) * (high - low)


def _as_values(alpha, num_filters: int | None = None) -> np.ndarray:
    if hasattr(alpha, "detach"):
        alpha = alpha.detach().cpu().numpy()
    values = np.asarray(alpha, np.float32)
    if values.ndim != 2 or (num_filters is not None and values.shape[1] != num_filters):
        want = f"(B, {num_filters})" if num_filters is not None else "(B, N)"
        raise ValueError(f"expected importance of shape {want}, got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("importance values must be finite (NaN or inf would corrupt the percentiles)")
    return values
