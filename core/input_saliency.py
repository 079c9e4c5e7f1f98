"""Input-space saliency (§2.2, B.2): which pixels make the chosen filters salient.

For one image x with label y, ŝ(x) is its standardized filter saliency profile computed
differentiably (``autograd.grad`` of the cross-entropy w.r.t. each filtered layer's
weight with ``create_graph=True``, |g| averaged per filter, the definition of
:mod:`parasal.core.reference`, then (ŝ − µ)/σ with the bundle's statistics). A set F of
filters (given, or the ``top_k`` most salient) is boosted: s'_F = ŝ with the entries in F
multiplied by k (``boost``, 100 in the paper), held constant. The input saliency is
M_F = |∇ₓ D_C(ŝ(x), s'_F)|, D_C the cosine distance: the pixels that most move the profile
towards "even more of the chosen filters".
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._images import as_rgb_uint8
from ._state import eval_mode
from .layout import FilterLayout, filter_layout
from .ranking import top_k_filters
from .stats import RunningStats

__all__ = ["InputSaliency", "input_saliency", "saliency_heatmap", "heatmap_overlay_png", "HEATMAP_BLUR_SIGMA"]

#: σ of the 3x3 Gaussian blur of the heatmap: 1/√(2 ln 2) ≈ 0.8493. B.2 says "Gaussian Blur
#: with (3, 3) kernel"; the paper's code calls ``cv2.GaussianBlur(m, (3, 3), 0)``, and with
#: σ = 0 and a kernel of 3 OpenCV uses its fixed binomial kernel [1/4, 1/2, 1/4], which is
#: exactly a Gaussian sampled at -1, 0, 1 with this σ (e^(−1/(2σ²)) = 1/2).
HEATMAP_BLUR_SIGMA = 1.0 / math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class InputSaliency:
    """Result of :func:`input_saliency` for one image."""

    gradient: torch.Tensor  # (C, H, W) |∇ₓ D_C(ŝ(x), s'_F)|, detached, the model's dtype and device
    heatmap: np.ndarray  # (H, W) float32 in [0, 1]: see saliency_heatmap
    filters: list[int]  # F, profile indices, most salient first
    profile: torch.Tensor  # (F_total,) standardized profile ŝ(x), detached
    predicted: int  # the model's class for x


def input_saliency(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    stats: RunningStats,
    *,
    layout: FilterLayout | None = None,
    filters: Sequence[int] | None = None,
    top_k: int = 10,
    boost: float = 100.0,
) -> InputSaliency:
    """Input-space saliency of ``image`` (``(C, H, W)`` or ``(1, C, H, W)``) for label ``target``.

    ``filters`` (profile indices) chooses F explicitly; otherwise F is the ``top_k`` most
    salient filters of ŝ(x) (B.2: 10). The model runs in eval mode and is left as it was:
    mode restored, no ``.grad`` written (only ``autograd.grad``), no hooks. Weights with
    ``requires_grad=False`` are switched on for the call and switched back.
    """
    layout = layout if layout is not None else filter_layout(model)
    if stats.num_filters != layout.num_filters:
        raise ValueError(f"stats cover {stats.num_filters} filters, the layout has {layout.num_filters}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3:
        raise ValueError(f"expected one image (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
    if top_k < 1 and filters is None:
        raise ValueError(f"top_k must be >= 1, got {top_k}")

    modules = dict(model.named_modules())
    weights = [modules[span.name].weight for span in layout]
    param = weights[0]
    x = image.detach().to(param.device, param.dtype)[None].requires_grad_(True)  # (1, C, H, W)
    y = torch.tensor([int(target)], device=param.device)
    frozen = [w for w in weights if not w.requires_grad]
    try:
        for w in frozen:
            w.requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            logits = model(x)
            if not 0 <= int(target) < logits.shape[1]:
                raise ValueError(f"target {target} outside the model's {logits.shape[1]} classes")
            loss = F.cross_entropy(logits, y)
            grads = torch.autograd.grad(loss, weights, create_graph=True)
            raw = torch.cat([g.abs().flatten(1).mean(1) for g in grads])  # (F,)
            mean = torch.as_tensor(stats.mean, dtype=raw.dtype, device=raw.device)
            std = torch.as_tensor(stats.std, dtype=raw.dtype, device=raw.device)
            profile = (raw - mean) / std  # ŝ(x), differentiable in x
            chosen = _choose(profile.detach(), filters, top_k)
            boosted = profile.detach().clone()
            boosted[chosen] *= boost  # s'_F, a constant
            distance = 1 - F.cosine_similarity(profile[None], boosted[None])[0]
            (gradient,) = torch.autograd.grad(distance, x)
    finally:
        for w in frozen:
            w.requires_grad_(False)

    gradient = gradient[0].abs().detach()
    return InputSaliency(
        gradient=gradient,
        heatmap=saliency_heatmap(gradient),
        filters=chosen,
        profile=profile.detach(),
        predicted=int(logits.argmax(1)[0]),
    )


def _choose(profile: torch.Tensor, filters: Sequence[int] | None, top_k: int) -> list[int]:
    """F as profile indices, most salient first (ties: lower index first)."""
    n = len(profile)
    if filters is None:
        candidates = list(range(n))
        count = min(top_k, n)
    else:
        candidates = sorted({int(f) for f in filters})
        bad = [f for f in candidates if not 0 <= f < n]
        if bad:
            raise ValueError(f"filter indices {bad[:5]} outside [0, {n})")
        if not candidates:
            raise ValueError("filters is empty")
        count = len(candidates)
    order, _ = top_k_filters(profile[candidates].double(), count)
    return [candidates[i] for i in order.tolist()]


def saliency_heatmap(
    gradient: torch.Tensor | np.ndarray,
    *,
    low: float = 90.0,
    high: float = 99.0,
    blur_sigma: float = HEATMAP_BLUR_SIGMA,
) -> np.ndarray:
    """(H, W) float32 in [0, 1] from a (C, H, W) input gradient, as in B.2 and the paper's code.

    max |g| over channels; clipped to its [``low``, ``high``] percentiles and rescaled
    linearly to [0, 1]; then a 3x3 Gaussian blur (σ = ``blur_sigma``, edges reflected
    without repeating the border pixel like OpenCV's default; ``blur_sigma=0``: no blur).
    If the two percentiles coincide the maximum is used as the upper bound instead, and an
    all-constant map gives zeros.
    """
    g = (
        gradient.detach().cpu().double().numpy()
        if isinstance(gradient, torch.Tensor)
        else np.asarray(gradient, np.float64)
    )
    if g.ndim == 2:
        g = g[None]
    if g.ndim != 3:
        raise ValueError(f"expected a (C, H, W) gradient, got shape {g.shape}")
    m = np.abs(g).max(axis=0)  # (H, W)
    lo, hi = np.percentile(m, [low, high])
    if hi <= lo:
        hi = m.max()
    if hi <= lo:
        return np.zeros(m.shape, np.float32)
    m = (np.clip(m, lo, hi) - lo) / (hi - lo)
    if blur_sigma > 0:
        m = _gaussian_blur3(m, blur_sigma)
    return np.clip(m, 0.0, 1.0).astype(np.float32)


def _gaussian_blur3(m: np.ndarray, sigma: float) -> np.ndarray:
    kernel = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * sigma**2))
    kernel /= kernel.sum()  # (3,), separable
    padded = np.pad(m, 1, mode="reflect")  # numpy "reflect" = OpenCV BORDER_REFLECT_101
    rows = kernel[0] * padded[:-2] + kernel[1] * padded[1:-1] + kernel[2] * padded[2:]  # (H, W + 2)
    return kernel[0] * rows[:, :-2] + kernel[1] * rows[:, 1:-1] + kernel[2] * rows[:, 2:]


def heatmap_overlay_png(image, heatmap, *, alpha: float = 0.5, upscale: int | None = None, cmap: str = "jet") -> bytes:
    """PNG bytes of ``image`` with ``heatmap`` drawn over it in a colormap.

    ``image``: (H, W) grey or (H, W, 3) colour; uint8, or float in [0, 1]. ``heatmap``:
    (H, W) in [0, 1]. Each pixel blends towards the colormap's colour of its heat with
    opacity ``alpha · heat``, so cold pixels show the image unchanged. ``upscale`` (an
    integer ≥ 1) enlarges the result by nearest-neighbor, e.g. 8 for 28x28 images.
    Needs Pillow; uses matplotlib's colormaps when installed (a built-in black-red-yellow-
    white ramp otherwise).
    """
    from PIL import Image

    rgb = as_rgb_uint8(image)
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap shape {heat.shape} does not match the image's {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    colours = _colormap(cmap, heat)  # (H, W, 3) float in [0, 1]
    weight = (alpha * heat)[..., None]
    out = (1 - weight) * (rgb / 255.0) + weight * colours
    out = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    if upscale is not None:
        factor = int(upscale)
        if factor != upscale or factor < 1:
            raise ValueError(f"upscale must be a positive integer, got {upscale}")
        out = out.repeat(factor, axis=0).repeat(factor, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(out).save(buffer, format="PNG")
    return buffer.getvalue()


def _colormap(name: str, heat: np.ndarray) -> np.ndarray:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is part of the engine extra
        return np.stack([np.clip(3 * heat, 0, 1), np.clip(3 * heat - 1, 0, 1), np.clip(3 * heat - 2, 0, 1)], -1)
    return matplotlib.colormaps[name](heat)[..., :3]
