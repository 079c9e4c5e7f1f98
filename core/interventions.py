"""Interventions on filters: prune, one-step fine-tune, perturb, and parameter SmoothGrad.

Every public function here works on a ``copy.deepcopy`` of the model and returns it; the
model passed in is never modified (parameters, buffers, ``.grad``, mode, hooks). Returned
models are in eval mode: BatchNorm uses its running statistics, as in the paper's
experiments (B.1: "batch normalization layers were set to the test mode").

A filter is a *profile index* (``FilterLayout.locate``): channel ``c`` of a conv layer
owns ``weight[c]`` and, when the layer has one, ``bias[c]``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import operator
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._hooks import HookOwner
from .layout import FilterLayout

__all__ = [
    "batchnorm_consumers",
    "prune_filters",
    "finetune_step",
    "perturb_filters",
    "smoothgrad_saliency",
]

_BatchNorm = nn.modules.batchnorm._BatchNorm

#: (tensor, rows): the rows ``tensor[rows]`` of one parameter or buffer; rows None = all of it.
_Slice = tuple[torch.Tensor, "torch.Tensor | None"]


# --------------------------------------------------------------------------- BatchNorm


def batchnorm_consumers(model: nn.Module, layout: FilterLayout, *,
                        example_input: torch.Tensor | None = None) -> dict[str, tuple[str, ...]]:
    """Filtered layer name -> names of the BatchNorm layers that normalise its output directly.

    Two rules, both requiring ``bn.num_features == layer.filters``:

    * ``example_input`` given (one batch the model accepts): trace one eval-mode forward with
      hooks; a BN consumes a layer when the BN's input tensor *is* that layer's output
      tensor (nothing in between; an in-place activation such as ``ReLU(inplace=True)``
      returns the same tensor and counts, which is harmless: it maps 0 to 0). Hooks are
      removed and the mode restored before returning, even on error.
    * otherwise, registration order: the leaf module registered right after the layer in
      ``model.named_modules()``, if it is a BatchNorm. This is the conv -> bn convention of
      torchvision's ResNet (``conv1, bn1``; ``downsample.0, downsample.1``), VGG-BN
      (``features`` Sequential), MobileNet/EfficientNet (``Conv2dNormActivation`` and the
      projection ``Conv2d, BatchNorm2d``) and of our zoo.

    Pre-activation networks (DenseNet: ``norm -> relu -> conv``) normalise a layer's output
    only inside a later block, after concatenation or pooling; the traced rule finds no
    consumer there, so pruning zeroes the conv output but not what later BNs make of it.
    """
    modules = dict(model.named_modules())
    for span in layout:
        if span.name not in modules:
            raise ValueError(f"layout layer {span.name!r} is not a module of this model")
    if example_input is None:
        leaves = [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]
        position = {n: i for i, (n, _) in enumerate(leaves)}
        found: dict[str, tuple[str, ...]] = {}
        for span in layout:
            i = position.get(span.name)
            if i is None or i + 1 >= len(leaves):
                continue
            name, module = leaves[i + 1]
            if isinstance(module, _BatchNorm) and module.num_features == span.filters:
                found[span.name] = (name,)
        return found
    return _traced_batchnorm_consumers(model, layout, example_input)


def _traced_batchnorm_consumers(model: nn.Module, layout: FilterLayout,
                                example_input: torch.Tensor) -> dict[str, tuple[str, ...]]:
    modules = dict(model.named_modules())
    producers: dict[int, str] = {}  # id(output tensor) -> layer name
    alive: list[torch.Tensor] = []  # keeps outputs alive so their ids are not reused mid-trace
    found: dict[str, list[str]] = {}

    def on_output(name):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                producers[id(output)] = name
                alive.append(output)
        return hook

    def on_input(name):
        def hook(module, inputs, _output):
            source = producers.get(id(inputs[0])) if inputs else None
            if source is not None and module.num_features == layout.layer(source).filters:
                if name not in found.setdefault(source, []):
                    found[source].append(name)
        return hook

    with HookOwner() as hooks, _eval_mode(model), torch.no_grad():
        for span in layout:
            hooks.forward_hook(modules[span.name], on_output(span.name))
        for name, module in modules.items():
            if isinstance(module, _BatchNorm):
                hooks.forward_hook(module, on_input(name))
        model(example_input.to(_device(model)))
    return {name: tuple(bns) for name, bns in found.items()}


# --------------------------------------------------------------------------- public API


def prune_filters(model: nn.Module, layout: FilterLayout, filters: Iterable[int], *,
                  example_input: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``model`` with those filters turned off (§3.1).

    Zeroes ``weight[c]`` and ``bias[c]`` of each filter and, for the BatchNorm that
    consumes the layer's output (:func:`batchnorm_consumers`; traced when ``example_input``
    is given, registration order otherwise), that channel's ``weight`` and ``bias``, so the
    feature map after the BN is exactly zero for every input. A BN without affine
    parameters gets ``running_mean[c] = 0`` instead (its input channel is exactly 0).
    """
    pruned = _eval_copy(model)
    consumers = batchnorm_consumers(pruned, layout, example_input=example_input)
    with torch.no_grad():
        for tensor, rows in _prune_slices(pruned, layout, filters, consumers):
            tensor[rows] = 0
    return pruned


