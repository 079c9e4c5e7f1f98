"""top_exemplars against a brute-force ranking (ties, padding, shard merge); activation maps and their PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from parasal.core import activation_maps, exemplar_png, top_exemplars

pytestmark = pytest.mark.usefixtures("one_thread")


def brute(alpha, labels, ids, k, c=None):
    """(N, k) ids by a Python sort per filter: highest α first, then the lower id; -1 padding."""
    out = []
    for n in range(alpha.shape[1]):
        rows = [(-float(alpha[i, n]), int(ids[i])) for i in range(len(alpha)) if c is None or labels[i] == c]
        top = [i for _, i in sorted(rows)[:k]]
        out.append(top + [-1] * (k - len(top)))
    return np.array(out)


def test_matches_brute_force_with_ties_padding_and_shards():
    rng = np.random.default_rng(0)
    alpha = rng.integers(0, 6, (80, 5)).astype(np.float32)  # many ties
    labels = np.concatenate([rng.integers(0, 2, 78), [2, 2]])  # class 2 has 2 rows < k; class 3 none
    ids = rng.permutation(1000)[:80]
    result = top_exemplars(alpha, labels, 4, k=6, ids=ids)
    assert np.array_equal(result.overall_ids, brute(alpha, labels, ids, 6))
    for c in range(4):
        assert np.array_equal(result.class_ids[c], brute(alpha, labels, ids, 6, c))
    assert np.isnan(result.class_alpha[3]).all() and (result.class_ids[2][:, 2:] == -1).all()
    np.testing.assert_array_equal(result.overall_alpha[:, 0], alpha.max(axis=0))
    halves = [top_exemplars(alpha[s], labels[s], 4, k=6, ids=ids[s]) for s in (slice(0, 33), slice(33, 80))]
    for merged in (halves[0].merge(halves[1]), halves[1].merge(halves[0])):
        assert np.array_equal(merged.overall_ids, result.overall_ids)
        assert np.array_equal(merged.class_ids, result.class_ids)
        np.testing.assert_array_equal(merged.class_alpha, result.class_alpha)


class Spot(nn.Module):
    """Filter 0 copies the image, filter 1 its negative: the map of 0 peaks where the image does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_activation_maps_and_png():
    model = Spot().train()
    images = torch.zeros(2, 1, 8, 8)
    images[0, 0, 1, 2] = 2.0
    images[1, 0, 6, 5] = 1.0
    maps = activation_maps(model, images, [0, 0], layer="conv")
    assert model.training and sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert maps.shape == (2, 8, 8) and maps.dtype == np.float32 and maps.max() == pytest.approx(1.0)
    assert np.unravel_index(maps[0].argmax(), (8, 8)) == (1, 2) and np.unravel_index(maps[1].argmax(), (8, 8)) == (6, 5)
    assert (activation_maps(model, images, 1, layer="conv") == 0).all()  # no positive activation: zeros
    png = exemplar_png(images[0, 0].numpy() / 2, maps[0], upscale=4)
    assert Image.open(io.BytesIO(png)).size == (32, 32)
    with pytest.raises(ValueError, match="filters must lie"):
        activation_maps(model, images, 2, layer="conv")
