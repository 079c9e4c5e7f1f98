"""Batched per-sample filter saliency: the engine behind every profile parasal computes.

For sample ``i`` and filter ``c`` of a layer with weight ``W``, the saliency is
``mean(|dL_i/dW[c]|)`` over that filter's weights (bias excluded), ``L_i`` the sample's
cross-entropy with the model in eval mode (paper §2.1, eq. 1). The slow definition is
:func:`parasal.core.reference.per_sample_filter_saliency`; this module computes the same
numbers for a whole batch at once, with no Python loop over samples.

How (the Opacus / ``torch.nn.utils._expanded_weights`` construction):

1. Eval mode and every parameter frozen (``requires_grad=False``; both restored after).
   Forward hooks keep each layer's input and hook its output. With frozen parameters
   autograd computes no batch weight gradient at all (the backward pass carries only
   activation gradients, cheaper than ``loss.backward()``) and never touches ``.grad``.
2. ``loss = CE(reduction="sum")``. In eval mode samples do not interact, so the gradient
   of the summed loss with respect to a layer output is, row by row, the per-sample one.
3. As soon as a layer's output gradient ``go (B, C_out, L)`` exists (a tensor hook fires
   during the backward pass), the per-sample weight gradient is formed block by block,
   ``bmm(go, unfold(x)ᵀ) -> (b·G, C_out/G, C_in/G·kh·kw)`` (groups batched with samples),
   reduced at once to ``sum |g|`` per filter and dropped; the layer's input is freed.
   See :func:`_conv_blocks` for the three unfold strategies. Linear layers (optional)
   use ``|g[b,o,i]| = |go[b,o]|·|x[b,i]|`` for ``(B, in)`` inputs, a bmm otherwise.

Memory: blocks are sized so that the engine's own intermediates for a layer (the unfolded
input and the per-sample gradient block) stay within ``max_memory_bytes`` (estimate in
:func:`_plan`, counted in float32 elements of 4 bytes). Not counted: the model's
activations and autograd graph (those of one training step at this batch size; choose
the batch size for them) and one zero-padded copy of a padded conv's input. A layer run
more than once per forward pass (shared weights) must sum its per-call gradients before
``|·|``, so it keeps its whole per-sample gradient ``(B, C_out, C_in/G·kh·kw)``, outside
the budget.

Devices: the same code on CPU and CUDA; the result is on the inputs' device. On CPU the
model runs channels-last inside the engine and blocks are also kept cache-sized.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ._hooks import HookOwner
from ._state import frozen_eval
from .layout import FilterLayout, LayerSpan, filter_layout

__all__ = ["filter_saliency", "DEFAULT_MAX_MEMORY_BYTES"]

#: Default bound on the engine's per-layer intermediates (unfolded input + per-sample
#: gradient block), on any device. Large enough that a ResNet-50 layer at batch 64 runs
#: as one block; small enough for a laptop.
DEFAULT_MAX_MEMORY_BYTES = 1 << 30

#: CPU only: blocks (unfold + gradient) are sized to about this many bytes per intra-op
#: thread, so that what one op writes is still in cache when the next reads it, while
#: each op stays big enough to split over the threads. Best of 0.25-16 MiB on the demo
#: model, batch 64, 2-core Xeon with 2 MiB L2 per core (1 MiB was as good on 1 thread).
_CPU_CACHE_BYTES_PER_THREAD = 2 << 20

logger = logging.getLogger(__name__)


def filter_saliency(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    layout: FilterLayout | None = None,
    max_memory_bytes: int | None = None,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-sample filter saliency ``(B, F)`` float32, on the inputs' device.

    ``inputs``: ``(B, ...)`` float tensor on the model's device; ``targets``: ``(B,)``
    integer class indices. ``layout`` defaults to ``filter_layout(model)``; pass one to
    reuse it (a layout with linear layers gives the mean ``|dL_i/dW[row]|`` per output
    unit). ``max_memory_bytes`` bounds the engine's intermediates (default
    :data:`DEFAULT_MAX_MEMORY_BYTES`). The model's ``.grad`` fields, training flags and
    ``requires_grad`` flags are left exactly as they were, and every hook is removed,
    even when the forward or backward pass raises. Not thread-safe for one model: the
    parameters are frozen for the duration of the call.

    ``return_logits=True`` returns ``(saliency, logits)``: the ``(B, K)`` eval-mode logits
    of the engine's own forward pass (detached), so callers that also need predictions or
    losses skip a second forward pass.
    """
    _check_batch(inputs, targets)
    layout = filter_layout(model) if layout is None else layout
    budget = DEFAULT_MAX_MEMORY_BYTES if max_memory_bytes is None else int(max_memory_bytes)
    if budget <= 0:
        raise ValueError(f"max_memory_bytes must be positive, got {max_memory_bytes}")
    layers = _resolve(model, layout)
    # On CPU the model runs in channels-last memory format inside the engine (oneDNN's
    # native layout; the unfold copies then move runs of kw·C_in floats, not of one
    # output row): measured ~1.5x faster per-sample gradients on the demo model. A model
    # that needs contiguous NCHW activations (a .view() after a conv) gets a second,
    # plain run.
    channels_last = inputs.device.type == "cpu" and inputs.dim() == 4
    try:
        saliency, logits = _run(model, inputs, targets, layers, layout.num_filters, budget, channels_last)
    except RuntimeError as exc:
        if not channels_last or not any(word in str(exc) for word in ("stride", "contiguous")):
            raise
        logger.debug("channels-last run failed (%s); running in the model's own memory format", exc)
        saliency, logits = _run(model, inputs, targets, layers, layout.num_filters, budget, False)
    return (saliency, logits) if return_logits else saliency


