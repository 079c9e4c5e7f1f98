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


#: Classes with fewer samples get no per-class Spearman (a rank correlation of 2 points is ±1).
MIN_CLASS_SIZE = 3

#: The scores beta is rank-correlated with. Hartley et al. (§4.2) correlate beta with "the
#: prediction scores both pre- and post-softmax" without saying which class's score; beta is
#: measured against the true class, so its score comes first, the predicted class's beside it
#: (the two differ on misclassified samples only).
SCORES = {
    "pre_softmax": "true class, pre-softmax (logit)",
    "post_softmax": "true class, post-softmax (confidence)",
    "pre_softmax_predicted": "predicted class, pre-softmax (logit)",
    "post_softmax_predicted": "predicted class, post-softmax (confidence)",
}


def beta_summary(
    beta: np.ndarray,
    labels: np.ndarray,
    correct: np.ndarray,
    *,
    scores: dict[str, np.ndarray | None] | None = None,
    bins: int = 40,
) -> dict:
    """beta of correct vs misclassified samples (Hartley et al. §4.2), JSON-ready.

    - per group: count, share with beta < 0 (the paper: 86.6% of misclassified vs 45.9% of
      correct on VGG16), median; None where the group is empty;
    - histogram: counts of each group over shared bin edges of all samples' beta;
    - spearman: for each of SCORES (``scores[key]``, None or absent: not measured), rho of
      beta with that score within each class with at least MIN_CLASS_SIZE samples, averaged
      over those classes (the paper's figure), and pooled over all samples.
    Every input is (N,) in one order; samples without a beta (NaN: no reference samples of
    their class) are counted in ``without_beta`` and left out of everything else.
    """
    beta = np.asarray(beta, dtype=np.float64)
    labels, correct = np.asarray(labels), np.asarray(correct, dtype=bool)
    unknown = set(scores or {}) - set(SCORES)
    if unknown:
        raise ValueError(f"unknown score(s) {sorted(unknown)}; known: {list(SCORES)}")
    measured = np.isfinite(beta)
    unmeasured = int((~measured).sum())
    beta, labels, correct = beta[measured], labels[measured], correct[measured]
    given = {key: (scores or {}).get(key) for key in SCORES}
    given = {k: None if v is None else np.asarray(v, dtype=np.float64)[measured] for k, v in given.items()}
    edges = np.histogram_bin_edges(beta, bins=bins) if beta.size else np.array([0.0, 1.0])
    out = {
        "count": int(beta.size),
        "without_beta": unmeasured,
        "misclassified": _beta_group(beta[~correct]),
        "correct": _beta_group(beta[correct]),
        "histogram": {
            "edges": [float(e) for e in edges],
            "correct": [int(c) for c in np.histogram(beta[correct], bins=edges)[0]],
            "misclassified": [int(c) for c in np.histogram(beta[~correct], bins=edges)[0]],
        },
    }
    out["spearman"] = {key: _spearman(beta, labels, s) for key, s in given.items()}
    out["spearman"]["min_class_size"] = MIN_CLASS_SIZE
    out["spearman"]["per_class"] = _per_class_rows(beta, labels, given)
    return out


def _beta_group(beta: np.ndarray) -> dict:
    if not beta.size:
        return {"count": 0, "share_negative": None, "median": None}
    return {"count": int(beta.size), "share_negative": float((beta < 0).mean()), "median": float(np.median(beta))}


def _spearman(beta: np.ndarray, labels: np.ndarray, score: np.ndarray | None) -> dict | None:
    if score is None:
        return None
    per_class = [_rho(beta[labels == c], score[labels == c]) for c in np.unique(labels)]
    measured = [r for r in per_class if r is not None]
    return {
        "pooled": _rho(beta, score),
        "mean_over_classes": float(np.mean(measured)) if measured else None,
        "classes": len(measured),
    }


def _per_class_rows(beta: np.ndarray, labels: np.ndarray, scores: dict) -> list[dict]:
    rows = []
    for c in np.unique(labels):
        in_class = labels == c
        row = {"label": int(c), "count": int(in_class.sum())}
        for key, s in scores.items():
            row[key] = None if s is None else _rho(beta[in_class], s[in_class])
        rows.append(row)
    return rows


def _rho(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho (scipy), None where it is undefined: too few samples or a constant side."""
    from scipy.stats import spearmanr

    if len(x) < MIN_CLASS_SIZE or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)
