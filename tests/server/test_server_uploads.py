"""Upload checks that need no bundle: decoding, limits, channels, display pixels, vectors."""

import io

import numpy as np
import pytest
from PIL import Image

from parasal.indexer import Preprocessing
from parasal.server.errors import InvalidArgument
from parasal.server.queries import check_top_k, check_vector, decode_image, display_pixels, image_channels


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_decode_accepts_png_and_jpeg_only():
    grey = Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28))
    np.testing.assert_array_equal(np.asarray(decode_image(encode(grey), 10**6)), np.asarray(grey))
    assert decode_image(encode(grey.convert("RGB"), "JPEG"), 10**6).size == (28, 28)
    for data, words in [
        (b"", "empty"),
        (b"hello", "not a PNG or JPEG"),
        (encode(grey, "GIF"), "not a PNG or JPEG"),
        (encode(grey)[:60], "decode"),
        (encode(grey, "BMP"), "not a PNG or JPEG"),
    ]:
        with pytest.raises(InvalidArgument, match=words):
            decode_image(data, 10**6)


def test_decode_refuses_too_many_pixels_before_decoding():
    big = encode(Image.new("L", (300, 200)))
    assert decode_image(big, 60_000).size == (300, 200)
    with pytest.raises(InvalidArgument, match="300x200 = 60000 pixels; the limit is 59999"):
        decode_image(big, 59_999)


@pytest.mark.parametrize(
    "mode, channels", [("L", 1), ("LA", 1), ("1", 1), ("I;16", 1), ("RGB", 3), ("RGBA", 3), ("P", 3), ("CMYK", 3)]
)
def test_image_channels(mode, channels):
    assert image_channels(Image.new(mode, (4, 4))) == channels


def test_display_pixels_follow_the_preprocessing_geometry_without_normalising():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    pre = Preprocessing(channels="RGB", resize=20, crop=16)
    pixels = display_pixels(pre, Image.fromarray(rgb))
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    expected = Image.fromarray(rgb).resize((30, 20), Image.BILINEAR).crop((7, 2, 23, 18))
    np.testing.assert_array_equal(pixels, np.asarray(expected))
    grey = display_pixels(Preprocessing(channels="L", mean=(0.3,), std=(0.2,)), Image.fromarray(rgb[:, :, 0]))
    np.testing.assert_array_equal(grey, rgb[:, :, 0])


def test_vector_and_top_k_checks():
    assert check_vector([1.0, 0.0, -2.0], 3).dtype == np.float32
    for values, words in [
        ([1.0, 2.0], "has 2 values"),
        ([1.0, np.inf, 0.0], "NaN or infinite"),
        ([0.0, 0.0, 0.0], "all zeros"),
    ]:
        with pytest.raises(InvalidArgument, match=words):
            check_vector(np.array(values), 3)
    assert check_top_k(0, 672) == 10 and check_top_k(0, 4) == 4 and check_top_k(672, 672) == 672
    for bad in (-1, 673):
        with pytest.raises(InvalidArgument):
            check_top_k(bad, 672)
