"""Neighbour statistics (Levin et al. A.2 and §3.2) with the same baselines as the fine-tuning controls.

For sampled correct and misclassified references, the ``k`` nearest samples of the whole
bundle (itself excluded) by saliency profile, by penultimate features, by the label-aware
baseline (softmax minus one-hot) and ``k`` random samples (seeded per reference):

* ``correct_fraction``: the share of neighbours classified correctly (paper, ImageNet:
  89.0 % for correct references, 10.8 % for misclassified ones), split by ``reference``
  (``correct`` / ``misclassified``) in the metric name;
* ``same_pair_fraction`` (misclassified references): neighbours misclassified within the
  reference's confusion pair, either direction (§3.2: "the same pair ... possibly in
  reverse order");
* ``same_label_fraction``: neighbours with the reference's true label.

What saliency adds beyond the label is the gap between the saliency and label-aware rows.
"""

from __future__ import annotations

import numpy as np

from . import _neighbors
from ._common import Context, Option, Outcome, Steps, mixed_seed, point, sample_ids
from .plots import bars_png

NAME = "neighbors"
DEFAULT_CAP = 1000  # per reference kind (correct, misclassified)
POOL = "misclassified and correctly classified"  # references of both kinds (service.check_references)
OPTIONS = {"k": Option("int", 10, "neighbours per reference (paper: 10)", 1, 1000)}
SELECTIONS = (*_neighbors.KINDS, "random")


def run(ctx: Context, *, references: int, seed: int, options: dict, progress=None) -> Outcome:
    k = options["k"]
    correct = np.asarray(ctx.bundle.correct, bool)
    labels = np.asarray(ctx.bundle.labels, np.int64)
    predicted = np.asarray(ctx.bundle.predicted, np.int64)
    wrong_ids = sample_ids(ctx.misclassified_ids, references, DEFAULT_CAP, seed, "misclassified samples")
    right_ids = sample_ids(ctx.correct_ids, references, DEFAULT_CAP, seed, "correctly classified samples")
    steps = Steps(len(SELECTIONS) + 1, progress, ctx.should_stop)
    _neighbors.vectors(ctx, "features", steps.head(1 / steps.total))  # the forward pass, once (shared)
    steps.step("features and logits of every sample")
    n = len(labels)
    values: dict[tuple[str, str], list[float]] = {}
    for kind in SELECTIONS:
        steps.check()
        for ref_kind, ids in (("correct", right_ids), ("misclassified", wrong_ids)):
            rows = ctx.bundle.rows_of(ids)
            if kind == "random":
                found = []
                for r, i in zip(rows.tolist(), ids.tolist()):
                    rng = np.random.default_rng(mixed_seed(seed, "neighbors-random", i))
                    pick = rng.choice(n - 1, size=min(k, n - 1), replace=False)
                    found.append(pick + (pick >= r))  # skip the reference's own row
            else:
                found = _neighbors.nearest(ctx, kind, rows, k)
            for r, nb in zip(rows.tolist(), found):
                if len(nb) == 0:
                    continue
                values.setdefault((kind, f"correct_fraction_{ref_kind}"), []).append(correct[nb].mean())
                values.setdefault((kind, f"same_label_fraction_{ref_kind}"), []).append(
                    (labels[nb] == labels[r]).mean()
                )
                if ref_kind == "misclassified":
                    pair = {labels[r], predicted[r]}
                    same = [(not correct[j]) and {labels[j], predicted[j]} == pair for j in nb.tolist()]
                    values.setdefault((kind, "same_pair_fraction_misclassified"), []).append(float(np.mean(same)))
        steps.step(f"{kind} neighbours")
    points = [point(kind, k, metric, v, seed) for (kind, metric), v in values.items()]
    extra = {
        "k": k,
        "correct_references": len(right_ids),
        "misclassified_references": len(wrong_ids),
        "pool": "every sample of the bundle (the reference excluded)",
    }
    metrics = [
        "correct_fraction_correct",
        "correct_fraction_misclassified",
        "same_pair_fraction_misclassified",
        "same_label_fraction_misclassified",
    ]
    plot = bars_png(points, metrics, title=f"{k} nearest neighbours: saliency vs baselines")
    return Outcome(len(right_ids) + len(wrong_ids), points, extra, plot)
