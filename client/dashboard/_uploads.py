"""Uploaded images, kept in memory (bounded) so their page, overlay and surprise can be
fetched by a token after the upload's redirect. Nothing is written to disk."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from .._images import encode_image, is_png_or_jpeg
from ..errors import NotFound

MAX_UPLOADS = 64  # the oldest is forgotten first
MAX_UPLOAD_BYTES = 16 * 1024 * 1024  # the server has its own, stricter pixel limit


@dataclass
class Upload:
    data: bytes  # PNG or JPEG, as sent to the server
    label: int
    name: str
    # Answers computed once per upload (the page, the overlay), reused on reload.
    cache: dict = field(default_factory=dict)

    @property
    def media_type(self) -> str:
        return "image/png" if self.data.startswith(b"\x89PNG") else "image/jpeg"


class UploadStore:
    def __init__(self, max_items: int = MAX_UPLOADS) -> None:
        self._items: OrderedDict[str, Upload] = OrderedDict()
        self._max = max_items
        self._lock = threading.Lock()

    def add(self, data: bytes, label: int, name: str) -> str:
        """Keeps the image (other formats Pillow reads are re-encoded as PNG, as the SDK
        would); returns its token. InvalidArgument for bytes that are no image."""
        if not is_png_or_jpeg(data):
            data = encode_image_bytes(data, name)
        token = secrets.token_urlsafe(9)
        with self._lock:
            self._items[token] = Upload(data, label, name)
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return token

    def get(self, token: str) -> Upload:
        with self._lock:
            upload = self._items.get(token)
            if upload is None:
                raise NotFound("this upload is no longer kept by the dashboard; upload the image again")
            self._items.move_to_end(token)
            return upload


def encode_image_bytes(data: bytes, name: str) -> bytes:
    """Non-PNG/JPEG bytes re-encoded as PNG through the SDK's own path (a temp-free decode)."""
    import io

    from PIL import Image, UnidentifiedImageError

    from ..errors import InvalidArgument

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return encode_image(img)
    except Image.DecompressionBombError as exc:
        raise InvalidArgument(f"{name!r} declares too many pixels to decode") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidArgument(f"cannot read {name!r} as an image: {exc}") from exc
