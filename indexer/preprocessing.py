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

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert(self.channels)
        if self.resize:
            w, h = image.size
            scale = self.resize / min(w, h)
            image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        if self.crop:
            w, h = image.size
            left, top = (w - self.crop) // 2, (h - self.crop) // 2
            image = image.crop((left, top, left + self.crop, top + self.crop))
        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        x = torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (C, H, W)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (x - mean) / std

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
