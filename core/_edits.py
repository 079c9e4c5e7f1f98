"""In-place edits of filter slices of a model's tensors, and their exact undo.

A *slice* is ``(tensor, rows)``: the rows ``tensor[rows]`` of one parameter or buffer
(``rows`` None: all of it). Interventions build the slices of the filters they touch on
a private copy and edit them once; evaluations apply an edit to one working copy in
place, measure, and put the saved entries back bit for bit with :func:`restored`, instead
of deep-copying the model for every row.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layout import FilterLayout

__all__ = [
    "Slice",
    "filter_slices",
    "prune_slices",
    "all_slices",
    "unique_tensors",
    "loss_grads",
    "restricted_norm",
    "scale",
    "apply_step",
    "zero",
    "restored",
]

#: (tensor, rows): the rows ``tensor[rows]`` of one parameter or buffer; rows None = all of it.
Slice = tuple[torch.Tensor, "torch.Tensor | None"]


def _filter_indices(layout: FilterLayout, filters: Iterable[int]) -> dict[str, list[int]]:
    """Profile indices -> {layer name: sorted unique channels}, layers in layout order."""
    per_layer: dict[str, list[int]] = {}
    for i in sorted({operator.index(f) for f in filters}):
        span, channel = layout.locate(i)
        per_layer.setdefault(span.name, []).append(channel)
    return per_layer


def _layer(modules: dict[str, nn.Module], layout: FilterLayout, name: str) -> nn.Module:
    module = modules.get(name)
    if module is None or getattr(module, "weight", None) is None:
        raise ValueError(f"layout layer {name!r} is not a weighted module of this model")
    if module.weight.shape[0] != layout.layer(name).filters:
        raise ValueError(
            f"layer {name!r} has {module.weight.shape[0]} filters, layout says {layout.layer(name).filters}"
        )
    return module


def filter_slices(
    model: nn.Module, layout: FilterLayout, filters: Iterable[int], *, with_bias: bool = True
) -> list[Slice]:
    """``weight[c]`` (and ``bias[c]`` where the layer has one) of every given filter."""
    modules = dict(model.named_modules())
    slices: list[Slice] = []
    for name, channels in _filter_indices(layout, filters).items():
        module = _layer(modules, layout, name)
        rows = torch.tensor(channels, dtype=torch.long, device=module.weight.device)
        slices.append((module.weight, rows))
        if with_bias and getattr(module, "bias", None) is not None:
            slices.append((module.bias, rows))
    return slices


def prune_slices(
    model: nn.Module, layout: FilterLayout, filters: Iterable[int], consumers: dict[str, tuple[str, ...]]
) -> list[Slice]:
    """What to zero to prune ``filters``: the filters' weights/biases and their BN channels."""
    modules = dict(model.named_modules())
    slices = filter_slices(model, layout, filters)
    for name, channels in _filter_indices(layout, filters).items():
        for bn_name in consumers.get(name, ()):
            bn = modules[bn_name]
            if bn.weight is not None:
                rows = torch.tensor(channels, dtype=torch.long, device=bn.weight.device)
                slices += [(bn.weight, rows), (bn.bias, rows)]
            elif bn.running_mean is not None:
                rows = torch.tensor(channels, dtype=torch.long, device=bn.running_mean.device)
                slices.append((bn.running_mean, rows))
    return slices


def all_slices(model: nn.Module) -> list[Slice]:
    return [(p, None) for p in model.parameters()]


def unique_tensors(slices: Sequence[Slice]) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for tensor, _ in slices:
        seen.setdefault(id(tensor), tensor)
    return list(seen.values())


def loss_grads(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: Sequence[torch.Tensor]
) -> dict[int, torch.Tensor]:
    """id(param) -> d mean-CE / d param, via autograd.grad (no ``.grad`` is written).

    ``model`` must be a private copy: parameters that do not require grad are switched on.
    """
    for p in params:
        p.requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return {id(p): torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)}


def restricted_norm(slices: Sequence[Slice], grads: dict[int, torch.Tensor]) -> float:
    """‖g‖₂ over the entries of ``slices`` only (float64 accumulation)."""
    total = 0.0
    for tensor, rows in slices:
        g = grads[id(tensor)]
        total += float((g if rows is None else g[rows]).double().pow(2).sum())
    return math.sqrt(total)


def scale(norm: float, target_norm: float | None) -> float:
    """The factor that rescales a gradient of ``norm`` to ``target_norm`` (1 without one; 0 for a zero gradient)."""
    if target_norm is None:
        return 1.0
    if target_norm < 0:
        raise ValueError(f"target_norm must be >= 0, got {target_norm}")
    return target_norm / norm if norm > 0 else 0.0


def apply_step(slices: Sequence[Slice], grads: dict[int, torch.Tensor], factor: float) -> None:
    """θ[rows] −= factor · g[rows], in place (caller holds no_grad)."""
    for tensor, rows in slices:
        g = grads[id(tensor)]
        if rows is None:
            tensor.sub_(factor * g)
        else:
            tensor[rows] = tensor[rows] - factor * g[rows]


def zero(slices: Sequence[Slice]) -> None:
    """tensor[rows] = 0 for every slice, in place (caller holds no_grad)."""
    for tensor, rows in slices:
        tensor[rows] = 0


@contextlib.contextmanager
def restored(slices: Sequence[Slice]) -> Iterator[None]:
    """Saves ``tensor[rows]`` of every slice and writes it back on exit, bit for bit."""
    saved = [(t, rows, (t if rows is None else t[rows]).detach().clone()) for t, rows in slices]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, rows, values in reversed(saved):
                if rows is None:
                    tensor.copy_(values)
                else:
                    tensor[rows] = values
