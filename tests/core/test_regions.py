"""filter_region: a synthetic net with a known answer, the masked gradient against autograd, hygiene, PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from parasal.core import filter_region, region_png, superpixel_scores, superpixels

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 24


class Quadrants(nn.Module):
    """Filter 0 of ``conv`` sees only the top-left quadrant of the image, filter 1 only the rest."""

    def __init__(self):
        super().__init__()
        mask = torch.zeros(1, 2, SIZE, SIZE)
        mask[0, 0, : SIZE // 2, : SIZE // 2] = 1
        mask[0, 1] = 1 - mask[0, 0]
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(2, 2, 3, padding=1, groups=2)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        out = self.conv(x.expand(-1, 2, -1, -1) * self.mask)  # (B, 2, H, W)
        return self.fc(torch.relu(out).mean((2, 3)))


def _model_and_image():
    torch.manual_seed(0)
    model = Quadrants().eval()
    with torch.no_grad():
        model.conv.weight.abs_()
        model.conv.bias.fill_(0.1)
    image = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) + 0.5  # all positive
    return model, image


def _hygiene(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
        sum(len(m._forward_hooks) for m in model.modules()),
    )


def test_best_superpixel_lies_where_the_filter_looks():
    model, image = _model_and_image()
    before = _hygiene(model)
    # compactness 10: a near-regular grid on this noise image, so superpixels do not straddle much
    top_left = filter_region(model, image, 0, target=1, layer="conv", segments=16, compactness=10)
    rest = filter_region(model, image, 1, target=1, layer="conv", segments=16, compactness=10)
    rows, cols = np.nonzero(top_left.mask)
    assert top_left.mask.any() and rows.mean() < SIZE / 2 and cols.mean() < SIZE / 2
    inside = top_left.mask[: SIZE // 2, : SIZE // 2].sum() / top_left.mask.sum()
    assert inside > 0.75
    assert top_left.gradient[SIZE // 2 + 1 :, :].max() == 0 and top_left.gradient[:, SIZE // 2 + 1 :].max() == 0
    rows, cols = np.nonzero(rest.mask)
    assert not (rows.mean() < SIZE / 2 and cols.mean() < SIZE / 2)
    assert rest.gradient[: SIZE // 2 - 1, : SIZE // 2 - 1].max() == 0
    assert top_left.segments.shape == (SIZE, SIZE) and len(top_left.scores) == top_left.segments.max() + 1
    assert top_left.best == int(np.argmax(top_left.scores)) and top_left.layer == "conv"
    assert _hygiene(model) == before


def test_gradient_is_the_class_score_through_one_channel():
    model, image = _model_and_image()
    model.train()  # filter_region runs in eval mode and gives the mode back
    region = filter_region(model, image, 0, target=2, layer="conv")
    assert model.training
    # independent: the same network by hand, channel 1's path detached
    x = image.clone().requires_grad_(True)
    with torch.no_grad():
        model.eval()
    out = model.conv(x.expand(-1, 2, -1, -1) * model.mask)
    out = torch.stack([out[:, 0], out[:, 1].detach()], 1)
    score = model.fc(torch.relu(out).mean((2, 3)))[0, 2]
    (g,) = torch.autograd.grad(score, x)
    np.testing.assert_allclose(region.gradient, g[0].abs().amax(0).numpy(), rtol=1e-6, atol=1e-9)
    vanilla = filter_region(model, image, None, target=2, layer="conv")
    assert vanilla.gradient[SIZE - 1, SIZE - 1] > 0 and vanilla.filter is None  # through both channels
    assert region.target == 2 and region.predicted == int(model(image).argmax())


def test_default_layer_and_target():
    model, image = _model_and_image()
    region = filter_region(model, image[0], 1)  # (C, H, W), default layer = the only conv, target = predicted
    assert region.layer == "conv" and region.target == region.predicted


def test_refuses_bad_input():
    model, image = _model_and_image()
    before = _hygiene(model)
    with pytest.raises(ValueError, match="outside"):
        filter_region(model, image, 2)
    with pytest.raises(ValueError, match="target"):
        filter_region(model, image, 0, target=7)
    with pytest.raises(ValueError, match="not an nn.Conv2d"):
        filter_region(model, image, 0, layer="fc")
    with pytest.raises(ValueError, match="one image"):
        filter_region(model, image.repeat(2, 1, 1, 1), 0)
    assert _hygiene(model) == before


def test_superpixels_and_scores():
    yy, xx = np.mgrid[:28, :28]
    grey = np.clip(np.exp(-((yy - 14) ** 2 + (xx - 12) ** 2) / 60) + 0.3 * (xx > 20), 0, 1)  # a blob and a bar
    labels = superpixels(grey, 50)
    assert labels.shape == (28, 28) and labels.min() == 0 and set(np.unique(labels)) == set(range(labels.max() + 1))
    assert 20 <= labels.max() + 1 <= 80
    colour = superpixels(torch.randn(3, 32, 32), 30)
    assert colour.shape == (32, 32)
    pixel = np.arange(4.0).reshape(2, 2)
    seg = np.array([[0, 0], [1, 1]])
    assert superpixel_scores(pixel, seg).tolist() == [0.5, 2.5]
    assert superpixel_scores(pixel, seg, "sum").tolist() == [1.0, 5.0]


def test_region_png_draws_the_boundary():
    image = np.zeros((10, 10))
    mask = np.zeros((10, 10), bool)
    mask[2:6, 2:6] = True
    png = region_png(image, mask, upscale=3)
    drawn = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert drawn.shape == (30, 30, 3)
    yellow = (drawn[..., 0] > 200) & (drawn[..., 1] > 200) & (drawn[..., 2] < 50)
    assert yellow.any() and not yellow[:5].any() and not yellow[20:].any()
    with pytest.raises(ValueError, match="mask shape"):
        region_png(image, mask[:5])


class Bypass(nn.Module):
    """``conv``'s output joins a parallel branch that does not pass through it (a ResNet shortcut beside its block)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.branch = nn.Conv2d(1, 3, 5, padding=2)
        self.fc = nn.Linear(3, 2)

    def forward(self, x, detach_branch: bool = False):
        side = self.branch(x)
        side = side.detach() if detach_branch else side
        return self.fc(torch.relu(self.conv(x) + side).mean((2, 3)))


def test_a_parallel_branch_carries_no_gradient_through_the_filter():
    torch.manual_seed(1)
    model = Bypass().eval()
    image = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    for n in range(3):
        region = filter_region(model, image, n, target=1, layer="conv", segments=16)
        # oracle by hand: the branch's path detached and the other channels of conv detached
        x = image.clone().requires_grad_(True)
        out = model.conv(x)
        out = torch.stack([out[:, c] if c == n else out[:, c].detach() for c in range(3)], 1)
        score = model.fc(torch.relu(out + model.branch(x).detach()).mean((2, 3)))[0, 1]
        (g,) = torch.autograd.grad(score, x)
        np.testing.assert_allclose(region.gradient, g[0].abs().amax(0).numpy(), rtol=1e-5, atol=1e-9)
    # vanilla backprop keeps every path, the branch's included
    vanilla = filter_region(model, image, None, target=1, layer="conv", segments=16)
    x = image.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[0, 1], x)
    np.testing.assert_allclose(vanilla.gradient, g[0].abs().amax(0).numpy(), rtol=1e-5, atol=1e-9)
