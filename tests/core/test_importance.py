"""filter_importance against a plain per-sample autograd loop, for every method, and its hygiene.

The oracle runs one sample at a time on a deep copy of the model with in-place ReLUs turned
off, takes the conv's output from a forward hook (a non-leaf: the copy's weights require
grad) and differentiates that sample's own objective with ``autograd.grad``; each method's
formula is written out again here, in float64 numpy. Models run in float64 so that the
comparison is at the float32 rounding of the returned scores.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from parasal.core import IMPORTANCE_METHODS, filter_importance, last_conv_layer

pytestmark = pytest.mark.usefixtures("one_thread")


class GroupedDilated(nn.Module):
    """Dilated and grouped convs, a BN, an in-place ReLU on a conv output; the last conv is grouped + dilated."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=2, dilation=2),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 6, 3, stride=2, padding=2, dilation=2, groups=2),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class ShortcutLast(nn.Module):
    """Registration order != execution order: the shortcut conv is registered first but runs last."""

    def __init__(self):
        super().__init__()
        self.shortcut = nn.Conv2d(3, 4, 1)
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        out = self.body(x)
        out = out + self.shortcut(x)
        return self.fc(out.mean((2, 3)))


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _vgg11() -> nn.Module:
    """torchvision's VGG11 features (in-place ReLUs on conv outputs, no BN) and a small head with Dropout."""
    model = torchvision.models.vgg11(weights=None)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Linear(512, 32), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(32, 10))
    return model


MODELS = {
    "resnet18": (lambda: _randomize_bn(torchvision.models.resnet18(weights=None, num_classes=10)), 64, 10),
    "vgg11": (_vgg11, 64, 10),
    "grouped_dilated": (GroupedDilated, 20, 5),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    torch.manual_seed(0)
    build, size, classes = MODELS[request.param]
    model = build().double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, size, size, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (3,), generator=g)
    return request.param, model, x, y


def oracle(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str, method: str) -> np.ndarray:
    """(B, N) float64, one sample at a time."""
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # the hooked output must stay the conv's output
    conv = dict(plain.named_modules())[layer]
    rows = []
    for xi, yi in zip(x, y.tolist()):
        seen: list[torch.Tensor] = []
        handle = conv.register_forward_hook(lambda m, args, out, seen=seen: seen.append(out))
        try:
            logits = plain(xi[None])[0]  # (K,)
        finally:
            handle.remove()
        (a,) = seen  # (1, N, H, W)
        if method == "l1":
            rows.append(a[0].detach().abs().sum((1, 2)).numpy())
            continue
        if method == "taylor":
            objective = F.cross_entropy(logits[None], torch.tensor([yi]))
        elif method in ("grad_amap", "taylor_class"):
            objective = torch.softmax(logits, 0)[yi]
        else:
            objective = logits[yi]
        (g,) = torch.autograd.grad(objective, a)
        rows.append(_formula(method, a[0].detach().numpy(), g[0].numpy()))
    return np.stack(rows)


def _formula(method: str, a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(N,) from one sample's activation and gradient (N, H, W), channel by channel."""
    out = []
    for an, gn in zip(a, g):
        if method == "grad_amap":
            out.append(np.mean(gn * an))
        elif method in ("taylor", "taylor_class"):
            out.append(abs(np.mean(gn * an)))
        elif method == "grad_cam":
            out.append(np.mean(gn))
        else:  # grad_cam_pp
            denominator = 2 * gn**2 + an.sum() * gn**3
            weights = np.where(gn != 0, gn**2 / (denominator + 1e-7), 0.0)
            out.append(np.sum(weights * np.maximum(gn, 0)))
    return np.array(out)


@pytest.mark.parametrize("method", [m for m in IMPORTANCE_METHODS if m != "random"])
def test_matches_per_sample_oracle(case, method):
    name, model, x, y = case
    layer = last_conv_layer(model, x[:1])
    fast = filter_importance(model, x, y, method=method)
    assert fast.dtype == torch.float32 and fast.shape == (3, dict(model.named_modules())[layer].out_channels)
    slow = oracle(model, x, y, layer, method)
    assert np.abs(slow).max() > 0, f"{name}/{method}: degenerate oracle"
    scale = np.abs(slow).max()
    np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-5, atol=1e-6 * scale, err_msg=f"{name}/{method}")