def finetune_step(model: nn.Module, layout: FilterLayout, inputs: torch.Tensor, targets,
                  filters: Sequence[int] | None, *, step_size: float = 1e-3,
                  target_norm: float | None = None) -> tuple[nn.Module, float]:
    """One gradient-descent step on the mean cross-entropy of ``inputs``, on a copy.

    Only the given filters move: ``weight[c]`` and, where the layer has one, ``bias[c]``
    (the bias is part of the filter's output channel; the paper's ResNets have none).
    ``g`` is the loss gradient restricted to those entries; with ``target_norm`` it is
    rescaled to that L2 norm (B.1: random/least-salient baselines get the salient set's
    gradient magnitude; a zero ``g`` stays zero). Then ``θ ← θ − step_size·g``.
    ``filters=None`` is a plain step on every parameter of the network.

    BatchNorm is in eval mode throughout. Returns (tuned copy, ‖g‖₂ before rescaling).
    """
    tuned = _eval_copy(model)
    x, y = _as_batch(tuned, inputs, targets)
    slices = _all_slices(tuned) if filters is None else _filter_slices(tuned, layout, filters)
    grads = _loss_grads(tuned, x, y, _unique_tensors(slices))
    with torch.no_grad():
        norm = _restricted_norm(slices, grads)
        _apply_step(slices, grads, step_size * _scale(norm, target_norm))
    return tuned, norm


def perturb_filters(model: nn.Module, layout: FilterLayout, filters: Iterable[int], *,
                    sigma: float = 1e-3, generator: torch.Generator | None = None) -> nn.Module:
    """A copy of ``model`` with i.i.d. Gaussian noise of standard deviation ``sigma`` added
    to each given filter's weights (A.6; biases untouched).

    The paper writes N(0, 0.001). We read 0.001 as the standard deviation, the way
    ``torch.normal(0, 0.001)`` and ``0.001 * torch.randn`` read it; pass
    ``sigma=math.sqrt(1e-3)`` (≈ 0.0316) for the variance reading. Noise is drawn layer by
    layer in layout order, channels ascending, on the generator's device; the same
    generator state gives the same copy.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    noisy = _eval_copy(model)
    noise_device = generator.device if generator is not None else torch.device("cpu")
    with torch.no_grad():
        for tensor, rows in _filter_slices(noisy, layout, filters, with_bias=False):
            shape = (len(rows), *tensor.shape[1:])
            noise = torch.randn(shape, generator=generator, dtype=tensor.dtype, device=noise_device)
            tensor[rows] += sigma * noise.to(tensor.device)
    return noisy


def smoothgrad_saliency(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                        samples: int = 8, noise: float = 0.1, layout: FilterLayout | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, F) float32 parameter SmoothGrad (A.1): raw filter saliency averaged over noisy inputs.

    Each of ``samples`` draws adds ``N(0, std_i²)`` to every input ``i``, with
    ``std_i = noise · (max(x_i) − min(x_i))`` over all of that input's values, and runs
    :func:`parasal.core.saliency.filter_saliency` on the noisy batch with the true targets.
    Draw ``s`` is one ``randn(inputs.shape)`` from ``generator`` (on its device), so a
    seeded generator reproduces the result. ``noise=0`` gives plain filter saliency.
    """
    from .saliency import filter_saliency

    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    x = inputs.detach()
    flat = x.reshape(len(x), -1)
    std = (noise * (flat.amax(1) - flat.amin(1))).reshape(-1, *[1] * (x.dim() - 1))  # (B, 1, 1, 1)
    noise_device = generator.device if generator is not None else torch.device("cpu")
    total = None
    for _ in range(samples):
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=noise_device).to(x.device)
        profile = filter_saliency(model, x + std * eps, targets, layout=layout).double()
        total = profile if total is None else total + profile
    return (total / samples).float()


