"""Surprise, expectation and β of a sample against its class's reference distributions (Hartley et al. §3.3).

With α ``(N,)`` a sample's filter importance (:func:`parasal.core.filter_importance`) and
``c`` its ground-truth label, against :class:`parasal.core.ClassFilterStats` of a
reference set:

* β = (1/N) Σ_n (α_n − µ_cn) (eq. 2);
* *surprise* filters: α_n > P_cn(high) (99.9 in the paper), ranked by the deviation
  α_n − µ_cn, largest first;
* *expectation* filters: α_n < P_cn(low) (0.1) among the filters with µ_cn > (1/N) Σ_m µ_cm
  (so that a filter the class barely uses is not "expected"), ranked by deviation, most
  negative first.

Comparisons are strict; ties in deviation go to the lower filter index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .class_stats import ClassFilterStats

__all__ = ["FilterDeviation", "SampleSurprise", "surprise_expectation", "beta_scores"]


@dataclass(frozen=True)
class FilterDeviation:
    """One surprise or expectation filter of a sample."""

    filter: int  # index within the layer
    alpha: float  # α_n, the sample's importance
    mean: float  # µ_cn over the reference samples of the sample's class
    threshold: float  # P_cn(high) for surprise, P_cn(low) for expectation
    deviation: float  # α_n − µ_cn


@dataclass(frozen=True, eq=False)  # holds an array: compare fields explicitly
class SampleSurprise:
    """β and the ranked surprise and expectation filters of one sample."""

    label: int  # c, the class the sample is compared with
    beta: float  # eq. 2
    alpha: np.ndarray  # (N,) float32
    surprise: list[FilterDeviation]  # largest deviation first
    expectation: list[FilterDeviation]  # most negative deviation first
    mean_of_means: float  # (1/N) Σ_n µ_cn: expectation filters have µ_cn above it


def surprise_expectation(
    alpha,
    labels,
    stats: ClassFilterStats,
    *,
    high: float = 99.9,
    low: float = 0.1,
    top: int | None = None,
) -> list[SampleSurprise]:
    """One :class:`SampleSurprise` per row of ``alpha`` ``(B, N)``, each against the class in ``labels`` ``(B,)``.

    ``high``/``low``: the percentiles (paper: 99.9 and 0.1). ``top``: keep at most that
    many filters in each list (default all). A label whose class has no reference samples
    is a ValueError.
    """
    a, y = _check(alpha, labels, stats)
    if not 0.0 <= low <= high <= 100.0:
        raise ValueError(f"need 0 <= low <= high <= 100, got low={low}, high={high}")
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    mu = stats.mean[y]  # (B, N)
    upper, lower = stats.percentile(high)[y], stats.percentile(low)[y]  # (B, N) each
    deviation = a - mu
    floor = stats.mean.mean(axis=1)[y]  # (B,) mean over filters of µ_cn
    surprising = a > upper
    expected = (a < lower) & (mu > floor[:, None])
    results = []
    for i in range(len(a)):
        rows = (a[i], mu[i], deviation[i])
        results.append(
            SampleSurprise(
                label=int(y[i]),
                beta=float(deviation[i].mean()),
                alpha=a[i].astype(np.float32),
                surprise=_ranked(surprising[i], -deviation[i], *rows, upper[i], top),
                expectation=_ranked(expected[i], deviation[i], *rows, lower[i], top),
                mean_of_means=float(floor[i]),
            )
        )
    return results


def beta_scores(alpha, labels, stats: ClassFilterStats) -> np.ndarray:
    """(B,) float64 β (eq. 2) of every row, vectorised (for whole datasets)."""
    a, y = _check(alpha, labels, stats)
    return (a - stats.mean[y]).mean(axis=1)


def _ranked(mask, key, alpha, mu, deviation, threshold, top) -> list[FilterDeviation]:
    """The filters in ``mask`` ordered by ascending ``key`` (stable: ties keep the lower index first)."""
    index = np.flatnonzero(mask)
    index = index[np.argsort(key[index], kind="stable")]
    if top is not None:
        index = index[:top]
    return [
        FilterDeviation(int(n), float(alpha[n]), float(mu[n]), float(threshold[n]), float(deviation[n]))
        for n in index.tolist()
    ]


def _check(alpha, labels, stats: ClassFilterStats) -> tuple[np.ndarray, np.ndarray]:
    """(B, N) float64 importance and (B,) int64 labels, checked against the statistics."""
    if hasattr(alpha, "detach"):
        alpha = alpha.detach().cpu().numpy()
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    a = np.asarray(alpha, np.float64)
    if a.ndim == 1:
        a = a[None]
    y = np.asarray(labels).reshape(-1)
    if a.ndim != 2 or a.shape[1] != stats.num_filters or len(y) != len(a):
        raise ValueError(f"expected ({len(y)}, {stats.num_filters}) importance for {len(y)} labels, got {a.shape}")
    if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= stats.num_classes)):
        raise ValueError(f"labels must be integers in [0, {stats.num_classes})")
    empty = sorted(set(y.tolist()) & set(np.flatnonzero(stats.counts == 0).tolist()))
    if empty:
        raise ValueError(f"class(es) {empty} have no reference samples: no distribution to compare with")
    return a, y.astype(np.int64)
