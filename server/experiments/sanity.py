"""Input-saliency sanity check (Levin et al. A.11; Adebayo et al.'s cascading model randomization).

The model's top-level stages that hold parameters (for demo-fashion: stem, layer1..3, fc)
are re-initialised cumulatively from the output back to the input (``reset_parameters()``
of every module in the stage, seeded), and for each misclassified reference the input
saliency heatmap of the randomized model is compared with the original one: Spearman rank
correlation and SSIM (scikit-image, data range 1) over the pixels. A saliency method that
depends on the model gives correlations that fall as stages are randomized. The bundle's
standardization statistics are kept (the method as served would use them).
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import torch

from parasal.core import input_saliency

from ._common import Context, Option, Outcome, Steps, mixed_seed, point, sample_ids
from .plots import curves_png

NAME = "sanity"
DEFAULT_CAP = 100
OPTIONS = {"top_k": Option("int", 10, "salient filters whose input saliency is compared (paper: 10)", 1, 1000)}
METRICS = ("spearman", "ssim")


_GLOBAL_RNG = threading.Lock()


def stages(model: torch.nn.Module) -> list[str]:
    """Names of the top-level children holding parameters, input to output (registration order)."""
    return [name for name, child in model.named_children() if any(True for _ in child.parameters())]


def randomized(model: torch.nn.Module, names: list[str], seed: int) -> torch.nn.Module:
    """A copy with every module under the named children re-initialised (seeded)."""
    out = copy.deepcopy(model)
    children = dict(out.named_children())
    # reset_parameters() draws from torch's global generator: seed it inside fork_rng, under a
    # lock, so that concurrent operations in the server neither disturb this draw nor get reseeded.
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            for module in children[name].modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                if hasattr(module, "reset_running_stats"):
                    module.reset_running_stats()
    return out.eval()


def run(ctx: Context, *, references: int, seed: int, options: dict, progress=None) -> Outcome:
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    ids = sample_ids(ctx.misclassified_ids, references, DEFAULT_CAP, seed, "misclassified samples")
    names = stages(ctx.model)
    cascade = [names[len(names) - i :] for i in range(1, len(names) + 1)]  # output-most first, growing
    models = [randomized(ctx.model, chosen, mixed_seed(seed, "sanity", i)) for i, chosen in enumerate(cascade)]
    steps = Steps(len(ids), progress, ctx.should_stop)
    values = {(i, m): [] for i in range(len(cascade)) for m in METRICS}
    for sample_id in ids.tolist():
        steps.check()
        x, label = ctx.image(sample_id), int(ctx.labels([sample_id])[0])
        top_k = options["top_k"]
        original = input_saliency(ctx.model, x, label, ctx.stats, layout=ctx.layout, top_k=top_k).heatmap
        for i, model in enumerate(models):
            heat = input_saliency(model, x, label, ctx.stats, layout=ctx.layout, top_k=top_k).heatmap
            rho = spearmanr(original.ravel(), heat.ravel()).statistic
            values[(i, "spearman")].append(float(rho) if np.isfinite(rho) else np.nan)
            values[(i, "ssim")].append(float(structural_similarity(original, heat, data_range=1.0)))
        steps.step(f"randomized cascade on reference {sample_id}")
    points = [
        point("+".join(reversed(cascade[i])), i + 1, metric, values[(i, metric)], seed)
        for i in range(len(cascade))
        for metric in METRICS
    ]
    extra = {"stages": names, "order": "cascading from the output: count = stages randomized"}
    plot = curves_png(
        [p.__class__("cascade", p.count, p.metric, p.mean, p.ci_low, p.ci_high, p.n) for p in points],
        METRICS,
        title="input saliency vs cascading randomization (1 = identical)",
        xlabel="stages randomized from the output",
    )
    return Outcome(len(ids), points, extra, plot)
