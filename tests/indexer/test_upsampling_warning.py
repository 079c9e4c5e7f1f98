"""`parasal index` warns, once, when a default preprocessing enlarges the images > 2x (#13).

Run through the real command line: a torchvision resnet18 state dict (random weights) on a
folder of 28x28 PNGs, whose default preprocessing (resize 256, crop 224) enlarges them
9.1x; with ``--resize none --crop none`` (the data's size) nothing is said.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from parasal.client.cli import main

WARNING = "warning: the preprocessing resizes"


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """2 classes x 2 RGB PNGs of 28x28."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for cls in ("ant", "bee"):
        (root / cls).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _index(capsys, weights, data, out, *extra) -> str:
    argv = ["index", "--model", "torchvision:resnet18", "--weights", str(weights), "--data", str(data)]
    code = main([*argv, "--out", str(out), "--no-progress", "--device", "cpu", *extra])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def test_default_resize_of_tiny_images_is_warned_once_with_the_factor_and_the_way_out(
    capsys, tmp_path, resnet18_weights, tiny_images
):
    err = _index(capsys, resnet18_weights, tiny_images, tmp_path / "default")
    lines = [line for line in err.splitlines() if WARNING in line]
    assert len(lines) == 1, err
    assert "28x28 images to 256 pixels (9.1x larger, then crops 224)" in lines[0]
    assert "--resize none --crop none" in lines[0] and "the data's size" in lines[0]


@pytest.mark.parametrize(
    "sizes",
    [("--resize", "none", "--crop", "none"), ("--resize", "data", "--crop", "data")],
    ids=["none", "data"],
)
def test_the_datas_size_is_not_warned(capsys, tmp_path, resnet18_weights, tiny_images, sizes):
    err = _index(capsys, resnet18_weights, tiny_images, tmp_path / "native", *sizes)
    assert WARNING not in err, err
