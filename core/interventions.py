"""Interventions on filters: prune, one-step fine-tune, perturb, and parameter SmoothGrad.

Every public function here works on a ``copy.deepcopy`` of the model and returns it; the
model passed in is never modified (parameters, buffers, ``.grad``, mode, hooks). Returned
models are in eval mode: BatchNorm uses its running statistics, as in the paper's
experiments (B.1: "batch normalization layers were set to the test mode").

A filter is a *profile index* (``FilterLayout.locate``): channel ``c`` of a conv layer
owns ``weight[c]`` and, when the layer has one, ``bias[c]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ._edits import (
    all_slices,
    apply_step,
    filter_slices,
    loss_grads,
    prune_slices,
    restricted_norm,
    scale,
    unique_tensors,
    zero,
)
from ._hooks import HookOwner
from ._state import as_batch, eval_copy, eval_mode, model_device
from .layout import FilterLayout

__all__ = [
    "batchnorm_consumers",
    "prune_filters",
    "finetune_step",
    "perturb_filters",
    "smoothgrad_saliency",
]

_BatchNorm = nn.modules.batchnorm._BatchNorm

# --------------------------------------------------------------------------- BatchNorm


def batchnorm_consumers(
    model: nn.Module, layout: FilterLayout, *, example_input: torch.Tensor | None = None
) -> dict[str, tuple[str, ...]]:
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


def _traced_batchnorm_consumers(
    model: nn.Module, layout: FilterLayout, example_input: torch.Tensor
) -> dict[str, tuple[str, ...]]:
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

    with HookOwner() as hooks, eval_mode(model), torch.no_grad():
        for span in layout:
            hooks.forward_hook(modules[span.name], on_output(span.name))
        for name, module in modules.items():
            if isinstance(module, _BatchNorm):
                hooks.forward_hook(module, on_input(name))
        model(example_input.to(model_device(model)))
    return {name: tuple(bns) for name, bns in found.items()}


# --------------------------------------------------------------------------- public API


def prune_filters(
    model: nn.Module, layout: FilterLayout, filters: Iterable[int], *, example_input: torch.Tensor | None = None
) -> nn.Module:
    """A copy of ``model`` with those filters turned off (§3.1).

    Zeroes ``weight[c]`` and ``bias[c]`` of each filter and, for the BatchNorm that
    consumes the layer's output (:func:`batchnorm_consumers`; traced when ``example_input``
    is given, registration order otherwise), that channel's ``weight`` and ``bias``, so the
    feature map after the BN is exactly zero for every input. A BN without affine
    parameters gets ``running_mean[c] = 0`` instead (its input channel is exactly 0).
    """
    pruned = eval_copy(model)
    consumers = batchnorm_consumers(pruned, layout, example_input=example_input)
    with torch.no_grad():
        zero(prune_slices(pruned, layout, filters, consumers))
    return pruned


def finetune_step(
    model: nn.Module,
    layout: FilterLayout,
    inputs: torch.Tensor,
    targets,
    filters: Sequence[int] | None,
    *,
    step_size: float = 1e-3,
    target_norm: float | None = None,
) -> tuple[nn.Module, float]:
    """One gradient-descent step on the mean cross-entropy of ``inputs``, on a copy.

    Only the given filters move: ``weight[c]`` and, where the layer has one, ``bias[c]``
    (the bias is part of the filter's output channel; the paper's ResNets have none).
    ``g`` is the loss gradient restricted to those entries; with ``target_norm`` it is
    rescaled to that L2 norm (B.1: random/least-salient baselines get the salient set's
    gradient magnitude; a zero ``g`` stays zero). Then ``θ ← θ − step_size·g``.
    ``filters=None`` is a plain step on every parameter of the network.

    BatchNorm is in eval mode throughout. Returns (tuned copy, ‖g‖₂ before rescaling).
    """
    tuned = eval_copy(model)
    x, y = as_batch(tuned, inputs, targets)
    slices = all_slices(tuned) if filters is None else filter_slices(tuned, layout, filters)
    grads = loss_grads(tuned, x, y, unique_tensors(slices))
    with torch.no_grad():
        norm = restricted_norm(slices, grads)
        apply_step(slices, grads, step_size * scale(norm, target_norm))
    return tuned, norm


def perturb_filters(
    model: nn.Module,
    layout: FilterLayout,
    filters: Iterable[int],
    *,
    sigma: float = 1e-3,
    generator: torch.Generator | None = None,
) -> nn.Module:
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
    noisy = eval_copy(model)
    noise_device = generator.device if generator is not None else torch.device("cpu")
    with torch.no_grad():
        for tensor, rows in filter_slices(noisy, layout, filters, with_bias=False):
            shape = (len(rows), *tensor.shape[1:])
            noise = torch.randn(shape, generator=generator, dtype=tensor.dtype, device=noise_device)
            tensor[rows] += sigma * noise.to(tensor.device)
    return noisy


def smoothgrad_saliency(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    samples: int = 8,
    noise: float = 0.1,
    layout: FilterLayout | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
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
