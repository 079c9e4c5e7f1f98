"""Dataset-level neighbor metrics: do samples close in saliency space fail alike?

The paper's A.2 check: for correctly classified samples, the share of their 10 nearest
neighbors that are also correct (89.0% on ImageNet), against 10.8% for misclassified
samples. We compute it for saliency profiles and, as the baseline the paper compares
against (A.4), for penultimate-layer features of the same model.
"""

from __future__ import annotations

import numpy as np


def cosine_knn(features: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """(N, k) indices of each row's k nearest rows by cosine similarity, excluding itself.

    Exact brute force in bounded float32 chunks (``parasal.indexer.cosine_top_k``), best
    first, equal similarities lower row first; ``chunk`` is no longer used (kept for callers).
    """
    from parasal.indexer import cosine_top_k, normalize_rows

    x = np.asarray(features, dtype=np.float32)
    n = len(x)
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} samples, got {k}")
    found = cosine_top_k(normalize_rows(x), x, k, exclude=np.arange(n))  # x: normalised chunk by chunk
    return np.stack([rows for rows, _ in found])  # (N, k) int64


def neighbor_agreement(features: np.ndarray, labels: np.ndarray, predicted: np.ndarray, k: int = 10) -> dict:
    """Shares of neighbors that fail (or succeed) like each sample, averaged per group.

    - misclassified samples: mean share of neighbors also misclassified, and mean share with
      the same (true, predicted) pair in either order;
    - correctly classified samples: mean share of neighbors that are correct.
    """
    labels = np.asarray(labels)
    predicted = np.asarray(predicted)
    nn_idx = cosine_knn(features, k)  # (N, k)
    correct = labels == predicted
    nl, np_ = labels[nn_idx], predicted[nn_idx]  # (N, k)
    same_pair = ((nl == labels[:, None]) & (np_ == predicted[:, None])) | (
        (nl == predicted[:, None]) & (np_ == labels[:, None])
    )
    same_pair &= nl != np_  # a pair is a confusion: a correct neighbor never matches
    wrong = ~correct
    return {
        "k": k,
        "misclassified": {
            "count": int(wrong.sum()),
            "neighbors_misclassified": _mean(~correct[nn_idx][wrong]),
            "neighbors_same_confusion_pair": _mean(same_pair[wrong]),
        },
        "correct": {
            "count": int(correct.sum()),
            "neighbors_correct": _mean(correct[nn_idx][correct]),
        },
    }


def _mean(rows: np.ndarray) -> float | None:
    return float(rows.mean()) if rows.size else None


def confusion_pairs(labels: np.ndarray, predicted: np.ndarray, top: int = 10) -> list[tuple[int, int, int]]:
    """The most frequent (true, predicted) pairs among misclassified samples, with counts."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    wrong = labels != predicted
    pairs, counts = np.unique(np.stack([labels[wrong], predicted[wrong]], axis=1), axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    return [(int(pairs[i, 0]), int(pairs[i, 1]), int(counts[i])) for i in order]
