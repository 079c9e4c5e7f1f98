"""Nearest samples by three representations, the same exact cosine for each (rows of the bundle).

* ``saliency``: the stored standardized profiles (what the bundle's index searches);
* ``features``: the model's penultimate representation (input of its last ``nn.Linear``);
* ``label_aware``: softmax(logits) minus the one-hot true label, a baseline that knows the
  label and the prediction and nothing else.
"""

from __future__ import annotations

import numpy as np

from parasal.indexer import cosine_top_k, normalize_rows

from ._common import Context

__all__ = ["KINDS", "vectors", "nearest"]

KINDS = ("saliency", "features", "label_aware")


def vectors(ctx: Context, kind: str, progress=None) -> np.ndarray:
    """(N, d) float32 in row order."""
    if kind == "saliency":
        cached = getattr(ctx, "_profiles_all", None)
        if cached is None:
            cached = ctx._profiles_all = np.asarray(ctx.bundle.profiles(ctx.ids), np.float32)
        return cached
    rows = ctx.rows(progress)
    if kind == "features":
        return rows["features"]
    if kind == "label_aware":
        logits = rows["logits"].astype(np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(p)), np.asarray(ctx.bundle.labels, np.int64)] -= 1.0
        return p.astype(np.float32)
    raise ValueError(f"unknown neighbour kind {kind!r}")


def nearest(
    ctx: Context, kind: str, query_rows: np.ndarray, k: int, mask: np.ndarray | None = None
) -> list[np.ndarray]:
    """Per query row: the rows of its ``k`` nearest (cosine; itself excluded), best first."""
    v = vectors(ctx, kind)
    q = normalize_rows(np.asarray(v[query_rows], np.float32))
    found = cosine_top_k(q, v, k, mask=mask, exclude=np.asarray(query_rows, np.int64))
    return [rows for rows, _ in found]
