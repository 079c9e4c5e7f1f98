"""filter_saliency (the batched engine) against the per-sample autograd oracle, and its hygiene.

Tolerance, per layout layer: |fast - oracle| <= 1e-4·|oracle| + 1e-5·max|oracle in that layer|.
Both sides are float32 with different summation orders. Against a float64 oracle each of
them is off by up to ~7e-7 of the layer's largest entry (measured on the three torchvision
models below), and by up to ~1e-3 *relative* on entries that are tiny because of cancellation,
hence a scale term rather than a pure rtol. Per-layer scale keeps small-valued deep
layers from hiding behind the large shallow ones. A float64 run checks the maths down to
the float32 rounding (1 ulp) of the returned profile.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from parasal.core import _hooks
from parasal.core.layout import FilterLayout, filter_layout
from parasal.core.reference import per_sample_filter_saliency
from parasal.core.saliency import _blocks, _plan, filter_saliency

RTOL, LAYER_ATOL = 1e-4, 1e-5


def assert_matches(fast: torch.Tensor, oracle: torch.Tensor, layout: FilterLayout, rtol=RTOL, layer_atol=LAYER_ATOL):
    assert fast.shape == oracle.shape == (oracle.shape[0], layout.num_filters)
    assert fast.dtype == torch.float32
    assert oracle.abs().max() > 0
    for span in layout:
        a, b = fast[:, span.offset : span.stop], oracle[:, span.offset : span.stop]
        atol = layer_atol * float(b.abs().max())
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, name=span.name: f"layer {name}: {m}")


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial eval-mode BatchNorm (running stats and affine), so BN is not a no-op."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


class OddConvs(nn.Module):
    """Dilated, 1x7, strided, padded, 'same'/'valid', reflect-padded, groups=2, bias and no bias."""

    def __init__(self, classes=7):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=True),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),  # in place on a conv-BN output, like torchvision
            nn.Conv2d(8, 8, (1, 7), padding=(0, 3), bias=False),
            nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, bias=True),
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.Conv2d(12, 12, 3, padding=1, groups=2, bias=False),
            nn.Conv2d(12, 16, (5, 3), stride=(2, 1), padding="valid", bias=True),
            nn.ReLU(inplace=True),  # in place directly on a conv output (VGG style)
            nn.Conv2d(16, 16, 4, padding="same", padding_mode="reflect", bias=False),  # asymmetric padding
            nn.Conv2d(16, 16, 1, stride=2, bias=True),
            nn.Conv2d(16, 16, 1, groups=2, bias=False),
            nn.BatchNorm2d(16),
            nn.Conv2d(16, 32, 3, padding=1, groups=16, bias=False),  # depthwise, channel multiplier 2
            nn.Conv2d(32, 32, 3, padding=2, dilation=2, bias=False),  # dilated, stride 1
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class TokenNet(nn.Module):
    """A conv, then a linear layer over a (B, T, C) sequence, shared weights (two calls)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.shared = nn.Conv2d(6, 6, 3, padding=1, groups=3)  # runs twice: per-call grads must be summed
        self.mix = nn.Linear(6, 9)
        self.fc = nn.Linear(9, 4)

    def forward(self, x):
        y = self.shared(torch.relu(self.shared(self.conv(x))))
        tokens = y.flatten(2).transpose(1, 2)  # (B, T, 6)
        return self.fc(torch.tanh(self.mix(tokens)).mean(1))


def _batch(b, c, size, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, size, size, generator=g), torch.randint(0, classes, (b,), generator=g)


def _torchvision(name):
    torch.manual_seed(0)
    return randomize(getattr(torchvision.models, name)(num_classes=10))


def _odd_convs():
    torch.manual_seed(0)
    return randomize(OddConvs())