# --------------------------------------------------------------------------- shared internals
# (also used by parasal.core.evaluation, which applies and undoes the same edits in place
# on one working copy instead of deep-copying the model for every row)


def _eval_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode, without the original's ``.grad`` tensors."""
    clone = copy.deepcopy(model)
    clone.eval()
    for p in clone.parameters():
        p.grad = None
    return clone


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block; every module's own ``training`` flag restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _dtype(model: nn.Module) -> torch.dtype:
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def _as_batch(model: nn.Module, inputs: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) inputs and (N,) int64 targets on the model's device; one (C, H, W) image is batched."""
    y = torch.as_tensor(targets).reshape(-1).to(torch.long)
    x = inputs.detach()
    if x.dim() == 3:
        x = x[None]
    if x.shape[0] != len(y):
        raise ValueError(f"{x.shape[0]} inputs but {len(y)} targets")
    return x.to(_device(model), _dtype(model)), y.to(_device(model))


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
        raise ValueError(f"layer {name!r} has {module.weight.shape[0]} filters, layout says "
                         f"{layout.layer(name).filters}")
    return module


def _filter_slices(model: nn.Module, layout: FilterLayout, filters: Iterable[int], *,
                   with_bias: bool = True) -> list[_Slice]:
    modules = dict(model.named_modules())
    slices: list[_Slice] = []
    for name, channels in _filter_indices(layout, filters).items():
        module = _layer(modules, layout, name)
        rows = torch.tensor(channels, dtype=torch.long, device=module.weight.device)
        slices.append((module.weight, rows))
        if with_bias and getattr(module, "bias", None) is not None:
            slices.append((module.bias, rows))
    return slices


def _prune_slices(model: nn.Module, layout: FilterLayout, filters: Iterable[int],
                  consumers: dict[str, tuple[str, ...]]) -> list[_Slice]:
    """What to zero to prune ``filters``: the filters' weights/biases and their BN channels."""
    modules = dict(model.named_modules())
    slices = _filter_slices(model, layout, filters)
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


def _all_slices(model: nn.Module) -> list[_Slice]:
    return [(p, None) for p in model.parameters()]


def _unique_tensors(slices: Sequence[_Slice]) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for tensor, _ in slices:
        seen.setdefault(id(tensor), tensor)
    return list(seen.values())


def _loss_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                params: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
    """id(param) -> d mean-CE / d param, via autograd.grad (no ``.grad`` is written).

    ``model`` must be a private copy: parameters that do not require grad are switched on.
    """
    for p in params:
        p.requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return {id(p): torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)}


def _restricted_norm(slices: Sequence[_Slice], grads: dict[int, torch.Tensor]) -> float:
    total = 0.0
    for tensor, rows in slices:
        g = grads[id(tensor)]
        total += float((g if rows is None else g[rows]).double().pow(2).sum())
    return math.sqrt(total)


def _scale(norm: float, target_norm: float | None) -> float:
    if target_norm is None:
        return 1.0
    if target_norm < 0:
        raise ValueError(f"target_norm must be >= 0, got {target_norm}")
    return target_norm / norm if norm > 0 else 0.0


def _apply_step(slices: Sequence[_Slice], grads: dict[int, torch.Tensor], factor: float) -> None:
    """θ[rows] −= factor · g[rows], in place (caller holds no_grad)."""
    for tensor, rows in slices:
        g = grads[id(tensor)]
        if rows is None:
            tensor.sub_(factor * g)
        else:
            tensor[rows] = tensor[rows] - factor * g[rows]


@contextlib.contextmanager
def _restored(slices: Sequence[_Slice]) -> Iterator[None]:
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
