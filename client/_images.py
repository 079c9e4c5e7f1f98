"""Turning the image arguments the SDK accepts into PNG/JPEG bytes for `ImageInput.data`."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from .errors import InvalidArgument

if TYPE_CHECKING:  # Pillow is imported only when an image needs it
    from PIL.Image import Image as _PILImage

#: What the SDK accepts as an image: encoded PNG/JPEG bytes, a file path, a PIL image or
#: a uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). See `encode_image`.
ImageLike: TypeAlias = "bytes | bytearray | memoryview | str | os.PathLike[str] | _PILImage | np.ndarray"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

# Sent as they are; anything else is decoded with Pillow and re-encoded as PNG, so the
# server only ever has to read the two formats the contract names.
_PASS_THROUGH = (PNG_MAGIC, JPEG_MAGIC)


def is_png_or_jpeg(data: bytes) -> bool:
    return data.startswith(_PASS_THROUGH)


def encode_image(image: ImageLike) -> bytes:
    """PNG/JPEG bytes for `image`.

    Accepts encoded bytes (sent unchanged), a path (str or PathLike; PNG/JPEG files are
    sent unchanged, other formats Pillow reads are re-encoded as PNG), a PIL image
    (encoded as PNG) or a uint8 numpy array of shape (H, W), (H, W, 1), (H, W, 3) or
    (H, W, 4).
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise InvalidArgument("image is empty")
        return data
    if isinstance(image, (str, os.PathLike)):
        try:
            data = Path(image).read_bytes()
        except OSError as exc:  # missing, a directory, not readable: the caller's argument
            raise InvalidArgument(f"cannot read image file {os.fspath(image)!r}: {exc.strerror or exc}") from exc
        if not data:
            raise InvalidArgument(f"image file {os.fspath(image)!r} is empty")
        return data if is_png_or_jpeg(data) else _reencode_as_png(data, os.fspath(image))
    if isinstance(image, np.ndarray):
        return _array_to_png(image)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return _pil_to_png(image)
    raise InvalidArgument(
        f"image must be PNG/JPEG bytes, a file path, a PIL.Image or a uint8 numpy array, not {type(image).__name__}"
    )


def _pil_to_png(img) -> bytes:
    if img.mode not in ("L", "RGB", "RGBA", "LA", "I;16", "1", "P"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _array_to_png(array: np.ndarray) -> bytes:
    from PIL import Image

    if array.dtype != np.uint8:
        raise InvalidArgument(
            f"image array must be uint8 (0..255), got {array.dtype}; e.g. (x * 255).round().astype(np.uint8)"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise InvalidArgument(f"image array must have shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidArgument(f"image array is empty: shape {array.shape}")
    return _pil_to_png(Image.fromarray(np.ascontiguousarray(array)))


def _reencode_as_png(data: bytes, name: str) -> bytes:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _pil_to_png(img)
    except Image.DecompressionBombError as exc:  # a header declaring more pixels than Pillow decodes
        raise InvalidArgument(f"{name!r} declares too many pixels to decode: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidArgument(f"cannot read {name!r} as an image: {exc}") from exc


#: Overlays and images smaller than this (longest side, pixels) are enlarged to read them.
READABLE_SIDE = 256


def readable_scale(size: tuple[int, int], side: int = READABLE_SIDE) -> int:
    """The integer factor that makes an image of ``size`` at least ``side`` pixels on its
    longest side (1 for images already that large): 10 for 28x28, 8 for 32x32."""
    longest = max(size)
    return max(1, -(-side // longest)) if longest else 1


def enlarge_png(data: bytes, scale: int) -> bytes:
    """PNG ``data`` enlarged ``scale`` times by nearest neighbour (pixels stay sharp squares,
    so they line up with the original's); returned unchanged for scale 1."""
    from PIL import Image

    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise InvalidArgument(f"scale must be an integer >= 1, got {scale!r}")
    if scale == 1:
        return data
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        big = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    return buf.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of PNG ``data`` from its header."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size
