"""Image preprocessing as data, so a bundle can record it and the server replay it exactly.

The indexer applies it to dataset images; the server applies the copy stored in the
bundle's manifest to uploaded images. Keeping it a plain dataclass (no callables, no
pickle) is what makes it safe to store and compare.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from .images import ImageRejected

__all__ = ["Preprocessing", "convert_mode", "parse_size", "upsampling_warning", "UPSAMPLING_WARN_FACTOR"]

#: A default preprocessing that enlarges images more than this much is worth a warning:
#: 28-pixel images through resize 256 / crop 224 cost ~64x the pixels and add nothing.
UPSAMPLING_WARN_FACTOR = 2.0


def convert_mode(image: Image.Image, channels: str) -> Image.Image:
    """``image`` in the model's mode ("L" or "RGB"): the one conversion the indexer (dataset
    images) and the server (uploads) share, so the same file gives the same input.

    Grey images become RGB by repeating the channel, colour ones L by luminance (ITU-R 601),
    palette and CMYK images go through RGB, alpha is dropped. Raises ImageRejected (a
    ValueError whose message is safe to show a client) for modes Pillow cannot convert."""
    if image.mode == channels:
        return image
    try:
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV") and channels == "L":
            image = image.convert("RGB")  # palette entries are colours: through RGB, not indices
        return image.convert(channels)
    except (ValueError, OSError) as exc:
        raise ImageRejected(f"cannot convert an image of mode {image.mode} to {channels}: {exc}") from None


def parse_size(text: str | int | None) -> int | None:
    """A resize/crop setting from a command line or a spec: a positive integer, or 0 for
    "none" / "data" / "0", i.e. use the data's size (no resize, no crop; 0 is what
    ``override_preprocessing`` and ``Preprocessing`` read as "off"). None stays None (not given)."""
    if text is None:
        return None
    if isinstance(text, str):
        key = text.strip().lower()
        if key in ("none", "data", "0"):
            return 0
        try:
            text = int(key)
        except ValueError:
            raise ValueError(f"expected a number of pixels or 'none' (the data's size), got {text!r}") from None
    if isinstance(text, bool) or not isinstance(text, int) or text < 0:
        raise ValueError(f"expected a number of pixels >= 0 or 'none', got {text!r}")
    return text


def upsampling_warning(
    preprocessing: Preprocessing, size: tuple[int, int], threshold: float = UPSAMPLING_WARN_FACTOR
) -> str | None:
    """A one-line warning when ``preprocessing`` enlarges an image of ``size`` (width,
    height) by more than ``threshold`` along its sides, else None. The indexer calls it on
    the first image when the preprocessing is a default the user did not choose."""
    factor = preprocessing.upsampling(size)
    if factor <= threshold:
        return None
    w, h = size
    return (
        f"the preprocessing resizes {w}x{h} images to {preprocessing.resize} pixels "
        f"({factor:.1f}x larger{f', then crops {preprocessing.crop}' if preprocessing.crop else ''}): slow and "
        "no more detail; if the model was trained on images this size, pass --resize none --crop none "
        "(the data's size), or the sizes it was trained with"
    )


@dataclass(frozen=True)
class Preprocessing:
    """PIL image -> float tensor ``(C, H, W)``.

    Steps, in order: convert to ``channels`` ("L" = 1 channel, "RGB" = 3); if ``resize``,
    resize the shorter side to it (bilinear); if ``crop``, centre-crop to ``crop × crop``;
    scale to [0, 1]; normalise with ``mean``/``std`` (one value per channel).
    """

    channels: str = "RGB"
    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    #: Expected (C, H, W) after preprocessing, when known; checked before any work.
    input_shape: tuple[int, int, int] | None = field(default=None)

    def __post_init__(self):
        if self.channels not in ("L", "RGB"):
            raise ValueError(f"channels must be 'L' or 'RGB', got {self.channels!r}")
        n = self.num_channels
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"mean/std need {n} values for channels={self.channels!r}")

    @property
    def num_channels(self) -> int:
        return 1 if self.channels == "L" else 3

    def resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) of an image of ``size`` after the resize step."""
        w, h = size
        if not self.resize:
            return w, h
        scale = self.resize / min(w, h)
        return max(1, round(w * scale)), max(1, round(h * scale))

    def crop_box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the crop in the resized image of ``size`` (resized)."""
        w, h = size
        if not self.crop:
            return 0, 0, w, h
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        return left, top, left + self.crop, top + self.crop

    def upsampling(self, size: tuple[int, int]) -> float:
        """How much the resize step enlarges an image of ``size`` (1.0: not at all)."""
        return self.resized_size(size)[0] / size[0] if self.resize else 1.0

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = convert_mode(image, self.channels)
        if self.resize:
            image = image.resize(self.resized_size(image.size), Image.BILINEAR)
        if self.crop:
            image = image.crop(self.crop_box(image.size))
        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        x = torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (C, H, W)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (x - mean) / std

    def to_original(self, heatmap: np.ndarray, size: tuple[int, int], out_size: tuple[int, int] | None = None):
        """A heatmap over the model's input (H, W) mapped back onto the original image of
        ``size`` (width, height): the crop undone (what was cropped away is 0), the resize
        undone (bilinear). Returns float32 (height, width), or (out_size[1], out_size[0])
        when ``out_size`` (width, height) asks for a larger rendering of the same image."""
        heat = np.asarray(heatmap, dtype=np.float32)
        resized = self.resized_size(size)
        left, top, right, bottom = self.crop_box(resized)
        if heat.shape != (bottom - top, right - left):
            raise ValueError(f"heatmap shape {heat.shape} is not this preprocessing's output for a {size} image")
        canvas = np.zeros((resized[1], resized[0]), np.float32)  # (H, W) of the resized image
        # Crop boxes may reach outside small images (PIL pads them): keep the overlap only.
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, resized[0]), min(bottom, resized[1])
        canvas[y0:y1, x0:x1] = heat[y0 - top : y1 - top, x0 - left : x1 - left]
        target = out_size or size
        if (resized[0], resized[1]) == tuple(target):
            return canvas
        back = Image.fromarray(canvas, mode="F").resize(tuple(target), Image.BILINEAR)
        return np.clip(np.asarray(back, dtype=np.float32), 0.0, 1.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            channels=d["channels"],
            resize=d.get("resize"),
            crop=d.get("crop"),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            input_shape=tuple(d["input_shape"]) if d.get("input_shape") else None,
        )
