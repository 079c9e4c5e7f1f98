"""Opening an image with a pixel limit checked on its header, before anything is decoded.

Every image parasal decodes goes through :func:`open_image_limited`: dataset files at
index time and when the server reopens a sample, and uploaded bytes. Pillow reads only
the header in ``Image.open``, so a file declaring 8000x8000 pixels (or 50000x50000, past
Pillow's own decompression-bomb limit) is refused after reading a few bytes, not after
allocating gigabytes. The limit counts width x height, as ``ServerConfig.max_image_pixels``
does.

Errors are :class:`ImageRejected` (a ValueError) whose message never names a file: a
caller that knows the path logs it and decides the status (uploads: INVALID_ARGUMENT;
dataset files: the sample is corrupt).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ImageRejected",
    "ImageTooLarge",
    "check_image_size",
    "open_image_limited",
]

#: The same default as the server's ``max_image_pixels`` (ServerConfig): 4096 x 4096.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


class ImageRejected(ValueError):
    """An image that cannot be used: unreadable, not an image, truncated, or too large.
    ``str(exc)`` is safe to show to a client (no path); ``reason`` is the same text."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ImageTooLarge(ImageRejected):
    """The header declares more pixels than the limit (``width``/``height`` are 0 when
    Pillow refused the header itself as a decompression bomb)."""

    def __init__(self, width: int, height: int, max_pixels: int):
        if width and height:
            reason = f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        else:
            reason = f"image declares more pixels than the decoder accepts; the limit is {max_pixels}"
        super().__init__(reason)
        self.width, self.height, self.max_pixels = width, height, max_pixels


def check_image_size(image: Image.Image, max_pixels: int) -> None:
    """Raise :class:`ImageTooLarge` if an opened (not necessarily decoded) image has more
    than ``max_pixels`` pixels. Cheap: reads ``image.size`` from the header."""
    width, height = image.size
    if width * height > int(max_pixels):
        raise ImageTooLarge(width, height, int(max_pixels))


def open_image_limited(
    source: str | os.PathLike | bytes | BinaryIO,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    *,
    formats: Sequence[str] | None = None,
) -> Image.Image:
    """A decoded PIL image from a path, bytes or a binary file, refused by its header when
    it has more than ``max_pixels`` pixels (:class:`ImageTooLarge`) and refused when it is
    unreadable, not an image (of ``formats``, when given) or truncated (:class:`ImageRejected`).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageRejected("image data is empty")
        return _open(io.BytesIO(bytes(source)), max_pixels, formats)
    if isinstance(source, (str, os.PathLike)):
        try:
            f = open(source, "rb")  # closed below, after decoding
        except OSError as e:
            raise ImageRejected(f"cannot open the file ({_os_reason(e)})") from e
        with f:
            return _open(f, max_pixels, formats)
    return _open(source, max_pixels, formats)


def _open(f: BinaryIO, max_pixels: int, formats: Sequence[str] | None) -> Image.Image:
    what = f"not a {' or '.join(formats)} image" if formats else "not an image (unknown format)"
    try:
        image = Image.open(f, formats=list(formats) if formats else None)  # the header only
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(0, 0, int(max_pixels)) from e
    except UnidentifiedImageError as e:
        raise ImageRejected(what) from e
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's ways of saying "broken header"
        raise ImageRejected(f"cannot read the image header ({_pil_reason(e)})") from e
    check_image_size(image, max_pixels)  # before a single pixel is decoded
    try:
        image.load()
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(*image.size, int(max_pixels)) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageRejected(f"cannot decode the {image.format or 'image'} data ({_pil_reason(e)})") from e
    return image


def _os_reason(e: OSError) -> str:
    """An OSError without its file name (``str(e)`` repeats the path)."""
    return e.strerror or type(e).__name__


def _pil_reason(e: BaseException) -> str:
    """Pillow's message, which names no file when it reads from a file object; capped."""
    text = str(e).strip() or type(e).__name__
    return text if len(text) <= 200 else text[:200] + "…"
