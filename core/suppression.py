"""Suppressing surprise (Hartley et al. §4.5): blank the superpixels that drive a sample's most surprising filter.

For one (usually misclassified) image with ground-truth label ``c`` and a filter ``n`` (its
most surprising one, :func:`parasal.core.surprise_expectation`), for every superpixel
count ``S`` in ``segment_counts`` the superpixels are scored as in
:func:`parasal.core.filter_region` (input gradient through filter ``n`` only), and for every
``b`` in ``blank_counts`` the ``b`` best are set to ``fill`` (0: the per-channel dataset mean
once the image is normalised, as in the paper). The same sweep with vanilla backprop (all
the layer's filters: the paper's baseline) gives the ``"vanilla"`` rows. Every variant goes
through the model in one batched forward pass per ``S``; a row says whether the prediction
became ``c``.

The class whose score is backpropagated is the model's prediction for the original image
(what the surprising filter pushes towards; the paper does not say which class it used).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._state import eval_mode, model_device, model_dtype
from .evaluation import Cancelled
from .importance import last_conv_layer
from .regions import filter_region

__all__ = ["SuppressionRow", "SuppressionReport", "suppress_surprise", "DEFAULT_SEGMENT_COUNTS", "DEFAULT_BLANK_COUNTS"]

#: Superpixel counts and numbers of superpixels blanked that the sweep tries by default.
DEFAULT_SEGMENT_COUNTS = (25, 50, 100)
DEFAULT_BLANK_COUNTS = (1, 2, 3, 5)
#: The two ways of scoring superpixels: through the filter only, or through every filter.
SUPPRESSION_METHODS = ("surprise", "vanilla")


@dataclass(frozen=True)
class SuppressionRow:
    method: str  # "surprise" (through the filter) or "vanilla" (through every filter)
    segments: int  # superpixels asked of SLIC
    blanked: int  # superpixels set to ``fill``
    pixels: int  # pixels they cover
    predicted: int  # the model's class for the blanked image
    label_confidence: float  # softmax probability of the label
    fixed: bool  # predicted == label


@dataclass(frozen=True)
class SuppressionReport:
    label: int
    predicted: int  # for the original image
    layer: str
    filter: int
    rows: list[SuppressionRow]

    def first_fix(self, method: str = "surprise") -> SuppressionRow | None:
        """The fixing row of ``method`` that blanks the fewest pixels (None if none fixes)."""
        fixes = [r for r in self.rows if r.method == method and r.fixed]
        return min(fixes, key=lambda r: (r.pixels, r.segments, r.blanked)) if fixes else None


def suppress_surprise(
    model: nn.Module,
    image: torch.Tensor,
    label: int,
    filter: int,
    *,
    layer: str | None = None,
    segment_counts: Sequence[int] = DEFAULT_SEGMENT_COUNTS,
    blank_counts: Sequence[int] = DEFAULT_BLANK_COUNTS,
    display_image=None,
    fill: float = 0.0,
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SuppressionReport:
    """Sweep ``segment_counts`` × ``blank_counts`` for both methods on ``image`` ((C, H, W) or (1, C, H, W)).

    ``progress(fraction, message)`` after each superpixel count; ``should_stop()`` polled
    before each, raising :class:`parasal.core.Cancelled`. The model is left as it was.
    """
    x = (image[None] if image.dim() == 3 else image).detach().to(model_device(model), model_dtype(model))
    name = last_conv_layer(model, x) if layer is None else layer
    with eval_mode(model), torch.no_grad():
        predicted = int(model(x).argmax(1)[0])
    rows: list[SuppressionRow] = []
    for done, segments in enumerate(segment_counts):
        if should_stop is not None and should_stop():
            raise Cancelled(f"suppression cancelled after {done} of {len(segment_counts)} superpixel counts")
        for method, chosen in (("surprise", filter), ("vanilla", None)):
            region = filter_region(
                model, x, chosen, target=predicted, layer=name, segments=segments, display_image=display_image
            )
            rows += _sweep(model, x, int(label), method, segments, region.scores, region.segments, blank_counts, fill)
        if progress is not None:
            progress((done + 1) / len(segment_counts), f"{segments} superpixels")
    return SuppressionReport(int(label), predicted, name, int(filter), rows)


def _sweep(model, x, label, method, segments, scores, labels, blank_counts, fill) -> list[SuppressionRow]:
    """One batched forward pass over the images with the ``b`` best superpixels blanked, for each ``b``."""
    order = np.argsort(-scores, kind="stable")  # best first, ties to the lower label
    variants, covered = [], []
    for b in blank_counts:
        mask = np.isin(labels, order[: int(b)])  # (H, W)
        blanked = x[0].clone()
        blanked[:, torch.from_numpy(mask).to(x.device)] = fill
        variants.append(blanked)
        covered.append(int(mask.sum()))
    with eval_mode(model), torch.no_grad():
        probs = F.softmax(model(torch.stack(variants)).double(), 1)  # (V, K)
    return [
        SuppressionRow(method, int(segments), int(b), n, int(p.argmax()), float(p[label]), int(p.argmax()) == label)
        for b, n, p in zip(blank_counts, covered, probs)
    ]
