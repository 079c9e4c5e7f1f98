"""Filter ranking (Hartley et al. §4.1, Table 1, Fig. 3): normalised accuracy as the most
important channels of the last conv layer are zeroed, per importance method.

For every sampled image (all samples, correct or not, as the paper uses the whole
validation set) and every method of :data:`parasal.core.IMPORTANCE_METHODS`, α =
``filter_importance(model, x, label, layer, method)`` ranks the layer's N filters for that
image (descending; ties to the lower index); the top ``j·N/steps`` channels of the layer's
output are zeroed (a forward hook, per image) for j = 0..steps, and the image counts as
correct or not. Normalised accuracy = accuracy / accuracy with nothing removed; AUC = the
trapezoid area under normalised accuracy vs fraction removed (0..1; lower = the method
finds the important filters first). CIs: bootstrap over images of the ratio.

Per image, ``taylor`` and ``taylor_class`` rank identically: ∂L/∂A = −(1/p_c)·∂p_c/∂A for
the cross-entropy L = −log p_c, so |Σ ∂L/∂A ⊙ A| is |Σ ∂p_c/∂A ⊙ A| times 1/p_c, one
positive factor per image. Their curves coincide here; the paper's differ (it does not say
how its rankings were formed beyond "for every image").
"""

from __future__ import annotations

import numpy as np
import torch

from parasal.core import IMPORTANCE_METHODS, filter_importance, last_conv_layer
from parasal.core.importance import conv_module

from ._common import Context, Option, Outcome, Point, Steps, mixed_seed, sample_ids
from .plots import curves_png

NAME = "ranking"
POOL = "all"  # references are drawn from every sample, correct or not
DEFAULT_CAP = 150
OPTIONS = {
    "steps": Option("int", 32, "removal increments over the layer's N filters (paper: 32)", 1, 4096),
    "layer": Option("str", "", "conv layer (default: the last conv to run, as the paper)"),
    "methods": Option("str", ",".join(IMPORTANCE_METHODS), "comma-separated importance methods"),
}


def _correct_after(ctx: Context, module, x, y, order: torch.Tensor, removed: int) -> np.ndarray:
    """(B,) bool: prediction == label with each image's first ``removed`` channels of ``order`` zeroed."""
    mask = torch.ones(order.shape, dtype=x.dtype)
    if removed:
        mask.scatter_(1, order[:, :removed], 0.0)

    def hook(mod, args, output):
        return output * mask[:, :, None, None].to(output.device, output.dtype)

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return (ctx.model(x).argmax(1) == y).cpu().numpy()
    finally:
        handle.remove()


def run(ctx: Context, *, references: int, seed: int, options: dict, progress=None) -> Outcome:
    from scipy.stats import bootstrap

    from ..errors import InvalidArgument

    methods = [m.strip() for m in options["methods"].split(",") if m.strip()]
    unknown = [m for m in methods if m not in IMPORTANCE_METHODS]
    if unknown or not methods:
        raise InvalidArgument(f"option methods: unknown {unknown}; known: {', '.join(IMPORTANCE_METHODS)}")
    ids = sample_ids(ctx.ids, references, DEFAULT_CAP, seed, "samples")
    x = ctx.images(ids)
    y = torch.from_numpy(ctx.labels(ids))
    layer = options["layer"] or last_conv_layer(ctx.model, x[:1])
    try:
        module = conv_module(ctx.model, layer)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    n_filters = module.out_channels
    steps_n = min(options["steps"], n_filters)
    removed = [int(round(j * n_filters / steps_n)) for j in range(steps_n + 1)]
    fractions = np.array(removed, float) / n_filters
    steps = Steps(len(methods) * len(removed), progress, ctx.should_stop)
    points: list[Point] = []
    aucs = {}
    for method in methods:
        steps.check()
        alpha = filter_importance(
            ctx.model, x, y, layer=layer, method=method, seed=mixed_seed(seed, "ranking", method)
        ).cpu()
        order = torch.argsort(-alpha.double(), dim=1, stable=True)  # (B, N) most important first
        correct = np.zeros((len(removed), len(ids)))
        for j, r in enumerate(removed):
            steps.check()
            correct[j] = _correct_after(ctx, module, x, y, order, r)
            steps.step(f"{method}: {r} of {n_filters} channels zeroed")
        base = correct[0]
        if base.sum() == 0:
            raise InvalidArgument("no sampled image is classified correctly: normalised accuracy is undefined")
        rng = np.random.default_rng(mixed_seed(seed, "ranking-ci", method))
        per_image_auc = np.trapezoid(correct, fractions, axis=0)  # (B,)
        for j, r in enumerate(removed):
            mean = correct[j].mean() / base.mean()
            lo, hi = _ratio_ci(correct[j], base, rng, bootstrap)
            points.append(Point(method, r, "normalized_accuracy", float(mean), lo, hi, len(ids)))
        auc = float(per_image_auc.mean() / base.mean())
        lo, hi = _ratio_ci(per_image_auc, base, rng, bootstrap)
        points.append(Point(method, 0, "auc", auc, lo, hi, len(ids), {"channels": n_filters}))
        aucs[method] = auc
    extra = {
        "layer": layer,
        "channels": n_filters,
        "removed": removed,
        "auc": aucs,
        "accuracy_before": float(correct[0].mean()),
        "note": "count of a normalized_accuracy point = channels zeroed; the auc point has count 0; taylor and "
        "taylor_class rank every image identically (the loss gradient is the softmax one times -1/p_c)",
    }
    plot = curves_png(
        [p for p in points if p.metric == "normalized_accuracy"],
        ["normalized_accuracy"],
        title=f"zeroing {layer}'s most important channels first (lower AUC = better ranking)",
        xlabel=f"channels zeroed (of {n_filters})",
    )
    return Outcome(len(ids), points, extra, plot)


def _ratio_ci(numerator: np.ndarray, denominator: np.ndarray, rng, bootstrap) -> tuple[float | None, float | None]:
    """95 % percentile bootstrap CI of mean(numerator) / mean(denominator), images resampled together."""
    if np.all(numerator == numerator[0]) and np.all(denominator == denominator[0]):
        v = float(numerator[0] / denominator[0]) if denominator[0] else None
        return v, v

    def ratio(a, b, axis=-1):
        # a resample without one correct baseline image has no normalised accuracy (NaN),
        # not a 1e12 one; the interval is then reported as not measured (None)
        base = b.mean(axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(base > 0, a.mean(axis=axis) / np.where(base > 0, base, 1.0), np.nan)

    res = bootstrap(
        (numerator, denominator),
        ratio,
        paired=True,
        vectorized=True,
        n_resamples=2000,
        confidence_level=0.95,
        method="percentile",
        random_state=rng,
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (low, high) if np.isfinite(low) and np.isfinite(high) else (None, None)
