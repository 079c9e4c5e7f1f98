"""Interventions: pruning zeroes feature maps exactly, steps touch only their filters, copies only."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parasal.core.interventions import (
    batchnorm_consumers,
    finetune_step,
    perturb_filters,
    prune_filters,
    smoothgrad_saliency,
)
from parasal.core.layout import filter_layout
from parasal.core.reference import per_sample_filter_saliency

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=True),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),  # no BN after this one
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    _randomize_batchnorm(net)
    return net.to(dtype).eval()


def _randomize_batchnorm(model: nn.Module) -> None:
    """Non-trivial running stats and affine parameters, so a BN maps 0 to something non-zero."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) + 0.5)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    for k, v in snapshot.items():
        assert torch.equal(state[k], v), k


# --------------------------------------------------------------------------- pruning


def _resnet():
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5)


def _vgg_bn():
    from torchvision.models.vgg import make_layers

    return nn.Sequential(
        make_layers([8, "M", 16, 16, "M"], batch_norm=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)
    )


def _mobilenet():
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(width_mult=0.25, num_classes=5)


ARCHITECTURES = {
    # name: (factory, input size, {conv layer: its BN}) for layers worth naming
    "resnet": (
        _resnet,
        32,
        {"conv1": "bn1", "layer1.0.conv2": "layer1.0.bn2", "layer2.0.downsample.0": "layer2.0.downsample.1"},
    ),
    "vgg-bn": (_vgg_bn, 16, {"0.0": "0.1", "0.4": "0.5", "0.7": "0.8"}),
    "mobilenet": (
        _mobilenet,
        32,
        {
            "features.0.0": "features.0.1",  # stem
            "features.2.conv.1.0": "features.2.conv.1.1",  # depthwise
            "features.2.conv.2": "features.2.conv.3",
        },
    ),  # linear projection
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_prune_zeroes_the_batchnorm_output_of_pruned_channels(arch):
    factory, size, expected = ARCHITECTURES[arch]
    torch.manual_seed(0)
    model = factory()
    _randomize_batchnorm(model)
    model.eval()
    layout = filter_layout(model)
    x = torch.randn(2, 3, size, size)

    static = batchnorm_consumers(model, layout)
    traced = batchnorm_consumers(model, layout, example_input=x[:1])
    assert static == traced
    for conv, bn in expected.items():
        assert static[conv] == (bn,)
    # every conv of these conv -> BN architectures has its BN (mobilenet's last 1x1 conv too)
    assert set(static) == {span.name for span in layout}

    # two filters in each named layer, by profile index
    chosen = [layout.layer(name).offset + c for name in expected for c in (0, layout.layer(name).filters - 1)]
    before = _snapshot(model)
    pruned = prune_filters(model, layout, chosen)
    _assert_same(model, before)  # the original is untouched

    modules = dict(pruned.named_modules())
    outputs = {}
    handles = [
        modules[bn].register_forward_hook(lambda m, i, o, bn=bn: outputs.__setitem__(bn, o)) for bn in expected.values()
    ]
    with torch.no_grad():
        pruned(x)
    for h in handles:
        h.remove()
    for conv, bn in expected.items():
        channels = [0, layout.layer(conv).filters - 1]
        out = outputs[bn]  # (B, C, H, W)
        assert torch.count_nonzero(out[:, channels]) == 0, (conv, bn)
        kept = [c for c in range(out.shape[1]) if c not in channels]
        assert torch.count_nonzero(out[:, kept]) > 0


def test_prune_filters_zeroes_weights_bias_and_bn_channel_only():
    model = tiny_net()
    layout = filter_layout(model)
    before = _snapshot(model)
    # filter 1 of conv "0" (has bias, BN "1"), filter 2 of conv "6" (bias, no BN)
    pruned = prune_filters(model, layout, [1, layout.layer("6").offset + 2])
    _assert_same(model, before)
    state = pruned.state_dict()
    assert not pruned.training
    assert torch.count_nonzero(state["0.weight"][1]) == 0 and state["0.bias"][1] == 0
    assert state["1.weight"][1] == 0 and state["1.bias"][1] == 0
    assert torch.count_nonzero(state["6.weight"][2]) == 0 and state["6.bias"][2] == 0
    changed = {k for k in state if not torch.equal(state[k], before[k])}
    assert changed == {"0.weight", "0.bias", "1.weight", "1.bias", "6.weight", "6.bias"}
    for key in changed:  # only the pruned rows changed
        rows = [1] if key[0] in "01" else [2]
        keep = [r for r in range(len(state[key])) if r not in rows]
        assert torch.equal(state[key][keep], before[key][keep])
    # the feature map after BN "1" channel 1 is zero; without zeroing BN it would be its shift
    h = pruned[:2](torch.randn(3, 1, 16, 16))
    assert torch.count_nonzero(h[:, 1]) == 0 and torch.count_nonzero(h[:, 0]) > 0


def test_batchnorm_consumers_registration_order_needs_adjacency():
    # a BN registered right after a conv of a different width is not taken; a conv whose next
    # leaf is an activation has no BN
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(5), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.BatchNorm2d(5))
    assert batchnorm_consumers(model, filter_layout(model)) == {}


