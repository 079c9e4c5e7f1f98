"""The slow, obviously-correct per-sample filter saliency: the test oracle and benchmark baseline.

One sample at a time, ``autograd.grad`` of that sample's cross-entropy with respect to
each filtered layer's weight, ``|g|`` averaged over each filter's weights. With
``create_graph=True`` it is the paper code's way (which builds a double-backward graph
it only needs for input-space saliency).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._state import eval_mode
from .layout import FilterLayout, filter_layout


def per_sample_filter_saliency(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    layout: FilterLayout | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """(B, F) float32: mean |dL_i/dW[c]| over each filter c's weights, one sample i at a time."""
    layout = layout or filter_layout(model)
    modules = dict(model.named_modules())
    weights = [modules[span.name].weight for span in layout]
    with eval_mode(model):
        rows = []
        for x, y in zip(inputs, targets):
            loss = F.cross_entropy(model(x[None]), y[None])
            grads = torch.autograd.grad(loss, weights, create_graph=create_graph)
            rows.append(torch.cat([g.abs().flatten(1).mean(1) for g in grads]).detach())
        return torch.stack(rows).float()
