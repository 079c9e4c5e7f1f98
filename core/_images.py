"""Images handed in for drawing (overlays, region boundaries): one normalisation for all."""

from __future__ import annotations

import numpy as np
import torch


def as_rgb(image) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) uint8 or float [0, 1] pixels (numpy or torch) ->
    (H, W, 3) float64 in [0, 1]; ValueError for any other shape or dtype."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    if img.dtype.kind == "f":
        return np.clip(img.astype(np.float64), 0.0, 1.0)
    raise ValueError(f"expected uint8 or float pixels, got {img.dtype}")


def as_rgb_uint8(image) -> np.ndarray:
    """:func:`as_rgb` as (H, W, 3) uint8 (uint8 input comes back unchanged)."""
    return np.rint(as_rgb(image) * 255.0).astype(np.uint8)
