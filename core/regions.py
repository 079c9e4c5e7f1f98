"""The image region that drives one filter: gradient-weighted superpixels (Hartley et al. §4.3; BMVC 2019 [9]).

For one image and one filter ``n`` of a conv layer:

1. the image is cut into SLIC superpixels (``skimage.segmentation.slic``, 50 by default);
2. "vanilla" backpropagation (Simonyan et al.): the gradient of the target class's
   pre-softmax score with respect to the input pixels, with every gradient through the
   layer's *other* filters zeroed (§4.3: "we zero out all gradients produced by filters in
   the same layer as the surprised one"). Implemented without a tensor hook: the layer's
   output is replaced by ``where(channel == n, A, A.detach())``, equal in value, so the
   backward pass reaches the input through channel ``n`` only. ``filter=None`` keeps every
   channel: plain vanilla backprop, the paper's baseline in §4.5;
3. each pixel's score is ``max_channels |g|`` (Simonyan et al.'s saliency map) and each
   superpixel's score the *mean* of its pixels' scores (``reduce="sum"``: their sum, which
   favours large superpixels); the best superpixel is the highest-scoring one (ties: the
   lower label).

The target class defaults to the model's prediction; explanations of a labelled sample
pass its label.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._hooks import HookOwner
from ._images import as_rgb
from ._state import frozen_eval, model_device, model_dtype
from .importance import conv_module, last_conv_layer

__all__ = ["FilterRegion", "filter_region", "superpixels", "superpixel_scores", "region_png"]


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class FilterRegion:
    """Result of :func:`filter_region` for one image."""

    mask: np.ndarray  # (H, W) bool: the best superpixel
    best: int  # its label in ``segments``
    scores: np.ndarray  # (S,) float64, one per superpixel label 0..S-1
    segments: np.ndarray  # (H, W) int64 SLIC labels 0..S-1
    gradient: np.ndarray  # (H, W) float32 per-pixel max_channels |∂y_target/∂x| through the filter only
    target: int  # the class whose score was backpropagated
    predicted: int  # the model's class for the image
    layer: str
    filter: int | None  # None: every filter of the layer (vanilla backprop)


def filter_region(
    model: nn.Module,
    image: torch.Tensor,
    filter: int | None,
    *,
    target: int | None = None,
    layer: str | None = None,
    segments: int = 50,
    compactness: float | None = None,
    display_image=None,
    reduce: str = "mean",
) -> FilterRegion:
    """The superpixel of ``image`` (``(C, H, W)`` or ``(1, C, H, W)``, model-ready) that most drives ``filter``.

    ``layer``: the conv's name (default the last conv to run, as in
    :func:`parasal.core.filter_importance`). ``display_image`` ``(H, W)`` or ``(H, W, 3)`` in
    [0, 1] (the un-normalised image) is what SLIC segments when given, else the model input
    rescaled to [0, 1]. ``compactness`` defaults to 0.1 for grey and 10 for colour images
    (skimage segments colour in CIELAB, whose range is ~100 times that of [0, 1] grey).
    The model's flags, ``.grad`` fields and hooks are left as they were.
    """
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    x = _one_image(model, image)
    name = last_conv_layer(model, x) if layer is None else layer
    module = conv_module(model, name)
    if filter is not None and not 0 <= int(filter) < module.out_channels:
        raise ValueError(f"filter {filter} outside [0, {module.out_channels}) of layer {name!r}")
    gradient, target, predicted = _input_gradient(model, module, x, filter, target)
    pixel = gradient.abs().amax(0).float().cpu().numpy()  # (H, W)
    labels = superpixels(x[0] if display_image is None else display_image, segments, compactness)
    if labels.shape != pixel.shape:
        raise ValueError(f"display_image is {labels.shape[:2]}, the model input {pixel.shape}")
    scores = superpixel_scores(pixel, labels, reduce)
    best = int(np.argmax(scores))  # first maximum: the lower label on ties
    return FilterRegion(labels == best, best, scores, labels, pixel, target, predicted, name, filter)


def superpixels(image, segments: int = 50, compactness: float | None = None) -> np.ndarray:
    """(H, W) int64 SLIC labels 0..S-1 of ``image``: a tensor (C, H, W), rescaled to [0, 1], or an array in [0, 1]."""
    from skimage.segmentation import slic

    if isinstance(image, torch.Tensor):
        img = image.detach().float().cpu().numpy()  # (C, H, W), normalised
        img = np.moveaxis(img, 0, -1)  # (H, W, C)
        span = img.max() - img.min()
        img = (img - img.min()) / span if span > 0 else np.zeros_like(img)
    else:
        img = np.asarray(image, np.float64)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")
    grey = img.ndim == 2
    m = (0.3 if grey else 10.0) if compactness is None else float(compactness)
    labels = slic(img, n_segments=int(segments), compactness=m, channel_axis=None if grey else -1, start_label=0)
    _, dense = np.unique(labels, return_inverse=True)  # labels 0..S-1 without gaps
    return dense.reshape(labels.shape).astype(np.int64)


def superpixel_scores(pixel: np.ndarray, labels: np.ndarray, reduce: str = "mean") -> np.ndarray:
    """(S,) float64: the mean (or sum) of ``pixel`` (H, W) over each label of ``labels`` (H, W)."""
    flat = labels.ravel()
    sums = np.bincount(flat, weights=np.asarray(pixel, np.float64).ravel())
    return sums / np.bincount(flat) if reduce == "mean" else sums


def region_png(image, mask: np.ndarray, *, upscale: int | None = None, color=(1.0, 1.0, 0.0)) -> bytes:
    """PNG bytes of ``image`` ((H, W) or (H, W, 3); uint8 or float in [0, 1]) with ``mask``'s boundary drawn.

    Yellow by default, as in the paper's Fig. 7. ``upscale`` (integer ≥ 1) enlarges image
    and mask by nearest neighbour first, so the line stays thin on small images.
    """
    from PIL import Image
    from skimage.segmentation import mark_boundaries

    rgb = as_rgb(image)
    region = np.asarray(mask, bool)
    if region.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {region.shape} does not match the image's {rgb.shape[:2]}")
    if upscale is not None:
        factor = int(upscale)
        if factor != upscale or factor < 1:
            raise ValueError(f"upscale must be a positive integer, got {upscale}")
        rgb = rgb.repeat(factor, 0).repeat(factor, 1)
        region = region.repeat(factor, 0).repeat(factor, 1)
    drawn = mark_boundaries(rgb, region.astype(np.int64), color=color, mode="inner")
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(drawn * 255.0), 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _one_image(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise TypeError("image must be a floating-point torch tensor")
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
    with torch.inference_mode(False):
        return x.detach().to(model_device(model), model_dtype(model)).clone()  # (1, C, H, W)


def _input_gradient(model, module, x, filter, target) -> tuple[torch.Tensor, int, int]:
    """(∂y_target/∂x (C, H, W) through channel ``filter`` of ``module`` only, target, predicted).

    Two backward passes: ∂y/∂A at the layer's output A (the layer's output is a leaf for the
    rest of the network), then ∂(Σ ∂y/∂A_n ⊙ A_n)/∂x from channel n alone. Only paths from x
    to y through A_n count: a residual branch parallel to the layer (ResNet's main path beside
    a shortcut conv) carries no gradient. Zeroing the other channels' gradients in one
    backward from y would let such a branch's gradient through and make every filter's
    region look the same.
    """
    seen: dict[str, torch.Tensor] = {}

    def cut_at_output(mod, args, output):
        seen["output"] = output  # (1, N, h, w), connected to x
        seen["leaf"] = output.detach().requires_grad_(True)  # what the rest of the network sees
        return seen["leaf"]

    with frozen_eval(model), HookOwner() as hooks, torch.inference_mode(False), torch.enable_grad():
        if filter is not None:
            hooks.forward_hook(module, cut_at_output)
        x = x.requires_grad_(True)
        logits = model(x)  # (1, K)
        if filter is not None and not seen:
            raise ValueError("the layer did not run in the forward pass")
        predicted = int(logits[0].argmax())
        cls = predicted if target is None else int(target)
        if not 0 <= cls < logits.shape[1]:
            raise ValueError(f"target {cls} outside the model's {logits.shape[1]} classes")
        if filter is None:  # vanilla backprop: every path
            (gradient,) = torch.autograd.grad(logits[0, cls], x)
        else:
            (at_layer,) = torch.autograd.grad(logits[0, cls], seen["leaf"])  # (1, N, h, w)
            through = (at_layer[:, filter] * seen["output"][:, filter]).sum()
            (gradient,) = torch.autograd.grad(through, x)
    return gradient[0].detach(), cls, predicted
