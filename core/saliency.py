"""Batched per-sample filter saliency. PROVISIONAL: delegates to the reference loop until the fast engine lands."""

from __future__ import annotations

import torch
from torch import nn

from .layout import FilterLayout
from .reference import per_sample_filter_saliency


def filter_saliency(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                    layout: FilterLayout | None = None, max_memory_bytes: int | None = None) -> torch.Tensor:
    """(B, F) float32 per-sample filter saliency (see parasal.core.reference for the definition)."""
    return per_sample_filter_saliency(model, inputs, targets, layout=layout)
