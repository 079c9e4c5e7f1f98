"""Input-saliency masking at dataset level (Levin et al. §3.4, A.9, Fig. 7c).

For each misclassified reference: its input saliency for the top-10 salient filters
(:func:`parasal.core.input_saliency`, the gradient summed over channels), then masked
copies, ``percent`` % of the pixels set to the dataset mean (0 after the bundle's
normalisation): the top pixels by saliency, as many drawn at random (seeded with the
reference id), and the top pixels among the background only (raw intensity 0) or the
foreground only (as many, or all there are): does salient background matter?
Measured per copy: Δ true-class and Δ originally-predicted-class confidence, corrected or
not, and the relative change of the 10 chosen filters' raw saliency (Fig. 7c). Paired
Wilcoxon signed-rank tests: each copy's Δ against 0, and top against random. Also: the
share of the top pixels that are background (raw intensity 0, e.g. Fashion-MNIST's black
corners), and the "mistakes explained by masking": references whose true-class confidence
rose by at least 0.25 (absolute: 25 percentage points) with the top pixels masked.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from parasal.core import filter_saliency, input_saliency

from ._common import Context, Option, Outcome, Steps, mixed_seed, point, sample_ids
from .plots import bars_png

NAME = "masking"
DEFAULT_CAP = 200
OPTIONS = {
    "percent": Option("float", 5.0, "share of pixels masked, in percent (paper: 5)", 0.01, 100.0),
    "top_k": Option("int", 10, "salient filters whose input saliency is used (paper: 10)", 1, 1000),
    "explained_threshold": Option(
        "float", 0.25, "true-class confidence rise that counts a mistake as explained (paper: 25 %)", 0.0, 1.0
    ),
}
#: What is masked: the top pixels, random pixels, and the top pixels within the background
#: (raw intensity 0) or the foreground only, to tell whether salient background matters.
KINDS = ("top", "random", "top_background", "top_foreground")
METRICS = (
    "true_confidence_delta",
    "incorrect_confidence_delta",
    "corrected_fraction",
    "filter_saliency_change",
    "background_share",
)


def _masked(x: torch.Tensor, order: np.ndarray, m: int) -> torch.Tensor:
    """(C, H, W) copy with the pixels ``order[:m]`` (flat H·W indices) at 0 (the dataset mean)."""
    out = x.clone()
    flat = out.view(out.shape[0], -1)
    flat[:, torch.from_numpy(order[:m])] = 0.0
    return out


def run(ctx: Context, *, references: int, seed: int, options: dict, progress=None) -> Outcome:
    ids = sample_ids(ctx.misclassified_ids, references, DEFAULT_CAP, seed, "misclassified samples")
    steps = Steps(len(ids), progress, ctx.should_stop)
    # The normalised value of a raw-0 pixel (background) per channel.
    mean = torch.tensor(ctx.preprocessing.mean, dtype=torch.float32)
    std = torch.tensor(ctx.preprocessing.std, dtype=torch.float32)
    black = (-mean / std)[:, None]  # (C, 1)
    rows = {k: {kind: [] for kind in KINDS} for k in METRICS}
    explained = []
    for sample_id in ids.tolist():
        steps.check()
        x = ctx.image(sample_id)  # (C, H, W)
        label = int(ctx.labels([sample_id])[0])
        sal = input_saliency(ctx.model, x, label, ctx.stats, layout=ctx.layout, top_k=options["top_k"])
        pixels = sal.gradient.sum(0).flatten().cpu().numpy()  # (H·W,)
        m = max(1, int(round(len(pixels) * options["percent"] / 100.0)))
        top = np.argsort(-pixels, kind="stable")
        rand = np.random.default_rng(mixed_seed(seed, "masking", sample_id)).permutation(len(pixels))
        flat = x.view(x.shape[0], -1)
        background = torch.isclose(flat, black).all(0).numpy()  # (H·W,) raw intensity 0 in every channel
        orders = {
            "top": top,
            "random": rand,
            "top_background": top[background[top]],  # the most salient pixels among the background only
            "top_foreground": top[~background[top]],
        }
        batch = torch.stack([x] + [_masked(x, orders[kind], m) for kind in KINDS])  # (1 + 4, C, H, W)
        with torch.no_grad():
            probs = F.softmax(ctx.model(batch).double(), 1)  # (5, K)
        predicted = int(probs[0].argmax())
        labels = torch.full((len(batch),), label, dtype=torch.long)
        raw = filter_saliency(ctx.model, batch, labels, layout=ctx.layout).double()[:, sal.filters]  # (5, 10)
        for j, kind in enumerate(KINDS, start=1):
            order = orders[kind]
            if len(order) == 0:  # no background (or no foreground) pixel: not measured
                for metric in METRICS:
                    rows[metric][kind].append(np.nan)
                continue
            rows["true_confidence_delta"][kind].append(float(probs[j, label] - probs[0, label]))
            rows["incorrect_confidence_delta"][kind].append(float(probs[j, predicted] - probs[0, predicted]))
            rows["corrected_fraction"][kind].append(float(int(probs[j].argmax()) == label))
            change = (raw[j] - raw[0]) / raw[0].clamp_min(1e-12)
            rows["filter_saliency_change"][kind].append(float(change.mean()))
            rows["background_share"][kind].append(float(background[order[:m]].mean()) if len(order) else np.nan)
        rise = float(probs[1, label] - probs[0, label])
        if rise >= options["explained_threshold"]:
            explained.append({"id": sample_id, "label": label, "predicted": predicted, "true_confidence_rise": rise})
        steps.step(f"masked reference {sample_id}")

    percent = options["percent"]
    count = int(round(percent))
    points = [
        point(kind, count, metric, rows[metric][kind], seed, percent=percent) for metric in METRICS for kind in KINDS
    ]
    tests = {metric: _tests(rows[metric]) for metric in ("true_confidence_delta", "incorrect_confidence_delta")}
    pixels_total = int(x[0].numel())
    extra = {
        "percent": percent,
        "top_k": options["top_k"],
        "tests": tests,
        "test": "Wilcoxon signed-rank (two-sided; top vs random paired by reference)",
        "explained_threshold": options["explained_threshold"],
        "explained": explained,
        "explained_count": len(explained),
        "masked_pixels": m,
        "pixels": pixels_total,
        "kinds": "top / random: the top or random pixels of the whole image; top_background / top_foreground: the "
        "most salient pixels among the background (raw 0) or the foreground only (as many, or all there are)",
    }
    plot = bars_png(points, METRICS[:4], title=f"masking {percent:g}% of the pixels: top input saliency vs random")
    return Outcome(len(ids), points, extra, plot)


def _tests(values: dict[str, list[float]]) -> dict:
    """p-values: each masking's Δ against 0 and top against random (paired)."""
    from scipy.stats import wilcoxon

    def p(a, b=None):
        a = np.asarray(a, float)
        d = a if b is None else a - np.asarray(b, float)
        d = d[np.isfinite(d)]
        if len(d) < 2 or np.all(d == 0):
            return None
        return float(wilcoxon(d).pvalue)

    return {
        "top_vs_zero_p": p(values["top"]),
        "random_vs_zero_p": p(values["random"]),
        "top_vs_random_p": p(values["top"], values["random"]),
        "top_background_vs_zero_p": p(values["top_background"]),
        "top_foreground_vs_zero_p": p(values["top_foreground"]),
        "top_background_vs_random_p": p(values["top_background"], values["random"]),
    }
