"""A model's mode and flags, changed for a block and given back exactly; private working copies.

:func:`eval_mode` saves every module's own ``training`` flag (so a model with mixed modes,
say a frozen BatchNorm in a training model, comes back exactly as it was), and
:func:`frozen_eval` adds ``requires_grad=False`` on every parameter. :func:`eval_copy` is
the private copy that interventions and evaluations edit. :func:`as_batch` puts inputs and
targets where the model's parameters are.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["eval_mode", "frozen_eval", "eval_copy", "model_device", "model_dtype", "as_batch"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block; every module's own ``training`` flag restored afterwards, one by one."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter for the block; both restored exactly.

    Freezing the parameters is what keeps autograd from computing (and accumulating) any
    batch weight gradient: the backward pass then only carries gradients with respect to
    activations, which is all the per-sample engine needs.
    """
    flags = [(param, param.requires_grad) for param in model.parameters()]
    with eval_mode(model):
        try:
            for param, _ in flags:
                param.requires_grad_(False)
            yield model
        finally:
            for param, flag in flags:
                param.requires_grad_(flag)


def eval_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode, without the original's ``.grad`` tensors."""
    clone = copy.deepcopy(model)
    clone.eval()
    for p in clone.parameters():
        p.grad = None
    return clone


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def as_batch(model: nn.Module, inputs: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) inputs and (N,) int64 targets on the model's device; one (C, H, W) image is batched."""
    y = torch.as_tensor(targets).reshape(-1).to(torch.long)
    x = inputs.detach()
    if x.dim() == 3:
        x = x[None]
    if x.shape[0] != len(y):
        raise ValueError(f"{x.shape[0]} inputs but {len(y)} targets")
    device = model_device(model)
    return x.to(device, model_dtype(model)), y.to(device)