class _BatchNormFirst(nn.Module):
    """BN registered before the conv it normalises: only tracing can pair them."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_traced_consumers_follow_the_data_not_the_registration_order():
    model = _BatchNormFirst()
    _randomize_batchnorm(model)
    model.eval()
    layout = filter_layout(model)
    x = torch.randn(2, 1, 8, 8)
    assert batchnorm_consumers(model, layout) == {}
    assert batchnorm_consumers(model, layout, example_input=x) == {"conv": ("bn",)}
    pruned = prune_filters(model, layout, [2], example_input=x)
    assert torch.count_nonzero(pruned.bn(pruned.conv(x))[:, 2]) == 0
    assert torch.count_nonzero(prune_filters(model, layout, [2]).bn(pruned.conv(x))[:, 2]) > 0
    assert not any(m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------- finetune_step


def _manual_grads(model, x, y):
    clone = copy.deepcopy(model).eval()
    loss = F.cross_entropy(clone(x), y)
    return dict(zip([n for n, _ in clone.named_parameters()], torch.autograd.grad(loss, list(clone.parameters()))))


def _data(dtype=torch.float64, n=5):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 1, 16, 16, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def test_finetune_step_moves_only_the_chosen_filters_by_the_eval_mode_gradient():
    model = tiny_net(torch.float64).train()  # train mode: the step must still use BN's running stats
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = _snapshot(model)
    layout = filter_layout(model)
    x, y = _data()
    step = 0.25
    # filter 3 of conv "0" (with bias) and filter 4 of conv "3" (no bias)
    tuned, norm = finetune_step(model, layout, x, y, [3, layout.layer("3").offset + 4], step_size=step)

    _assert_same(model, before)
    assert model.training and all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert not tuned.training

    grads = _manual_grads(tiny_net(torch.float64), x, y)  # same weights, eval mode
    state = tuned.state_dict()
    expected = {"0.weight": 3, "0.bias": 3, "3.weight": 4}
    for key, value in state.items():
        if key not in expected:
            assert torch.equal(value, before[key]), key
            continue
        row = expected[key]
        torch.testing.assert_close(value[row], before[key][row] - step * grads[key][row], rtol=0, atol=1e-12)
        others = [r for r in range(len(value)) if r != row]
        assert torch.equal(value[others], before[key][others])
    manual_norm = torch.sqrt(
        grads["0.weight"][3].pow(2).sum() + grads["0.bias"][3] ** 2 + grads["3.weight"][4].pow(2).sum()
    )
    assert norm == pytest.approx(float(manual_norm), rel=1e-10)
    assert norm > 0


def test_finetune_step_target_norm_rescales_the_update():
    model = tiny_net(torch.float64)
    layout = filter_layout(model)
    x, y = _data()
    filters = [0, 5, 9, 17]
    plain, norm = finetune_step(model, layout, x, y, filters, step_size=0.1)
    scaled, norm2 = finetune_step(model, layout, x, y, filters, step_size=0.1, target_norm=3.0)
    assert norm2 == norm  # the returned norm is the one before rescaling
    before = model.state_dict()

    def update_norm(tuned):
        state = tuned.state_dict()
        return float(torch.sqrt(sum((state[k] - before[k]).pow(2).sum() for k in state))) / 0.1

    assert update_norm(plain) == pytest.approx(norm, rel=1e-9)
    assert update_norm(scaled) == pytest.approx(3.0, rel=1e-9)


def test_finetune_step_whole_network():
    model = tiny_net(torch.float64)
    x, y = _data()
    tuned, norm = finetune_step(model, filter_layout(model), x, y, None, step_size=0.5)
    grads = _manual_grads(model, x, y)
    state, before = dict(tuned.named_parameters()), dict(model.named_parameters())
    for name, g in grads.items():
        torch.testing.assert_close(state[name], before[name] - 0.5 * g, rtol=0, atol=1e-12)
    assert norm == pytest.approx(float(torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))), rel=1e-10)
    # running statistics unchanged: BN stayed in eval mode
    assert torch.equal(tuned[1].running_mean, model[1].running_mean)


def test_finetune_step_single_image_and_frozen_parameters():
    model = tiny_net(torch.float64)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = _data()
    tuned, norm = finetune_step(model, filter_layout(model), x[0], int(y[0]), [2], step_size=1.0)
    assert norm > 0 and not torch.equal(tuned[0].weight[2], model[0].weight[2])
    assert not any(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- perturbation


def test_perturb_filters_adds_seeded_noise_of_std_sigma_to_weights_only():
    model = tiny_net(torch.float64)
    layout = filter_layout(model)
    before = _snapshot(model)
    filters = list(range(layout.layer("3").offset, layout.layer("6").stop))  # every filter of convs 3 and 6
    a = perturb_filters(model, layout, filters, sigma=0.5, generator=torch.Generator().manual_seed(5))
    b = perturb_filters(model, layout, filters, sigma=0.5, generator=torch.Generator().manual_seed(5))
    c = perturb_filters(model, layout, filters, sigma=0.5, generator=torch.Generator().manual_seed(6))
    _assert_same(model, before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    changed = {k for k in sa if not torch.equal(sa[k], before[k])}
    assert changed == {"3.weight", "6.weight"}  # not the bias of conv 6, not conv 0
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["6.weight"], sc["6.weight"])
    noise = torch.cat([(sa[k] - before[k]).flatten() for k in changed])
    assert noise.std().item() == pytest.approx(0.5, rel=0.15)
    assert abs(noise.mean().item()) < 0.1


# --------------------------------------------------------------------------- SmoothGrad


def test_smoothgrad_matches_the_documented_noise_and_reference_saliency():
    model = tiny_net()
    layout = filter_layout(model)
    x, y = _data(torch.float32, n=3)
    x[1] *= 4.0  # per-input noise scale follows each input's range
    before = _snapshot(model)
    result = smoothgrad_saliency(model, x, y, samples=3, noise=0.2, generator=torch.Generator().manual_seed(9))
    again = smoothgrad_saliency(model, x, y, samples=3, noise=0.2, generator=torch.Generator().manual_seed(9))
    _assert_same(model, before)
    assert result.shape == (3, layout.num_filters) and result.dtype == torch.float32
    assert torch.equal(result, again)

    g = torch.Generator().manual_seed(9)
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    expected = (
        torch.stack(
            [
                per_sample_filter_saliency(model, x + 0.2 * spread * torch.randn(x.shape, generator=g), y)
                for _ in range(3)
            ]
        )
        .double()
        .mean(0)
        .float()
    )
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-7)

    plain = per_sample_filter_saliency(model, x, y)
    torch.testing.assert_close(smoothgrad_saliency(model, x, y, samples=2, noise=0.0), plain, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(result, plain, rtol=1e-3)