def _run(
    model, inputs, targets, layers, num_filters: int, budget: int, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    # Gradients are needed even when the caller runs under no_grad or inference_mode.
    with frozen_eval(model), HookOwner() as hooks, torch.inference_mode(False), torch.enable_grad():
        out = torch.zeros(inputs.shape[0], num_filters, dtype=torch.float32, device=inputs.device)
        engine = _Engine(layers, out, budget, hooks, channels_last)
        for layer in layers:
            hooks.forward_hook(layer.module, engine.forward_hook(layer))
        x = inputs.detach()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if x.is_inference():  # inference tensors cannot be saved for backward
            x = x.clone()
        targets = targets.long()
        if targets.is_inference():
            targets = targets.clone()
        try:
            logits = model(x)
            _check_logits(logits, targets)
            if not engine.leaves:
                raise ValueError("none of the layout's layers ran in the forward pass")
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()  # the loss in at least single precision
            loss = F.cross_entropy(logits, targets, reduction="sum")
            torch.autograd.grad(loss, engine.leaves, allow_unused=True)
            engine.finish()
        finally:
            engine.clear()
    return out, logits.detach()


# ---------------------------------------------------------------------------- checks


def _check_batch(inputs: torch.Tensor, targets: torch.Tensor) -> None:
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError("inputs and targets must be torch tensors")
    if inputs.dim() < 1 or inputs.shape[0] == 0:
        raise ValueError(f"empty batch: inputs have shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor, got {inputs.dtype}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices, got {targets.dtype}")
    if targets.shape != (inputs.shape[0],):
        raise ValueError(f"targets must have shape ({inputs.shape[0]},) to match inputs, got {tuple(targets.shape)}")
    if targets.device != inputs.device:
        raise ValueError(f"targets are on {targets.device}, inputs on {inputs.device}")


def _check_logits(logits, targets: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != targets.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape (B, num_classes), got {shape}")
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= logits.shape[1]:
        raise ValueError(f"targets must lie in [0, {logits.shape[1]}), got values in [{low}, {high}]")


@dataclass
class _Layer:
    span: LayerSpan
    module: nn.Module
    numel: int  # weights per filter: C_in/G·kh·kw (conv) or in_features (linear)
    calls: list = field(default_factory=list)  # one _Call per forward call
    shared: torch.Tensor | None = None  # summed per-sample gradient, for layers run more than once


@dataclass
class _Call:
    x: torch.Tensor  # the layer's input, detached
    version: int  # x._version at forward time, to catch later in-place edits


def _resolve(model: nn.Module, layout: FilterLayout) -> list[_Layer]:
    modules = dict(model.named_modules())
    layers = []
    for span in layout:
        module = modules.get(span.name)
        if module is None:
            raise ValueError(f"layout layer {span.name!r} is not a module of this model")
        if span.kind == "conv2d" and isinstance(module, nn.Conv2d):
            filters = module.out_channels
        elif span.kind == "linear" and isinstance(module, nn.Linear):
            filters = module.out_features
        else:
            raise ValueError(f"layout layer {span.name!r} is {span.kind!r} but the module is {type(module).__name__}")
        if filters != span.filters:
            raise ValueError(f"layout layer {span.name!r} has {span.filters} filters, the module {filters}")
        layers.append(_Layer(span, module, module.weight[0].numel()))
    return layers


# ---------------------------------------------------------------------------- engine


class _Engine:
    """Per-layer bookkeeping between the forward hooks and the gradient hooks."""

    def __init__(self, layers: list[_Layer], out: torch.Tensor, budget: int, hooks: HookOwner, channels_last: bool):
        self.layers = layers
        self.channels_last = channels_last
        self.out = out  # (B, F) float32; each layer fills out[:, span.offset:span.stop]
        self.budget_elems = max(1, budget // 4)  # float32 elements
        # On CPU blocks are also kept cache-sized (see _plan); GPUs want big blocks.
        cpu = out.device.type == "cpu"
        self.cache_elems = _CPU_CACHE_BYTES_PER_THREAD * torch.get_num_threads() // 4 if cpu else None
        self.hooks = hooks
        self.leaves: list[torch.Tensor] = []  # what autograd.grad differentiates with respect to

    def forward_hook(self, layer: _Layer):
        def hook(module, args, output):
            if not args or not isinstance(args[0], torch.Tensor) or not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {layer.span.name!r}: expected one tensor input and one tensor output")
            x = args[0]
            expected = 4 if layer.span.kind == "conv2d" else None
            if (expected and x.dim() != expected) or x.shape[0] != self.out.shape[0]:
                raise ValueError(
                    f"layer {layer.span.name!r} got input of shape {tuple(x.shape)}; "
                    f"expected the batch ({self.out.shape[0]}) as the first dimension"
                )
            if not torch.is_grad_enabled():
                return None  # run under no_grad inside the model: no gradient reaches its weights
            call = _Call(x.detach(), x._version)
            layer.calls.append(call)
            if output.requires_grad:
                # Normally downstream of a leaf made below. With no leaf yet, the graph
                # starts at a tensor we do not own: differentiate with respect to this output.
                if not self.leaves:
                    self.leaves.append(output)
                self.hooks.tensor_hook(output, self._grad_hook(layer, call))
                return None
            # The first layers see inputs that need no grad (parameters are frozen), so
            # their outputs start the graph. The clone keeps the leaf out of reach of
            # in-place ops that follow (ReLU(inplace=True) in VGG).
            leaf = output.detach().requires_grad_()
            self.hooks.tensor_hook(leaf, self._grad_hook(layer, call))
            self.leaves.append(leaf)
            if self.channels_last and leaf.dim() == 4:  # (a 1-channel input leaves the stem's output NCHW)
                return torch.empty_like(leaf, memory_format=torch.channels_last).copy_(leaf)
            return leaf.clone()

        return hook

    def _grad_hook(self, layer: _Layer, call: _Call):
        def hook(grad: torch.Tensor) -> None:
            if call.x._version != call.version:
                raise RuntimeError(
                    f"the input of layer {layer.span.name!r} was modified in place after the layer ran; "
                    "per-sample gradients need it unchanged"
                )
            if len(layer.calls) > 1:
                self._accumulate(layer, call.x, grad)
            else:
                self._reduce(layer, call.x, grad)
            call.x = None  # free the saved input as soon as it has been used
            return None

        return hook

    def _reduce(self, layer: _Layer, x: torch.Tensor, go: torch.Tensor) -> None:
        target = self.out[:, layer.span.offset : layer.span.stop]  # (B, C_out) view
        if isinstance(layer.module, nn.Linear) and x.dim() == 2:
            # One position per sample: g[b] = go[b] ⊗ x[b], so sum|g[b, o]| = |go[b, o]|·sum|x[b]|.
            target.copy_(go.abs() * x.abs().sum(1, keepdim=True) / layer.numel)
            return
        groups = _groups(layer.module)
        if go[0, 0].numel() == 1:  # one output position (1x1 maps, SE blocks): rank-one gradients
            target.copy_(_rank_one_sums(layer.module, x, go) / layer.numel)
            return
        sums = go.new_zeros(go.shape[0], groups, layer.span.filters // groups)  # (B, G, C_out/G): sum |g|
        for block in _blocks(layer.module, x, go, self.budget_elems, self.cache_elems):
            grad = block.grad.abs_()  # in place is fine, the block is scratch
            if block.whole:
                torch.sum(grad, block.sum_dims(), out=sums[block.samples].view(-1, sums.shape[2]))
            else:
                view = sums[block.samples, block.groups, block.outs]  # (b, gc, coc)
                view += grad.sum(block.sum_dims()).view(view.shape)
        target.copy_(sums.view(target.shape).div_(layer.numel))  # mean in the gradient's dtype, then float32

    def _accumulate(self, layer: _Layer, x: torch.Tensor, go: torch.Tensor) -> None:
        module = layer.module
        kh, kw = _kernel(module)
        if layer.shared is None:
            layer.shared = go.new_zeros(go.shape[0], layer.span.filters, _in_per_group(module), kh, kw)
        full = layer.shared.unflatten(1, (_groups(module), -1))  # (B, G, C_out/G, C_in/G, kh, kw)
        for block in _blocks(module, x, go, self.budget_elems, self.cache_elems):
            full[block.samples, block.groups, block.outs, block.ins] += block.weight_order(kh, kw)

    def finish(self) -> None:
        for layer in self.layers:
            if layer.shared is not None:
                sums = layer.shared.abs().flatten(2).sum(-1) / layer.numel
                self.out[:, layer.span.offset : layer.span.stop] = sums

    def clear(self) -> None:
        """Drop every saved input and buffer (also after an error), so nothing outlives the call."""
        for layer in self.layers:
            layer.calls.clear()
            layer.shared = None
        self.leaves.clear()


# ---------------------------------------------------------------------------- blocks


def _groups(module: nn.Module) -> int:
    return module.groups if isinstance(module, nn.Conv2d) else 1


def _in_per_group(module: nn.Module) -> int:
    return module.in_channels // module.groups if isinstance(module, nn.Conv2d) else module.in_features


def _kernel(module: nn.Module) -> tuple[int, int]:
    return tuple(module.kernel_size) if isinstance(module, nn.Conv2d) else (1, 1)


@dataclass
class _Block:
    """Part of one layer's per-sample weight gradient: samples × groups × out × in channels.

    ``grad`` is scratch the consumer may overwrite, laid out per ``order``, with
    n = b·gc, K the block's (input channel, kernel) entries of each filter:
      "ck"       (n, coc, cic·kh·kw)    the weight's own order
      "kc"       (n, coc, kh·kw·cic)    from channels-last unfolds
      "rows-ck"  (kh, n, coc, cic·kw)   one matmul per kernel row (see _conv_blocks)
      "rows-kc"  (kh, n, coc, kw·cic)
    """

    samples: slice
    groups: slice
    outs: slice  # output channels within each group
    ins: slice  # input channels within each group
    grad: torch.Tensor
    order: str
    whole: bool = False  # all groups, output and input channels of these samples

    def sum_dims(self) -> tuple[int, ...]:
        return (0, 3) if self.order.startswith("rows") else (-1,)

    def weight_order(self, kh: int, kw: int) -> torch.Tensor:
        """The gradient as ``(b, gc, coc, cic, kh, kw)``."""
        b, gc = self.samples.stop - self.samples.start, self.groups.stop - self.groups.start
        coc, cic = self.outs.stop - self.outs.start, self.ins.stop - self.ins.start
        g = self.grad
        if self.order == "ck":
            return g.view(b, gc, coc, cic, kh, kw)
        if self.order == "kc":
            return g.view(b, gc, coc, kh, kw, cic).permute(0, 1, 2, 5, 3, 4)
        if self.order == "rows-ck":
            return g.view(kh, b, gc, coc, cic, kw).permute(1, 2, 3, 4, 0, 5)
        return g.view(kh, b, gc, coc, kw, cic).permute(1, 2, 3, 5, 0, 4)  # rows-kc


class _Plan(NamedTuple):
    samples: int
    groups: int
    outs: int
    ins: int


def _plan(batch: int, groups: int, outs: int, ins: int, kk: int, span: int, budget: int, cache: int | None) -> _Plan:
    """Block sizes, in float32 elements, for one layer.

    A block of ``b`` samples, ``gc`` groups, ``coc`` output and ``cic`` input channels per
    group holds two intermediates: the unfolded input, ``b·gc·cic·span`` (``span`` =
    unfolded entries per input channel, ``kh·kw·L`` for a full unfold, L = output
    positions), and the gradient block, ``b·gc·coc·cic·kk`` (kk = kh·kw). Their sum stays
    within ``budget``: whole samples are preferred (fewest, largest matmuls); a sample too
    big is split by groups, then by input channels (half the budget for its unfold), then
    by output channels. Never below one channel each: a budget smaller than that is
    exceeded rather than refused. ``cache`` (CPU) caps blocks further, by fewer samples
    and then fewer output channels, so that what the unfold copy and the matmul write is
    still in cache when it is read back.
    """
    unfold, grad = ins * span, outs * ins * kk  # per sample and group
    if groups * (unfold + grad) <= budget:
        plan = _Plan(min(batch, budget // (groups * (unfold + grad))), groups, outs, ins)
    elif unfold + grad <= budget:
        plan = _Plan(1, budget // (unfold + grad), outs, ins)
    else:
        cin = max(1, min(ins, (budget // 2) // max(1, span)))
        plan = _Plan(1, 1, max(1, min(outs, (budget - cin * span) // (cin * kk))), cin)
    if cache is not None:
        unfold, grad = plan.groups * plan.ins * span, plan.groups * plan.outs * plan.ins * kk
        samples = max(1, min(plan.samples, cache // (unfold + grad)))
        outs = plan.outs
        if samples == 1 and unfold + grad > cache:
            outs = max(1, min(outs, (cache - unfold) // (plan.groups * plan.ins * kk)))
        plan = _Plan(samples, plan.groups, outs, plan.ins)
    return plan


def _ranges(total: int, step: int) -> Iterator[slice]:
    for start in range(0, total, step):
        yield slice(start, min(total, start + step))


def _blocks(module: nn.Module, x: torch.Tensor, go: torch.Tensor, budget: int, cache: int | None) -> Iterator[_Block]:
    if isinstance(module, nn.Conv2d):
        return _conv_blocks(module, x, go, budget, cache)
    return _linear_blocks(x, go, budget, cache)


class _ConvOperand(NamedTuple):
    """How the matmul's right operand is cut out of one layer's padded input (see :func:`_conv_blocks`)."""

    mode: str  # "pointwise" | "rows" | "full"
    order: str  # _Block.order of the gradient it gives
    span: int  # unfolded entries per input channel (0: the input itself, no copy)
    size: tuple[int, ...]  # the strided view of one (sample, group), after the (b, gc) axes
    stride: tuple[int, ...]
    channel_axis: int  # where cic sits in ``size``
    last: bool  # channels-last input: K ordered (kernel, cic)


def _conv_operand(conv: nn.Conv2d, x: torch.Tensor, h_out: int, w_out: int) -> _ConvOperand:
    """The unfold strategy for ``conv`` on its padded, contiguous (either format) input ``x``."""
    ins = conv.in_channels // conv.groups
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    _, sc, sy, sx = x.stride()
    last = sc == 1 and ins > 1  # channels-last
    height = x.shape[2]
    if kh * kw == 1 and tuple(x.shape[2:]) == (h_out, w_out):
        return _ConvOperand("pointwise", "ck", 0, (ins, h_out * w_out), (sc, sx), 0, last)
    if sh == 1 and kh > 1 and kw * ins >= 8:  # thinner rows make matmuls too narrow
        span = kw * height * w_out
        if last:
            return _ConvOperand("rows", "rows-kc", span, (height, w_out, kw, ins), (sy, sw * sx, dw * sx, sc), 3, last)
        return _ConvOperand("rows", "rows-ck", span, (ins, kw, height, w_out), (sc, dw * sx, sy, sw * sx), 0, last)
    span = kh * kw * h_out * w_out
    if last:
        return _ConvOperand(
            "full", "kc", span, (h_out, w_out, kh, kw, ins), (sh * sy, sw * sx, dh * sy, dw * sx, sc), 4, last
        )
    return _ConvOperand(
        "full", "ck", span, (ins, kh, kw, h_out, w_out), (sc, dh * sy, dw * sx, sh * sy, sw * sx), 0, last
    )


def _conv_blocks(
    conv: nn.Conv2d, x: torch.Tensor, go: torch.Tensor, budget: int, cache: int | None
) -> Iterator[_Block]:
    """The per-sample gradient of ``conv``'s weight, block by block.

    Three ways to form the matmul's right operand ``(n, L, K)`` from the padded input:

    - pointwise (1x1, stride 1, no padding): the input itself, no copy;
    - rows (vertical stride 1, the usual 3x3): unfold only along the width into
      ``(n, H_in, W_out, kw·cic)``; the operand for kernel row ``p`` is then the contiguous
      slice of rows ``p·dh .. p·dh + H_out``, so one matmul per kernel row and a copy
      ``kh`` times smaller than a full unfold;
    - full unfold ``(n, L, kh·kw·cic)`` otherwise (strided convs).

    Unfolds are strided views copied into a reused buffer, much faster on CPU than
    ``F.unfold``'s im2col, in the input's memory format for long contiguous runs:
    channels-last gives K ordered (kernel, cic), which the |·| sum does not mind.
    """
    batch, groups = x.shape[0], conv.groups
    ins, outs = conv.in_channels // groups, conv.out_channels // groups
    kh, kw = conv.kernel_size
    h_out, w_out = go.shape[2:]
    length = h_out * w_out
    x = _pad(conv, x)
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    op = _conv_operand(conv, x, h_out, w_out)
    rows = op.mode == "rows"
    plan = _plan(batch, groups, outs, ins, kh * kw, op.span, budget, cache)
    whole = plan.groups == groups and plan.outs == outs and plan.ins == ins
    n_max, k_out = plan.samples * plan.groups, plan.ins * (kw if rows else kh * kw)
    out = x.new_empty((kh if rows else 1, n_max, plan.outs, k_out))
    buffer = x.new_empty(n_max * plan.ins * op.span) if op.mode != "pointwise" else None
    go = go.reshape(batch, groups, outs, length)  # a view for either memory format
    go_whole = go.reshape(batch * groups, outs, length) if whole else None
    for s in _ranges(batch, plan.samples):
        for g in _ranges(groups, plan.groups):
            for c in _ranges(ins, plan.ins):
                n, cic = (s.stop - s.start) * (g.stop - g.start), c.stop - c.start
                cols = _conv_columns(x, op, buffer, s, g, c, ins)
                for o in _ranges(outs, plan.outs):
                    coc = o.stop - o.start
                    if whole:
                        grad = go_whole[s.start * groups : s.stop * groups]  # (n, C_out/G, L)
                    else:
                        grad = go[s, g, o].reshape(n, coc, length)
                    result = out[:, :n, :coc, : cic * k_out // plan.ins]
                    _conv_matmuls(conv, op, grad, cols, result, x.shape[2], w_out)
                    yield _Block(s, g, o, c, result if rows else result[0], op.order, whole)


def _conv_columns(
    x: torch.Tensor, op: _ConvOperand, buffer: torch.Tensor | None, s: slice, g: slice, c: slice, ins: int
) -> torch.Tensor:
    """The (unfolded) input of samples ``s``, groups ``g`` and input channels ``c`` within each group."""
    sb, sc = x.stride()[:2]
    b, gc, cic = s.stop - s.start, g.stop - g.start, c.stop - c.start
    shape = (b, gc) + op.size[: op.channel_axis] + (cic,) + op.size[op.channel_axis + 1 :]
    offset = x.storage_offset() + s.start * sb + (g.start * ins + c.start) * sc
    view = x.as_strided(shape, (sb, ins * sc) + op.stride, offset)
    if op.mode == "pointwise":  # (b, gc, cic, L) -> (n, L, cic)
        return view.reshape(b * gc, cic, -1).transpose(1, 2)
    cols = buffer[: math.prod(shape)].view(shape)
    cols.copy_(view)
    return cols


def _conv_matmuls(
    conv: nn.Conv2d,
    op: _ConvOperand,
    grad: torch.Tensor,
    cols: torch.Tensor,
    result: torch.Tensor,
    height: int,
    w_out: int,
) -> None:
    """``result`` ← grad (n, coc, L) @ operand (n, L, K): one bmm, or one per kernel row in "rows" mode."""
    n, _, length = grad.shape
    if op.mode == "rows":
        kh, kw = conv.kernel_size
        dh = conv.dilation[0]
        cic = cols.shape[-1] if op.last else cols.shape[2]
        flat = cols.view(n, -1, height * w_out) if not op.last else cols.view(n, height * w_out, kw * cic)
        for p in range(kh):
            first = p * dh * w_out  # operand rows: input rows p·dh .. p·dh + H_out
            if op.last:  # (n, L, kw·cic)
                operand = flat[:, first : first + length]
            else:  # (n, cic·kw, L) -> (n, L, cic·kw)
                operand = flat[:, :, first : first + length].transpose(1, 2)
            torch.bmm(grad, operand, out=result[p])
        return
    if op.mode == "full":
        cols = cols.view(n, length, -1) if op.last else cols.view(n, -1, length).transpose(1, 2)
    torch.bmm(grad, cols, out=result[0])


def _rank_one_sums(conv: nn.Conv2d, x: torch.Tensor, go: torch.Tensor) -> torch.Tensor:
    """``sum |g|`` per filter when the output has one position: ``g[b, o] = go[b, o] ⊗ x_window[b]``,
    so ``sum |g[b, o]| = |go[b, o]|·sum |x_window[b]|`` (the window within o's group), ``(B, C_out)``."""
    batch, groups = x.shape[0], conv.groups
    cols = F.unfold(_pad(conv, x), conv.kernel_size, conv.dilation, 0, conv.stride)  # (B, C_in·kh·kw, 1)
    window = cols.view(batch, groups, -1).abs().sum(-1, keepdim=True)  # (B, G, 1)
    return (go.reshape(batch, groups, -1).abs() * window).view(batch, -1)


def _pad(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input as the convolution sees it after padding (any mode, numeric or 'same'/'valid')."""
    if conv.padding == "valid":
        return x
    if conv.padding == "same":
        pads = []
        for d, k in zip(reversed(conv.dilation), reversed(conv.kernel_size)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
    else:
        pads = [p for p in reversed(conv.padding) for _ in range(2)]
    if not any(pads):
        return x
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    return F.pad(x, pads, mode=mode)


def _linear_blocks(x: torch.Tensor, go: torch.Tensor, budget: int, cache: int | None) -> Iterator[_Block]:
    batch, ins, outs = x.shape[0], x.shape[-1], go.shape[-1]
    x = x.reshape(batch, -1, ins)  # (B, T, in): T = 1 for the usual (B, in) input
    go = go.reshape(batch, -1, outs)  # (B, T, out)
    plan = _plan(batch, 1, outs, ins, 1, x.shape[1], budget, cache)
    whole = plan.outs == outs and plan.ins == ins
    one = slice(0, 1)
    for s in _ranges(batch, plan.samples):
        for c in _ranges(ins, plan.ins):
            for o in _ranges(outs, plan.outs):
                # (b, coc, T) @ (b, T, cic) -> (b, coc, cic) per-sample gradient
                yield _Block(s, one, o, c, torch.bmm(go[s, :, o].transpose(1, 2), x[s, :, c]), "ck", whole)
