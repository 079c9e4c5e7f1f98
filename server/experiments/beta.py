"""β analysis (Hartley et al. §4.2, Fig. 4): do failures lack expected features?

β (eq. 2, stored in the bundle by ``--reference-data``) of every sampled indexed sample:

* ``negative_beta_fraction`` for misclassified and for correct samples (paper, ImageNet:
  VGG16 86.60 % vs 45.88 %, ResNet50 90.20 % vs 47.67 %);
* per class, Spearman's ρ between β and the true class's pre-softmax score (logit) and
  post-softmax score (probability) over the class's samples (paper: means over classes
  0.998 / 0.782 for VGG16, 0.999 / 0.801 for ResNet50); ``selection`` = the class name,
  ``count`` = the class index; the ``mean_over_classes`` points carry a bootstrap CI over
  classes. The paper does not say which class's score; the ``spearman_*_softmax`` metrics
  use the true class, the one β is computed against, and ``spearman_*_predicted`` the
  predicted class's (for information).
"""

from __future__ import annotations

import numpy as np

from ._common import Context, Option, Outcome, Point, Steps, point, sample_ids
from ._reference import require_reference
from .plots import bars_png

NAME = "beta"
POOL = "all"  # references are drawn from every sample, correct or not
DEFAULT_CAP = 1_000_000  # every sample: β is stored, only one forward pass is needed
OPTIONS: dict[str, Option] = {}


def check_bundle(bundle) -> None:
    require_reference(bundle)


def run(ctx: Context, *, references: int, seed: int, options: dict, progress=None) -> Outcome:
    from scipy.stats import spearmanr

    require_reference(ctx.bundle)
    ids = sample_ids(ctx.ids, references, DEFAULT_CAP, seed, "samples")
    steps = Steps(2, progress, ctx.should_stop)
    rows = ctx.bundle.rows_of(ids)
    logits = ctx.rows(steps.head(0.5))["logits"][rows].astype(np.float64)  # (n, K)
    steps.step("forward pass over the samples")
    beta = np.asarray(ctx.bundle.beta, np.float64)[rows]
    labels = np.asarray(ctx.bundle.labels, np.int64)[rows]
    correct = np.asarray(ctx.bundle.correct, bool)[rows]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    pre, post = logits[np.arange(len(rows)), labels], probs[np.arange(len(rows)), labels]
    pre_top, post_top = logits.max(1), probs.max(1)  # the predicted class's scores (for information)
    known = np.isfinite(beta)
    points = [
        point("misclassified", 0, "negative_beta_fraction", (beta[known & ~correct] < 0).astype(float), seed),
        point("correct", 0, "negative_beta_fraction", (beta[known & correct] < 0).astype(float), seed),
        point("misclassified", 0, "mean_beta", beta[known & ~correct], seed),
        point("correct", 0, "mean_beta", beta[known & correct], seed),
    ]
    names = ctx.bundle.classes or []
    scores = {
        "spearman_pre_softmax": pre,
        "spearman_post_softmax": post,
        "spearman_pre_softmax_predicted": pre_top,
        "spearman_post_softmax_predicted": post_top,
    }
    per_class: dict[str, list[float]] = {metric: [] for metric in scores}
    for c in np.unique(labels[known]).tolist():
        mine = known & (labels == c)
        name = names[c] if c < len(names) else f"class {c}"
        for metric, score in scores.items():
            rho = spearmanr(beta[mine], score[mine]).statistic if mine.sum() > 2 else float("nan")
            rho = float(rho) if np.isfinite(rho) else None
            points.append(Point(name, int(c), metric, rho, None, None, int(mine.sum())))
            if rho is not None:
                per_class[metric].append(rho)
    for metric, values in per_class.items():
        points.append(point("mean_over_classes", 0, metric, values, seed))
    steps.step("β statistics")
    extra = {
        "layer": ctx.bundle.reference.layer,
        "method": ctx.bundle.reference.method,
        "samples_without_beta": int((~known).sum()),
        "score": "the true class's logit (pre-softmax) and probability (post-softmax)",
    }
    shown = [p for p in points if p.selection in ("misclassified", "correct", "mean_over_classes")]
    plot = bars_png(
        shown,
        ["negative_beta_fraction", "spearman_pre_softmax", "spearman_post_softmax"],
        title=f"β over {len(ids)} samples",
    )
    return Outcome(len(ids), points, extra, plot)
