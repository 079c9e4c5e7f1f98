"""Exemplars: the reference images that activate a filter most, and the part of each that does (§4.3-4.4, Fig. 7-8).

:func:`top_exemplars` ranks the rows of a reference importance matrix α ``(M, N)`` per
filter, overall and within each class (pure numpy; mergeable across shards through
global ``ids``). :func:`activation_maps` gives, for images and one filter each, that
channel's activation map upsampled to the image (bilinear), its positive part scaled to
[0, 1]; :func:`exemplar_png` shows an image with the non-activating part dimmed (the
paper's masked exemplars).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._hooks import HookOwner
from ._state import eval_mode, model_device, model_dtype
from .importance import conv_module, last_conv_layer

__all__ = ["Exemplars", "top_exemplars", "activation_maps", "exemplar_png"]


@dataclass(frozen=True, eq=False)  # holds arrays
class Exemplars:
    """Top ``k`` reference rows per filter: ids (−1 where fewer exist) and their α (NaN there), highest α first."""

    overall_ids: np.ndarray  # (N, k) int64
    overall_alpha: np.ndarray  # (N, k) float32
    class_ids: np.ndarray  # (K, N, k) int64
    class_alpha: np.ndarray  # (K, N, k) float32

    def merge(self, other: Exemplars) -> Exemplars:
        """Top ``k`` of the union (shards with disjoint ids); neither input is modified."""
        k = self.overall_ids.shape[-1]
        overall = _top_of(
            np.concatenate([self.overall_alpha, other.overall_alpha], -1),
            np.concatenate([self.overall_ids, other.overall_ids], -1),
            k,
        )
        by_class = _top_of(
            np.concatenate([self.class_alpha, other.class_alpha], -1),
            np.concatenate([self.class_ids, other.class_ids], -1),
            k,
        )
        return Exemplars(overall[1], overall[0], by_class[1], by_class[0])


def top_exemplars(alpha, labels, num_classes: int, *, k: int = 6, ids=None) -> Exemplars:
    """Per filter, the ``k`` rows of ``alpha`` ``(M, N)`` with the highest α, overall and per class.

    ``labels`` ``(M,)`` in ``[0, num_classes)``; ``ids`` ``(M,)`` int64 (default ``0..M-1``)
    name the rows in the result. Ties: the lower id first.
    """
    a = np.asarray(alpha.detach().cpu().numpy() if hasattr(alpha, "detach") else alpha, np.float32)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    row_ids = np.arange(len(a), dtype=np.int64) if ids is None else np.asarray(ids, np.int64).reshape(-1)
    if a.ndim != 2 or len(y) != len(a) or len(row_ids) != len(a) or k < 1:
        raise ValueError(f"expected alpha (M, N) with M labels and ids and k >= 1, got {a.shape}, {len(y)}, k={k}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    columns = np.ascontiguousarray(a.T)  # (N, M)
    ids_row = np.broadcast_to(row_ids, columns.shape)
    overall_alpha, overall_ids = _top_of(columns, ids_row, k)
    class_alpha = np.full((num_classes, a.shape[1], k), np.nan, np.float32)
    class_ids = np.full((num_classes, a.shape[1], k), -1, np.int64)
    for c in range(num_classes):
        rows = y == c
        if rows.any():
            class_alpha[c], class_ids[c] = _top_of(columns[:, rows], ids_row[:, rows], k)
    return Exemplars(overall_ids, overall_alpha, class_ids, class_alpha)


def _top_of(values: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Along the last axis: the ``k`` largest values (NaN = missing, last) with their ids; ties to the lower id."""
    missing = np.isnan(values) | (ids < 0)
    key = np.where(missing, np.inf, -values)
    order = np.lexsort((ids, key), axis=-1)[..., :k]  # by -value, then id
    top_values = np.take_along_axis(np.where(missing, np.nan, values), order, -1).astype(np.float32)
    top_ids = np.take_along_axis(np.where(missing, -1, ids), order, -1)
    pad = k - top_values.shape[-1]
    if pad > 0:
        widths = [(0, 0)] * (values.ndim - 1) + [(0, pad)]
        top_values = np.pad(top_values, widths, constant_values=np.nan)
        top_ids = np.pad(top_ids, widths, constant_values=-1)
    return top_values, top_ids


def activation_maps(model: nn.Module, images: torch.Tensor, filters, *, layer: str | None = None) -> np.ndarray:
    """(B, H, W) float32 in [0, 1]: each image's activation map of its filter, upsampled, positive part / max.

    ``images`` ``(B, C, H, W)`` model-ready; ``filters`` one int or ``(B,)``. A map with no
    positive activation is all zeros. Eval mode, no gradients; the model is left as it was.
    """
    x = images.detach().to(model_device(model), model_dtype(model))
    if x.dim() == 3:
        x = x[None]
    name = last_conv_layer(model, x[:1]) if layer is None else layer
    module = conv_module(model, name)
    chosen = torch.as_tensor(filters, dtype=torch.long).reshape(-1).expand(len(x)).to(x.device)
    if int(chosen.min()) < 0 or int(chosen.max()) >= module.out_channels:
        raise ValueError(f"filters must lie in [0, {module.out_channels}) for layer {name!r}")
    captured = []
    with eval_mode(model), HookOwner() as hooks, torch.no_grad():
        hooks.forward_hook(module, lambda m, args, out: captured.append(out.detach().clone()))
        model(x)
    maps = captured[-1][torch.arange(len(x)), chosen][:, None].float()  # (B, 1, h, w)
    maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].clamp(min=0)
    peak = maps.flatten(1).amax(1).clamp(min=torch.finfo(torch.float32).tiny)[:, None, None]
    return (maps / peak).cpu().numpy().astype(np.float32)


def exemplar_png(image, activation: np.ndarray, *, upscale: int | None = None, dim: float = 0.2) -> bytes:
    """PNG of ``image`` ((H, W) or (H, W, 3), uint8 or [0, 1]) with each pixel's brightness kept in proportion
    to ``activation`` (H, W) in [0, 1], down to ``dim`` where the filter does not fire."""
    from PIL import Image

    img = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
    img = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    if img.ndim == 2:
        img = img[..., None]
    heat = np.clip(np.asarray(activation, np.float64), 0, 1)
    if heat.shape != img.shape[:2]:
        raise ValueError(f"activation shape {heat.shape} does not match the image's {img.shape[:2]}")
    out = img * (dim + (1 - dim) * heat[..., None])
    if upscale is not None:
        out = out.repeat(int(upscale), 0).repeat(int(upscale), 1)
    pixels = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()
