"""Regions of several filters of one image in one batched pass: the fast path behind ExplainSurprise.

:func:`parasal.core.filter_region` answers one filter with one forward and one backward pass
and its own SLIC segmentation. ExplainSurprise needs the regions of up to 2 x 16 filters of
the *same* image, so here the image is repeated once per filter, ``(F, C, H, W)``, with the
same two backward passes as core: ∂y/∂A at the layer's output (a leaf for the rest of the
network), then the input gradient from row ``i``'s channel ``filters[i]`` alone. In eval mode
rows do not interact, so one backward of each stage gives every row its own input gradient;
the image is segmented once. Tested against ``filter_region`` filter by filter
(tests/server/test_server_surprise.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from parasal.core import superpixel_scores, superpixels

__all__ = ["filter_region_masks"]


def filter_region_masks(
    model: nn.Module,
    image: torch.Tensor,
    filters: Sequence[int],
    *,
    target: int,
    layer: str,
    segments: int,
    display_image: np.ndarray,
) -> list[np.ndarray]:
    """(H, W) bool best-superpixel mask of each of ``filters`` (of conv ``layer``) for ``image`` (C, H, W).

    The same answer as ``filter_region(model, image, f, target=target, layer=layer,
    segments=segments, display_image=display_image).mask`` for each ``f``. The model's
    training flags and hooks are left as they were (parameters are never written).
    """
    if not filters:
        return []
    module = dict(model.named_modules()).get(layer)
    if not isinstance(module, nn.Conv2d):
        raise ValueError(f"layer {layer!r} is not an nn.Conv2d of the model")
    chosen = torch.as_tensor(list(filters), dtype=torch.long)
    if int(chosen.min()) < 0 or int(chosen.max()) >= module.out_channels:
        raise ValueError(f"filters must lie in [0, {module.out_channels}) of layer {layer!r}")
    pixel = _pixel_gradients(model, module, image, chosen, int(target))  # (F, H, W)
    labels = superpixels(display_image, segments)  # (H, W), once for every filter
    masks = []
    for row in pixel:
        scores = superpixel_scores(row, labels)
        masks.append(labels == int(np.argmax(scores)))  # first maximum: the lower label on ties, as core
    return masks


def _pixel_gradients(model, module, image, chosen, target) -> np.ndarray:
    """(F, H, W) float32: max over channels of |∂y_target/∂x| through channel ``chosen[i]`` alone, per row."""
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    count = len(chosen)
    keep = torch.zeros(count, module.out_channels, dtype=torch.bool, device=device)
    keep[torch.arange(count, device=device), chosen.to(device)] = True  # (F, N): row i keeps channel chosen[i]

    seen: dict[str, torch.Tensor] = {}

    def cut_at_output(mod, args, output):  # (F, N, h, w): the rest of the network sees a leaf (as core)
        seen["output"] = output
        seen["leaf"] = output.detach().requires_grad_(True)
        return seen["leaf"]

    flags = [(m, m.training) for m in model.modules()]
    handle = module.register_forward_hook(cut_at_output)
    try:
        model.eval()  # running BatchNorm statistics: the rows do not interact
        with torch.inference_mode(False), torch.enable_grad():
            x = image.detach().to(device, dtype)[None].repeat(count, 1, 1, 1).clone().requires_grad_(True)
            logits = model(x)  # (F, K)
            (at_layer,) = torch.autograd.grad(logits[:, target].sum(), seen["leaf"])  # (F, N, h, w)
            through = (at_layer * seen["output"] * keep[:, :, None, None]).sum()  # row i: channel chosen[i] only
            (gradient,) = torch.autograd.grad(through, x)  # (F, C, H, W), row i its own
    finally:
        handle.remove()
        for m, training in flags:
            m.training = training
    return gradient.abs().amax(1).float().cpu().numpy()