def test_named_intermediate_layer_matches_oracle():
    model = _randomize_bn(torchvision.models.resnet18(weights=None, num_classes=10)).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([3, 7])
    for method in ("grad_amap", "grad_cam_pp"):
        fast = filter_importance(model, x, y, layer="layer3.0.conv1", method=method)
        slow = oracle(model, x, y, "layer3.0.conv1", method)
        assert fast.shape == (2, 256)
        np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-5, atol=1e-6 * np.abs(slow).max())


def test_default_layer_is_the_last_conv_to_run():
    model = ShortcutLast().eval()
    x = torch.randn(2, 3, 8, 8)
    assert last_conv_layer(model, x) == "shortcut"
    default = filter_importance(model, x, torch.tensor([0, 2]))
    named = filter_importance(model, x, torch.tensor([0, 2]), layer="shortcut")
    torch.testing.assert_close(default, named, rtol=0, atol=0)


def test_random_is_seeded_per_call():
    model = GroupedDilated().eval()
    x, y = torch.randn(4, 3, 12, 12), torch.tensor([0, 1, 2, 3])
    a = filter_importance(model, x, y, method="random", seed=7)
    b = filter_importance(model, x, y, method="random", seed=7)
    c = filter_importance(model, x, y, method="random", seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, torch.rand(4, 6, generator=torch.Generator().manual_seed(7)))
    assert len(set(a[:, 0].tolist())) == 4  # rows differ within a batch


def _state(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad is None for p in model.parameters()],
        sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()),
    )


def test_model_state_untouched_and_backward_stops_at_the_layer():
    model = GroupedDilated()
    model.train()
    model.features[1].eval()  # mixed modes come back exactly
    model.head.weight.requires_grad_(False)
    before = _state(model)
    graph_before_layer = []
    probe = model.features[3].register_forward_hook(lambda m, a, out: graph_before_layer.append(out.requires_grad))
    try:
        x = torch.randn(2, 3, 12, 12, requires_grad=True)
        scores, logits = filter_importance(model, x, torch.tensor([1, 4]), return_logits=True)
    finally:
        probe.remove()
    assert graph_before_layer == [False, False]  # probe pass + real pass: no graph before the layer
    assert x.grad is None and scores.shape == (2, 6) and logits.shape == (2, 5)
    assert _state(model) == before
    with torch.no_grad(), torch.inference_mode():  # still works under the caller's no_grad / inference mode
        again = filter_importance(model, x.detach(), torch.tensor([1, 4]))
    torch.testing.assert_close(again, scores)
    assert _state(model) == before


def test_hooks_released_after_errors():
    model = GroupedDilated().eval()
    before = _state(model)
    x = torch.randn(2, 3, 12, 12)
    with pytest.raises(ValueError, match="targets must lie"):
        filter_importance(model, x, torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="not an nn.Conv2d"):
        filter_importance(model, x, torch.tensor([0, 1]), layer="head")
    with pytest.raises(ValueError, match="unknown importance method"):
        filter_importance(model, x, torch.tensor([0, 1]), method="gradcam")
    assert _state(model) == before


def test_shared_layer_is_refused():
    conv = nn.Conv2d(3, 3, 3, padding=1)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = conv, nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    with pytest.raises(ValueError, match="more than once"):
        filter_importance(Twice().eval(), torch.randn(1, 3, 6, 6), torch.tensor([0]), layer="conv")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = _randomize_bn(torchvision.models.resnet18(weights=None, num_classes=10)).eval()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 3, 5, 9])
    torch.backends.cudnn.allow_tf32 = False
    for method in IMPORTANCE_METHODS:
        cpu = filter_importance(model, x, y, method=method)
        gpu = filter_importance(model.cuda(), x.cuda(), y.cuda(), method=method)
        model.cpu()
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4 * float(cpu.abs().max()))
