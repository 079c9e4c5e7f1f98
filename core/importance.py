"""Per-sample filter importance α of one conv layer (Hartley et al., surprise and expectation, §3.1, §4.1).

For sample ``i`` with target class ``c`` and the layer's output ``A (B, N, H, W)`` (the
conv module's output, before any BatchNorm or ReLU that follows it), each method gives one
score per filter ``n``:

========================  =====================================================================
``grad_amap`` (eq. 1)     ``mean_HW(∂O_c/∂A ⊙ A)``, ``O_c = softmax(logits)_c`` (the paper's method)
``taylor``                ``|mean_HW(∂L/∂A ⊙ A)|``, ``L`` the cross-entropy (Molchanov et al. 2016, eq. 8)
``taylor_class``          ``|mean_HW(∂O_c/∂A ⊙ A)|`` = ``|grad_amap|``: Taylor from the softmax score (§4.1)
``l1``                    ``sum_HW |A|``, the activation map's l1 norm (not divided by H·W: the paper
                          says "l1-norm"; the constant factor changes no ranking or percentile test)
``grad_cam``              ``mean_HW ∂y_c/∂A``, ``y_c`` the pre-softmax score (Selvaraju et al., eq. 1)
``grad_cam_pp``           ``sum_HW a ⊙ relu(∂y_c/∂A)`` with ``a = g² / (2g² + sum_HW(A)·g³)`` (0 where
                          ``g = 0``), Chattopadhyay et al.'s eq. 19 closed form for ``exp(y_c)``
``random``                uniform [0, 1), drawn on the CPU from ``torch.Generator().manual_seed(seed)``
========================  =====================================================================

How: eval mode, every parameter frozen (both restored). A forward hook on the layer swaps
its output for a detached leaf ``A`` (a clone goes on, so in-place ops after the layer,
VGG's ``ReLU(inplace=True)``, leave ``A`` intact). Nothing before the layer needs a gradient,
so the backward pass of ``autograd.grad(objective, A)`` stops at the layer: no gradient to
the input or to any weight. In eval mode samples do not interact, so the gradient of the
*summed* per-sample objective is, row by row, each sample's own: one forward and one
partial backward for the whole batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._hooks import HookOwner
from ._state import as_batch, eval_mode, frozen_eval

__all__ = ["IMPORTANCE_METHODS", "filter_importance", "last_conv_layer", "conv_module"]

#: Every method :func:`filter_importance` knows, the paper's first.
IMPORTANCE_METHODS = ("grad_amap", "taylor", "taylor_class", "l1", "grad_cam", "grad_cam_pp", "random")

# Which output each gradient method backpropagates from (§4.1): the target's softmax score,
# the loss, or the target's pre-softmax score.
_OBJECTIVE = {
    "grad_amap": "softmax",
    "taylor_class": "softmax",
    "taylor": "loss",
    "grad_cam": "logit",
    "grad_cam_pp": "logit",
}

#: Grad-CAM++'s denominator guard, as in the reference implementations.
_GRAD_CAM_PP_EPS = 1e-7


def filter_importance(
    model: nn.Module,
    inputs: torch.Tensor,
    targets,
    *,
    layer: str | None = None,
    method: str = "grad_amap",
    seed: int = 0,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``(B, N)`` float32 importance of each of the layer's ``N`` filters for each sample, on the model's device.

    ``inputs`` ``(B, C, H, W)`` (moved to the model's device and dtype); ``targets`` ``(B,)``
    class indices (the ground truth in the paper). ``layer``: an ``nn.Conv2d``'s name in
    ``model.named_modules()``; default the last conv to run in the forward pass
    (:func:`last_conv_layer`, one extra one-sample forward pass: pass the name to skip it).
    ``method``: one of :data:`IMPORTANCE_METHODS` (module docstring). ``random`` draws a
    fresh ``(B, N)`` matrix from ``seed``; equal seeds give equal matrices, so give every
    batch its own seed (e.g. its first sample id). ``return_logits=True`` also returns the
    ``(B, K)`` eval-mode logits of the same forward pass (detached). Training flags,
    ``requires_grad`` flags and ``.grad`` are left as they were; every hook is removed, also
    after an error. A layer that runs more than once per forward pass is refused.
    """
    if method not in IMPORTANCE_METHODS:
        raise ValueError(f"unknown importance method {method!r}; known: {', '.join(IMPORTANCE_METHODS)}")
    x, y = _plain(*as_batch(model, inputs, targets))
    if x.dim() != 4 or len(y) == 0:
        raise ValueError(f"expected a non-empty (B, C, H, W) batch, got shape {tuple(inputs.shape)}")
    name = last_conv_layer(model, x[:1]) if layer is None else layer
    module = conv_module(model, name)
    activation, logits = _forward(model, module, name, x, y, needs_grad=method in _OBJECTIVE)
    if method == "random":
        generator = torch.Generator().manual_seed(int(seed))
        scores = torch.rand(activation.shape[:2], generator=generator, dtype=torch.float32)
    elif method == "l1":
        scores = activation.detach().abs().sum((2, 3))  # (B, N)
    else:
        grad = _gradient(_OBJECTIVE[method], activation, logits, y)  # (B, N, H, W)
        scores = _score(method, activation.detach(), grad)
    scores = scores.to(device=x.device, dtype=torch.float32)
    return (scores, logits.detach()) if return_logits else scores


