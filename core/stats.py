"""Streaming, mergeable standardization statistics for saliency profiles.

Welford/Chan in float64: each shard keeps (count, mean, M2); merging two shards with
Chan's formula gives the same statistics as one pass over both, which is what lets the
indexer compute shards independently (and on several ranks) and combine them later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: σ at or below this is treated as 1, as in the paper's code: a filter whose saliency
#: never varies over the holdout set (e.g. a dead filter) keeps z = s - µ instead of
#: dividing by ~0 and blowing up.
SIGMA_FLOOR = 1e-14


@dataclass
class RunningStats:
    """Per-filter count, mean and M2 (sum of squared deviations), float64."""

    count: int
    mean: np.ndarray  # (F,) float64
    m2: np.ndarray  # (F,) float64

    @classmethod
    def empty(cls, num_filters: int) -> RunningStats:
        return cls(0, np.zeros(num_filters, np.float64), np.zeros(num_filters, np.float64))

    @classmethod
    def of(cls, batch) -> RunningStats:
        """Statistics of one batch ``(B, F)`` (numpy or torch)."""
        x = _as_f64(batch)
        mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
        return cls(len(x), mean, ((x - mean) ** 2).sum(axis=0))

    @property
    def num_filters(self) -> int:
        return int(self.mean.shape[0])

    def update(self, batch) -> RunningStats:
        """Fold a batch ``(B, F)`` into these statistics, in place; returns self."""
        merged = self.merge(RunningStats.of(batch))
        self.count, self.mean, self.m2 = merged.count, merged.mean, merged.m2
        return self

    def merge(self, other: RunningStats) -> RunningStats:
        """Chan et al.'s parallel combination; neither input is modified."""
        if other.num_filters != self.num_filters:
            raise ValueError(f"cannot merge stats over {self.num_filters} and {other.num_filters} filters")
        n = self.count + other.count
        if n == 0:
            return RunningStats.empty(self.num_filters)
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        return RunningStats(n, mean, m2)

    @property
    def var(self) -> np.ndarray:
        """Unbiased variance (ddof=1, like ``torch.std``'s default used by the paper's code)."""
        if self.count < 2:
            return np.zeros_like(self.mean)
        return self.m2 / (self.count - 1)

    @property
    def std(self) -> np.ndarray:
        """σ with the floor applied: entries ≤ SIGMA_FLOOR are 1."""
        sigma = np.sqrt(self.var)
        return np.where(sigma <= SIGMA_FLOOR, 1.0, sigma)

    def standardize(self, profiles):
        """z = (s − µ) / σ for ``(B, F)`` or ``(F,)`` profiles; keeps numpy/torch and dtype."""
        return standardize(profiles, self.mean, self.std)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"count": np.array(self.count, np.int64), "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_arrays(cls, arrays) -> RunningStats:
        return cls(int(arrays["count"]), np.asarray(arrays["mean"], np.float64), np.asarray(arrays["m2"], np.float64))


def standardize(profiles, mean: np.ndarray, std: np.ndarray):
    """(s − µ) / σ, computed in float64 and returned in the input's type and dtype."""
    try:
        import torch
    except ImportError:  # pragma: no cover - core always has torch, but keep numpy usable alone
        torch = None
    if torch is not None and isinstance(profiles, torch.Tensor):
        mu = torch.as_tensor(mean, dtype=torch.float64, device=profiles.device)
        sd = torch.as_tensor(std, dtype=torch.float64, device=profiles.device)
        return ((profiles.double() - mu) / sd).to(profiles.dtype)
    x = np.asarray(profiles)
    return ((x.astype(np.float64) - mean) / std).astype(x.dtype if x.dtype.kind == "f" else np.float32)


def _as_f64(batch) -> np.ndarray:
    if hasattr(batch, "detach"):
        batch = batch.detach().cpu().numpy()
    x = np.asarray(batch, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected profiles of shape (B, F), got {x.shape}")
    return x
