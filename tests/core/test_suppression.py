"""suppress_surprise on a toy net whose mistake comes from one bright patch seen by one filter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from parasal.core import Cancelled, suppress_surprise

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 24


class Distracted(nn.Module):
    """Filter 0 sees the top-left quadrant and votes for class 1, filter 1 the rest and votes for class 0."""

    def __init__(self):
        super().__init__()
        mask = torch.zeros(1, 2, SIZE, SIZE)
        mask[0, 0, : SIZE // 2, : SIZE // 2] = 1
        mask[0, 1] = 1 - mask[0, 0]
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(2, 2, 1, groups=2, bias=False)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[0.0, 10.0], [1.0, 0.0]]))

    def forward(self, x):
        return self.fc(self.conv(x.expand(-1, 2, -1, -1) * self.mask).square().mean((2, 3)))


def test_blanking_the_patch_fixes_the_prediction():
    model = Distracted().eval()
    image = torch.full((1, SIZE, SIZE), 0.2)
    image[0, 3:9, 4:10] = 3.0  # the distracting patch, top-left
    assert int(model(image[None]).argmax()) == 1  # label 0 is misclassified as 1
    steps, stops = [], []
    report = suppress_surprise(
        model,
        image,
        0,
        0,
        layer="conv",
        segment_counts=(25, 50),
        blank_counts=(1, 2, 3, 5),
        progress=lambda f, m: steps.append(f),
        should_stop=lambda: stops.append(1) and False,
    )
    assert report.predicted == 1 and report.label == 0 and report.filter == 0
    assert len(report.rows) == 2 * 2 * 4 and {r.method for r in report.rows} == {"surprise", "vanilla"}
    fix = report.first_fix("surprise")
    assert fix is not None and fix.predicted == 0 and fix.fixed and fix.label_confidence > 0.5
    assert fix.pixels < (SIZE // 2) ** 2  # blanking part of the image suffices
    assert steps == [0.5, 1.0] and len(stops) == 2
    with pytest.raises(Cancelled):
        suppress_surprise(model, image, 0, 0, layer="conv", should_stop=lambda: True)