CASES = {
    "resnet18": (lambda: _torchvision("resnet18"), 3, 32, 10),
    "vgg11": (lambda: _torchvision("vgg11"), 3, 32, 10),
    "mobilenet_v3_small": (lambda: _torchvision("mobilenet_v3_small"), 3, 32, 10),
    "odd_convs": (_odd_convs, 3, 21, 7),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_oracle(name):
    build, channels, size, classes = CASES[name]
    model = build()
    x, y = _batch(4, channels, size, classes)
    layout = filter_layout(model)
    fast = filter_saliency(model, x, y)
    assert_matches(fast, per_sample_filter_saliency(model, x, y), layout)
    # samples are independent: a sample's profile does not depend on the rest of the batch
    torch.testing.assert_close(filter_saliency(model, x[2:3], y[2:3]), fast[2:3], rtol=1e-5, atol=1e-6 * fast.max())


def test_return_logits_gives_the_eval_forward_of_the_same_pass():
    model = _odd_convs()
    x, y = _batch(3, 3, 20, 7)
    model.train()  # the engine runs in eval mode whatever the model's flag; its logits too
    saliency, logits = filter_saliency(model, x, y, return_logits=True)
    assert model.training
    torch.testing.assert_close(saliency, filter_saliency(model, x, y))
    with torch.no_grad():
        expected = model.eval()(x)  # (B, K)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    assert not logits.requires_grad and logits.shape == (3, 7)


def test_float64_matches_oracle_exactly():
    model = _odd_convs().double()
    x, y = _batch(3, 3, 21, 7)
    layout = filter_layout(model, include_linear=True)
    fast = filter_saliency(model, x.double(), y, layout=layout)
    oracle = per_sample_filter_saliency(model, x.double(), y, layout=layout)
    assert_matches(fast, oracle, layout, rtol=1.2e-7, layer_atol=1e-12)  # 1 ulp: both rounded to float32 at the end


def test_linear_units_shared_layers_and_sequences_match_oracle():
    torch.manual_seed(1)
    model = TokenNet().eval()
    x, y = _batch(5, 2, 6, 4)
    layout = filter_layout(model, include_linear=True)
    assert [s.kind for s in layout] == ["conv2d", "conv2d", "linear", "linear"]
    fast = filter_saliency(model, x, y, layout=layout)
    assert_matches(fast, per_sample_filter_saliency(model, x, y, layout=layout), layout)
    resnet = _torchvision("resnet18")
    x, y = _batch(3, 3, 32, 10)
    layout = filter_layout(resnet, include_linear=True)
    fast = filter_saliency(resnet, x, y, layout=layout)
    assert_matches(fast, per_sample_filter_saliency(resnet, x, y, layout=layout), layout)
    # the conv part of a conv+linear layout is the conv-only profile
    torch.testing.assert_close(fast[:, :4800], filter_saliency(resnet, x, y), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name, budgets", [("odd_convs", (1, 600, 40_000)), ("mobilenet_v3_small", (60_000,))])
def test_tiny_memory_budget_gives_the_same_result(name, budgets):
    build, channels, size, classes = CASES[name]
    model = build()
    x, y = _batch(3, channels, size, classes)
    layout = filter_layout(model, include_linear=True)
    default = filter_saliency(model, x, y, layout=layout)
    for budget in budgets:  # bytes: layers split by samples, groups, input and output channels
        chunked = filter_saliency(model, x, y, layout=layout, max_memory_bytes=budget)
        assert_matches(chunked, default, layout, rtol=1e-5, layer_atol=1e-6)


BLOCK_CONVS = {  # every unfold strategy: pointwise, rows (vertical stride 1), full; grouped and not
    "pointwise": dict(in_channels=6, out_channels=4, kernel_size=1),
    "pointwise_grouped": dict(in_channels=6, out_channels=4, kernel_size=1, groups=2),
    "rows": dict(in_channels=4, out_channels=5, kernel_size=3, padding=1),
    "rows_dilated_wide": dict(
        in_channels=4, out_channels=6, kernel_size=(3, 2), padding=(2, 1), dilation=2, stride=(1, 2)
    ),
    "rows_grouped": dict(in_channels=12, out_channels=6, kernel_size=3, padding=1, groups=3),
    "full_strided": dict(in_channels=4, out_channels=5, kernel_size=3, stride=2, padding=1),
    "full_thin": dict(in_channels=1, out_channels=3, kernel_size=3, padding=1),
    "full_depthwise": dict(in_channels=4, out_channels=8, kernel_size=3, stride=(2, 1), groups=4),
}


@pytest.mark.parametrize("name", list(BLOCK_CONVS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_blocks_assemble_the_per_sample_gradient(name, channels_last):
    """Blocks, in every order and split, put each per-sample weight-gradient entry where it belongs."""
    torch.manual_seed(3)
    conv = nn.Conv2d(**BLOCK_CONVS[name], bias=False)
    x = torch.randn(3, conv.in_channels, 9, 8, dtype=torch.float64)
    go = torch.randn_like(conv.double()(x))
    if channels_last:
        x, go = x.contiguous(memory_format=torch.channels_last), go.contiguous(memory_format=torch.channels_last)
    expected = torch.stack(
        [
            torch.nn.grad.conv2d_weight(
                x[b : b + 1], conv.weight.shape, go[b : b + 1], conv.stride, conv.padding, conv.dilation, conv.groups
            )
            for b in range(len(x))
        ]
    )  # (B, C_out, C_in/G, kh, kw)
    kh, kw = conv.kernel_size
    for budget, cache in ((10**9, None), (10**9, 64), (50, None), (1, None)):
        got = torch.full_like(expected, float("nan"))
        full = got.unflatten(1, (conv.groups, -1))
        for block in _blocks(conv, x, go, budget, cache):
            full[block.samples, block.groups, block.outs, block.ins] = block.weight_order(kh, kw)
            kernel_first = channels_last and conv.in_channels // conv.groups > 1 and "point" not in name
            assert block.order.startswith("rows") == name.startswith("rows")
            assert block.order.endswith("kc") == kernel_first
        torch.testing.assert_close(
            got, expected, rtol=1e-12, atol=1e-12, msg=lambda m, budget=budget: f"budget {budget}: {m}"
        )


def test_plan_respects_the_budget():
    # (batch, groups, outs per group, ins per group, kh·kw, unfolded entries per input channel)
    shapes = [
        (64, 1, 512, 512, 9, 9 * 49),
        (64, 576, 1, 1, 9, 9 * 196),
        (8, 2, 6, 6, 9, 3 * 21 * 23),
        (16, 1, 10, 4096, 1, 1),
    ]
    for batch, groups, outs, ins, kk, span in shapes:
        assert _plan(batch, groups, outs, ins, kk, span, 10**12, None) == (batch, groups, outs, ins)
        for budget in (10**2, 10**3, 10**4, 10**5, 10**6, 10**8):
            plan = _plan(batch, groups, outs, ins, kk, span, budget, None)
            assert 1 <= plan.samples <= batch and 1 <= plan.groups <= groups
            assert 1 <= plan.outs <= outs and 1 <= plan.ins <= ins
            used = plan.samples * plan.groups * plan.ins * (span + plan.outs * kk)  # unfold + gradient block
            at_floor = plan.samples == plan.groups == 1 and 1 in (plan.ins, plan.outs)
            assert used <= budget or at_floor, (plan, budget)
    # the CPU cache cap shrinks blocks further, down to one sample, then fewer output channels
    assert _plan(64, 1, 128, 128, 9, 9 * 49, 10**9, 1 << 18).samples == 1
    assert _plan(64, 1, 32, 32, 9, 9 * 49, 10**9, 1 << 18).samples == (1 << 18) // (32 * 9 * (49 + 32))
    assert _plan(64, 1, 512, 512, 9, 9 * 49, 10**9, 1 << 20).outs == ((1 << 20) - 512 * 9 * 49) // (512 * 9)


def test_model_state_is_untouched():
    model = _odd_convs()
    model.train()  # a training model, with one BatchNorm frozen in eval mode
    model.features[5].eval()
    frozen = model.features[3].weight
    frozen.requires_grad_(False)
    existing = model.features[0].weight
    existing.grad = torch.full_like(existing, 0.25)
    grad_object = existing.grad
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    state = copy.deepcopy(model.state_dict())
    x, y = _batch(4, 3, 21, 7)

    fast = filter_saliency(model, x, y)

    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert existing.grad is grad_object and torch.equal(existing.grad, torch.full_like(existing, 0.25))
    assert all(p.grad is None for p in model.parameters() if p is not existing)
    for key, value in model.state_dict().items():  # weights and BN running stats (eval mode: no update)
        assert torch.equal(value, state[key]), key
    trainable = copy.deepcopy(model).requires_grad_(True)
    per_sample_filter_saliency(trainable, x, y)  # the oracle restores mixed modes too
    assert {name: m.training for name, m in trainable.named_modules()} == modes
    # and the profile is the eval-mode one, frozen layer included
    eval_model = copy.deepcopy(model).eval().requires_grad_(True)
    assert_matches(fast, per_sample_filter_saliency(eval_model, x, y), filter_layout(model))


def _hook_counts(model):
    return [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
        for m in model.modules()
    ]


class _Boom(RuntimeError):
    pass


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise _Boom("backward failed")


def _released(model, before, flags, modes):
    assert _hook_counts(model) == before
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())


def test_hooks_are_released_after_success_and_after_errors(monkeypatch):
    model = _odd_convs().train()
    x, y = _batch(3, 3, 21, 7)
    before = _hook_counts(model)
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    owners = []
    real = _hooks.HookOwner

    class Tracking(real):  # every owner the engine makes, to check it ends empty
        def __init__(self):
            super().__init__()
            owners.append(self)

    monkeypatch.setattr("parasal.core.saliency.HookOwner", Tracking)

    filter_saliency(model, x, y)
    _released(model, before, flags, modes)

    # an exception mid-forward, from a user's hook on a layer the engine also hooks
    handle = model.features[4].register_forward_hook(lambda *a: (_ for _ in ()).throw(_Boom("forward failed")))
    with pytest.raises(_Boom, match="forward failed"):
        filter_saliency(model, x, y)
    handle.remove()
    _released(model, before, flags, modes)

    # an exception mid-backward, after the gradient hooks of later layers have fired
    original = model.features[7].forward
    model.features[7].forward = lambda t: original(_FailingBackward.apply(t))
    with pytest.raises(_Boom, match="backward failed"):
        filter_saliency(model, x, y)
    del model.features[7].forward
    _released(model, before, flags, modes)

    # bad targets are refused (before any hook is placed)
    with pytest.raises(ValueError, match="targets must have shape"):
        filter_saliency(model, x, y[:2])
    _released(model, before, flags, modes)

    assert len(owners) == 3 and all(len(owner) == 0 for owner in owners)
    torch.testing.assert_close(filter_saliency(model, x, y), filter_saliency(model, x, y))  # still usable


def test_hook_owner_releases_on_exit_and_does_not_swallow():
    layer = nn.Linear(2, 2)
    t = torch.zeros(2, requires_grad=True)
    with pytest.raises(_Boom):
        with _hooks.HookOwner() as owner:
            owner.forward_hook(layer, lambda *a: None)
            owner.tensor_hook(t, lambda g: None)
            assert len(owner) == 2 and len(layer._forward_hooks) == 1
            raise _Boom()
    assert len(owner) == 0 and len(layer._forward_hooks) == 0
    owner.release()  # idempotent


def test_input_errors():
    model = _odd_convs()
    x, y = _batch(3, 3, 21, 7)
    with pytest.raises(ValueError, match="empty batch"):
        filter_saliency(model, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"targets must have shape \(3,\)"):
        filter_saliency(model, x, y[:, None])
    with pytest.raises(TypeError, match="integer class indices"):
        filter_saliency(model, x, y.float())
    with pytest.raises(TypeError, match="integer class indices"):
        filter_saliency(model, x, y > 2)
    with pytest.raises(ValueError, match="targets are on meta"):
        filter_saliency(model, x, y.to("meta"))
    torch.testing.assert_close(filter_saliency(model, x, y.int()), filter_saliency(model, x, y))  # any int dtype
    with pytest.raises(TypeError, match="floating-point"):
        filter_saliency(model, x.long(), y)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 7\)"):
        filter_saliency(model, x, torch.tensor([0, 7, 1]))
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        filter_saliency(nn.Sequential(nn.Flatten(), nn.Linear(3 * 21 * 21, 7)), x, y)
    with pytest.raises(ValueError, match="not a module of this model"):
        filter_saliency(model, x, y, layout=filter_layout(TokenNet()))
    with pytest.raises(ValueError, match="max_memory_bytes"):
        filter_saliency(model, x, y, max_memory_bytes=0)


class ViewNet(nn.Module):
    """Flattens conv activations with .view(), which needs NCHW-contiguous tensors."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.shape[0], -1))


def test_models_that_need_nchw_and_calls_under_no_grad_or_inference_mode():
    torch.manual_seed(2)
    model = ViewNet().eval()
    x, y = _batch(3, 3, 6, 5)
    layout = filter_layout(model, include_linear=True)
    oracle = per_sample_filter_saliency(model, x, y, layout=layout)
    assert_matches(filter_saliency(model, x, y, layout=layout), oracle, layout)
    with torch.no_grad():
        assert_matches(filter_saliency(model, x, y, layout=layout), oracle, layout)
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()  # inference tensors
        assert_matches(filter_saliency(model, x_inf, y_inf, layout=layout), oracle, layout)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_oracle(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # TF32 oracle convs would be off by ~1e-3
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = _torchvision("resnet18").cuda()
    x, y = _batch(4, 3, 32, 10)
    x, y = x.cuda(), y.cuda()
    fast = filter_saliency(model, x, y)
    assert fast.device.type == "cuda"
    assert_matches(fast.cpu(), per_sample_filter_saliency(model, x, y).cpu(), filter_layout(model))
