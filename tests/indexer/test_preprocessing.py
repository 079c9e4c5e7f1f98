"""The one image conversion and the preprocessing's geometry, both ways: what the indexer
and the server share (grey <-> RGB, palette, alpha), heatmaps mapped back onto the
original image, and the warning for a default that blows tiny images up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from parasal.indexer.images import ImageRejected
from parasal.indexer.models import IMAGENET_PREPROCESSING
from parasal.indexer.preprocessing import Preprocessing, convert_mode, parse_size, upsampling_warning

RGB = Preprocessing(channels="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "1", "I;16"])
def test_every_common_mode_converts_for_an_rgb_model(mode):
    image = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert(mode)
    x = RGB(image)
    assert x.shape == (3, 8, 8) and torch.isfinite(x).all()


def test_grey_to_rgb_repeats_the_channel_and_rgb_to_grey_is_luminance():
    grey = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 10)
    rgb = np.asarray(convert_mode(grey, "RGB"))
    assert (rgb == np.asarray(grey)[..., None]).all()
    assert convert_mode(grey, "L") is grey  # already the model's mode: untouched
    colour = Image.new("RGB", (2, 2), (255, 0, 0))
    assert np.asarray(convert_mode(colour, "L"))[0, 0] == 76  # ITU-R 601: 0.299 * 255


def test_a_mode_nothing_converts_is_refused_with_a_client_safe_message(monkeypatch):
    image = Image.new("L", (2, 2))

    def broken(*args, **kwargs):
        raise ValueError("conversion not supported")

    monkeypatch.setattr(image, "convert", broken)
    with pytest.raises(ImageRejected, match="cannot convert an image of mode L to RGB"):
        convert_mode(image, "RGB")


@pytest.mark.parametrize(
    "pre, size",
    [
        (Preprocessing(channels="L", mean=(0,), std=(1,), resize=32), (28, 28)),
        (Preprocessing(channels="L", mean=(0,), std=(1,), resize=40, crop=32), (28, 28)),
        (Preprocessing(channels="L", mean=(0,), std=(1,), resize=64, crop=48), (40, 30)),
        (Preprocessing(channels="L", mean=(0,), std=(1,)), (9, 7)),
    ],
)
def test_heatmaps_map_back_onto_the_original_image(pre, size):
    """A bright square in the original, preprocessed and mapped back, lands where it was."""
    w, h = size
    original = np.zeros((h, w), np.uint8)
    original[h // 3 : h // 3 + 4, w // 2 : w // 2 + 4] = 255
    heat = pre(Image.fromarray(original))[0].numpy()  # (H', W') in [0, 1]: mean 0, std 1
    back = pre.to_original(heat, size)
    assert back.shape == (h, w) and back.dtype == np.float32
    peak = np.unravel_index(np.argmax(back), back.shape)
    assert h // 3 - 1 <= peak[0] <= h // 3 + 4 and w // 2 - 1 <= peak[1] <= w // 2 + 4
    assert back[original == 0].mean() < 0.2 < back[original == 255].mean()
    assert pre.to_original(heat, size, out_size=(w * 3, h * 3)).shape == (h * 3, w * 3)


def test_what_the_crop_cut_away_gets_no_heat():
    pre = Preprocessing(channels="L", mean=(0,), std=(1,), crop=4)
    back = pre.to_original(np.ones((4, 4), np.float32), (8, 8))
    assert back[2:6, 2:6].min() == 1.0 and back.sum() == 16.0


def test_upsampling_warning_for_tiny_images_through_a_default():
    message = upsampling_warning(IMAGENET_PREPROCESSING, (28, 28))
    assert message is not None and "28x28" in message and "9.1x" in message and "--resize none" in message
    assert upsampling_warning(IMAGENET_PREPROCESSING, (200, 180)) is None  # 1.4x: fine
    assert upsampling_warning(RGB, (28, 28)) is None  # no resize


@pytest.mark.parametrize("text, expected", [("none", 0), ("Data", 0), ("0", 0), (None, None), ("32", 32), (7, 7)])
def test_parse_size_says_use_the_datas_size(text, expected):
    assert parse_size(text) == expected


def test_parse_size_refuses_nonsense():
    with pytest.raises(ValueError, match="'none'"):
        parse_size("big")
    with pytest.raises(ValueError):
        parse_size(-3)