def last_conv_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the last ``nn.Conv2d`` to run when ``model`` sees ``example`` (one batch, eval mode, no grad).

    Execution order, not registration order: in a ResNet block whose projection shortcut runs
    after the main branch (``out = bn2(conv2(...)) + shortcut(x)``) that is the shortcut's conv.
    """
    ran: list[str] = []
    with eval_mode(model), HookOwner() as hooks, torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                hooks.forward_hook(module, lambda m, args, out, name=name: ran.append(name))
        model(example.detach())
    if not ran:
        raise ValueError("no nn.Conv2d ran in the forward pass: filter importance needs a conv layer")
    return ran[-1]


def conv_module(model: nn.Module, name: str) -> nn.Conv2d:
    """The ``nn.Conv2d`` called ``name`` in ``model.named_modules()``; ValueError naming the choices otherwise."""
    module = dict(model.named_modules()).get(name)
    if not isinstance(module, nn.Conv2d):
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        what = "no module" if module is None else f"a {type(module).__name__}"
        raise ValueError(f"layer {name!r} is {what}, not an nn.Conv2d; conv layers: {convs[-8:]} (last 8)")
    return module


def _plain(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Normal copies of inference tensors (made under a caller's inference_mode), which autograd refuses."""
    with torch.inference_mode(False):
        return [t.clone() if t.is_inference() else t for t in tensors]


def _forward(model, module, name: str, x, y, *, needs_grad: bool):
    """(A (B, N, H, W), logits (B, K)): A a leaf that requires grad iff ``needs_grad``."""
    captured: list[torch.Tensor] = []

    def hook(mod, args, output):
        if captured:
            raise ValueError(f"layer {name!r} ran more than once in one forward pass (shared weights)")
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise ValueError(f"layer {name!r} must return a (B, N, H, W) tensor")
        leaf = output.detach().requires_grad_(needs_grad)
        captured.append(leaf)
        return leaf.clone()  # in-place ops downstream modify the clone, never A

    with frozen_eval(model), HookOwner() as hooks, torch.inference_mode(False), torch.set_grad_enabled(needs_grad):
        hooks.forward_hook(module, hook)
        logits = model(x)
    if not captured:
        raise ValueError(f"layer {name!r} did not run in the forward pass")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(y):
        raise ValueError("model must return logits of shape (B, num_classes)")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= logits.shape[1]:
        raise ValueError(f"targets must lie in [0, {logits.shape[1]}), got values in [{low}, {high}]")
    return captured[0], logits


def _gradient(kind: str, activation: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂(sum over the batch of each sample's own objective)/∂A: row i is sample i's gradient (eval mode)."""
    with torch.inference_mode(False), torch.enable_grad():  # also under a caller's no_grad
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # softmax and loss in at least single precision
        if kind == "loss":
            objective = F.cross_entropy(logits, y, reduction="sum")
        else:
            scores = logits.softmax(1) if kind == "softmax" else logits  # (B, K)
            objective = scores.gather(1, y[:, None]).sum()
        (grad,) = torch.autograd.grad(objective, activation)  # the graph starts at A: stops at the layer
    return grad


def _score(method: str, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(B, N) from the activation a and its gradient g, both (B, N, H, W)."""
    if method == "grad_amap":
        return (g * a).mean((2, 3))
    if method in ("taylor", "taylor_class"):
        return (g * a).mean((2, 3)).abs()
    if method == "grad_cam":
        return g.mean((2, 3))
    # grad_cam_pp: higher derivatives of exp(y_c) are powers of g (Chattopadhyay et al., eq. 19)
    g2 = g * g
    denominator = 2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g
    alpha = torch.where(g != 0, g2 / (denominator + _GRAD_CAM_PP_EPS), torch.zeros_like(g))
    return (alpha * g.clamp(min=0)).sum((2, 3))
