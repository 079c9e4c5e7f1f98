"""Input-space saliency: the gradient is the one of the paper's objective, the heatmap and PNG are right."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from parasal.core.input_saliency import HEATMAP_BLUR_SIGMA, heatmap_overlay_png, input_saliency, saliency_heatmap
from parasal.core.layout import filter_layout
from parasal.core.reference import per_sample_filter_saliency
from parasal.core.stats import RunningStats

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(dtype=torch.float32, act=nn.ReLU) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        act(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(6),
        act(),
        nn.Conv2d(6, 8, 3, padding=1),
        act(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    g = torch.Generator().manual_seed(1)
    for bn in (net[1], net[4]):
        bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    return net.to(dtype).eval()


def holdout_stats(model, n=24) -> RunningStats:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, 12, 12, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return RunningStats.of(per_sample_filter_saliency(model.float(), x, y))


def _image(dtype=torch.float32):
    return torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(4), dtype=dtype)


def _standardized_profile(model, x, target, stats):
    """ŝ(x) computed without create_graph: an independent float64 implementation of the definition."""
    weights = [dict(model.named_modules())[s.name].weight for s in filter_layout(model)]
    loss = F.cross_entropy(model(x[None]), torch.tensor([target]))
    raw = torch.cat([g.abs().flatten(1).mean(1) for g in torch.autograd.grad(loss, weights)])
    return (raw - torch.from_numpy(stats.mean)) / torch.from_numpy(stats.std)


def test_gradient_matches_finite_differences():
    # Tanh keeps the objective smooth, so central differences are accurate (ReLU kinks are not)
    model = tiny_net(torch.float64, act=nn.Tanh)
    stats = holdout_stats(tiny_net(torch.float64, act=nn.Tanh))
    x, target = _image(torch.float64), 1
    result = input_saliency(model, x, target, stats, top_k=3, boost=100.0)
    assert result.gradient.shape == (3, 12, 12) and len(result.filters) == 3

    boosted = result.profile.clone()
    boosted[result.filters] *= 100.0

    def distance(image):
        s = _standardized_profile(model, image, target, stats)
        return 1 - F.cosine_similarity(s[None], boosted[None])[0]

    torch.testing.assert_close(result.profile, _standardized_profile(model, x, target, stats).detach())
    flat = result.gradient.flatten()
    pixels = [int(flat.argmax()), int(flat.argmin()), 77, 301]
    h = 1e-6
    for p in pixels:
        e = torch.zeros(x.numel(), dtype=torch.float64)
        e[p] = h
        e = e.view_as(x)
        fd = (distance(x + e) - distance(x - e)).item() / (2 * h)
        assert result.gradient.flatten()[p].item() == pytest.approx(abs(fd), rel=1e-5, abs=1e-9), p
    assert flat.max() > 0


def test_profile_and_prediction_agree_with_the_reference_loop():
    model = tiny_net()
    stats = holdout_stats(model)
    x = _image()
    result = input_saliency(model, x, 2, stats)
    expected = stats.standardize(per_sample_filter_saliency(model, x[None], torch.tensor([2]))[0])
    torch.testing.assert_close(result.profile, expected, rtol=1e-4, atol=1e-5)
    assert result.predicted == int(model(x[None]).argmax())
    top = torch.argsort(expected, descending=True)[:10].tolist()
    assert result.filters == top  # default top_k=10, most salient first


def test_explicit_filters_versus_top_k():
    model = tiny_net()
    stats = holdout_stats(model)
    x = _image()
    top = input_saliency(model, x, 0, stats, top_k=4)
    same = input_saliency(model, x, 0, stats, filters=list(reversed(top.filters)))
    assert same.filters == top.filters  # reordered most salient first
    torch.testing.assert_close(same.gradient, top.gradient)

    least = torch.argsort(top.profile)[:2].tolist()
    other = input_saliency(model, x[None], 0, stats, filters=least)  # (1, C, H, W) accepted
    assert other.filters == sorted(least, key=lambda i: -top.profile[i].item())
    assert not torch.allclose(other.gradient, top.gradient, rtol=1e-2)

    assert len(input_saliency(model, x, 0, stats, top_k=1000).filters) == filter_layout(model).num_filters
    with pytest.raises(ValueError):
        input_saliency(model, x, 0, stats, filters=[filter_layout(model).num_filters])
    with pytest.raises(ValueError):
        input_saliency(model, x, 0, RunningStats.empty(5))


def test_model_is_left_exactly_as_it_was():
    model = tiny_net()
    stats = holdout_stats(model)
    model.train()  # a train-mode forward would update BN running stats
    model[4].eval()  # mixed modes come back module by module
    model[3].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = input_saliency(model, _image(), 1, stats)
    assert [m.training for m in model] == [i != 4 for i in range(len(model))]
    assert not model[3].weight.requires_grad and model[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert result.gradient.max() > 0


# --------------------------------------------------------------------------- heatmap


def test_heatmap_clips_to_the_90th_and_99th_percentiles():
    values = torch.arange(400, dtype=torch.float64).view(20, 20)
    gradient = torch.stack([values, -2 * values.flip(0)])  # max |g| over channels: 2·flip(values)
    m = (2 * values.flip(0)).numpy()
    lo, hi = np.percentile(m, 90), np.percentile(m, 99)
    raw = saliency_heatmap(gradient, blur_sigma=0)
    assert raw.shape == (20, 20) and raw.dtype == np.float32
    np.testing.assert_allclose(raw, np.clip((m - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert (raw == 0).sum() == np.sum(m <= lo) and (raw == 1).sum() == np.sum(m >= hi)
    assert (raw == 0).mean() == pytest.approx(0.9, abs=0.01)

    blurred = saliency_heatmap(gradient)
    assert blurred.min() >= 0 and blurred.max() <= 1
    k = np.array([0.25, 0.5, 0.25])  # OpenCV's 3x3 kernel for sigma=0, which HEATMAP_BLUR_SIGMA reproduces
    padded = np.pad(raw.astype(np.float64), 1, mode="reflect")
    expected = sum(k[i] * k[j] * padded[i : i + 20, j : j + 20] for i in range(3) for j in range(3))
    np.testing.assert_allclose(blurred, expected, atol=1e-6)
    assert HEATMAP_BLUR_SIGMA == pytest.approx(0.8493, abs=1e-4)


def test_heatmap_of_an_input_saliency_and_degenerate_maps():
    model = tiny_net()
    result = input_saliency(model, _image(), 1, holdout_stats(model))
    assert result.heatmap.shape == (12, 12) and result.heatmap.dtype == np.float32
    assert 0 <= result.heatmap.min() and result.heatmap.max() <= 1 and result.heatmap.max() > 0.1
    assert not saliency_heatmap(torch.zeros(1, 8, 8)).any()
    spike = torch.zeros(1, 30, 30)
    spike[0, 10, 20] = 5.0  # 99th percentile is 0: the maximum becomes the upper bound
    heat = saliency_heatmap(spike, blur_sigma=0)
    assert heat[10, 20] == 1 and heat.sum() == 1


# --------------------------------------------------------------------------- PNG overlay


def _decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def test_overlay_png_size_and_pixels():
    grey = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    cold = _decode(heatmap_overlay_png(grey, np.zeros((28, 28)), upscale=4))
    assert cold.shape == (112, 112, 3)
    np.testing.assert_array_equal(cold[::4, ::4], np.repeat(grey[..., None], 3, axis=2))  # no heat: the image

    heat = np.zeros((28, 28))
    heat[5, 7] = 1.0
    hot = _decode(heatmap_overlay_png(grey, heat, alpha=1.0))
    assert hot.shape == (28, 28, 3)
    import matplotlib

    red = np.rint(np.asarray(matplotlib.colormaps["jet"](1.0)[:3]) * 255)
    np.testing.assert_array_equal(hot[5, 7], red)
    mask = np.ones((28, 28), bool)
    mask[5, 7] = False
    np.testing.assert_array_equal(hot[mask], np.repeat(grey[..., None], 3, axis=2)[mask])

    colour = np.random.default_rng(0).random((10, 12, 3))  # float in [0, 1]
    out = _decode(heatmap_overlay_png(colour, np.full((10, 12), 0.5), alpha=0.5))
    assert out.shape == (10, 12, 3)
    with pytest.raises(ValueError):
        heatmap_overlay_png(grey, np.zeros((27, 28)))
    with pytest.raises(ValueError):
        heatmap_overlay_png(grey, np.zeros((28, 28)), upscale=0)
