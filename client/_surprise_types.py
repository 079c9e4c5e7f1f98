"""The SDK's values for surprise and expectation (Hartley et al.): `Client.surprise` and suppression.

Re-exported from `types.py`; conversions from and to the wire are in `_convert.py`. Field
names are the proto's (`high_percentile`, `class_mean`, `fixed_by_surprise`, ...).
"""

from __future__ import annotations

import base64
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .types import ReferenceState, _ArrayEq, _format_table

__all__ = [
    "ReferenceDataInfo",
    "Exemplar",
    "FilterDeviation",
    "Surprise",
    "SuppressionRow",
    "SuppressionResult",
]


@dataclass(frozen=True)
class ReferenceDataInfo:
    """What a bundle's surprise statistics were computed from: the reference dataset and
    its sample count, the conv ``layer`` whose ``num_filters`` filters alpha scores, the
    importance ``method`` and the exemplars kept per filter."""

    dataset: str
    num_samples: int
    layer: str
    method: str
    num_filters: int
    exemplars_per_filter: int


@dataclass(frozen=True)
class Exemplar:
    """A reference image a filter responds to: its reference-dataset ``id`` (not an indexed
    sample id), ``uri``, class, and ``activation`` (the filter's importance for it);
    ``image_png`` (the activating part shown) only when asked for."""

    id: int
    uri: str
    label: int
    label_name: str
    activation: float
    image_png: bytes | None = None


@dataclass(frozen=True, eq=False)
class FilterDeviation(_ArrayEq):
    """One surprise or expectation filter: ``filter`` is its index in ``layer`` (and into
    `Surprise.alpha`), ``alpha`` the sample's importance, ``mean`` the class's mean on the
    reference data, ``threshold`` the percentile it crossed, ``deviation`` = alpha - mean.

    The detailed filters (the first few of each list) also carry ``region_png`` (the image
    with the driving superpixel's boundary drawn, at the original image's size),
    ``region_mask`` (bool (H, W), True inside) and ``exemplars``; the others have None and []."""

    layer: str
    filter: int
    alpha: float
    mean: float
    threshold: float
    deviation: float
    region_png: bytes | None = None
    region_mask: np.ndarray | None = None
    exemplars: list[Exemplar] = field(default_factory=list)

    def region(self, scale: int | None = None) -> bytes | None:
        """The region PNG enlarged ``scale`` times (None: enough for a readable 256 pixels)."""
        if self.region_png is None:
            return None
        from ._images import enlarge_png, png_size, readable_scale

        return enlarge_png(self.region_png, readable_scale(png_size(self.region_png)) if scale is None else scale)


@dataclass(frozen=True, eq=False)
class Surprise(_ArrayEq):
    """Surprise and expectation of a sample (`sample_id` set) or an uploaded image.

    ``beta`` = mean over filters of (alpha - class mean), eq. 2 (negative: the filters fire
    less than they did for the class on the reference data). ``surprise``: filters above
    P(high_percentile), largest deviation first; ``expectation``: filters the class relies
    on that stay below P(low_percentile), most negative first. ``alpha`` and ``class_mean``
    are float32 (num_filters,) when asked for (`include_alpha`), else None."""

    sample_id: int | None
    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float
    beta: float
    layer: str
    method: str
    high_percentile: float
    low_percentile: float
    surprise: list[FilterDeviation]
    expectation: list[FilterDeviation]
    alpha: np.ndarray | None = None
    class_mean: np.ndarray | None = None

    @property
    def correct(self) -> bool:
        return self.label == self.predicted

    def to_dict(self, images: bool = False) -> dict:
        """JSON-safe: numbers, strings, lists (NaN as None); each region as its size and
        pixel count; PNGs left out, or base64 strings with ``images=True``."""
        return _plain(self, images)

    def table(self, which: str = "surprise", width: int | None = None) -> str:
        """The ``surprise`` or ``expectation`` filters as a text table."""
        filters = getattr(self, which)
        if not filters:
            return "(none)"
        rows = [
            [
                d.layer,
                d.filter,
                d.alpha,
                d.mean,
                d.threshold,
                d.deviation,
                _region_text(d),
                " ".join(str(e.id) for e in d.exemplars) or "-",
            ]
            for d in filters
        ]
        headers = ["layer", "filter", "alpha", "mean", "threshold", "deviation", "region", "exemplars"]
        return _format_table(headers, rows, width=width)


@dataclass(frozen=True)
class SuppressionRow:
    """One setting of the sweep: ``blanked`` of ``segments`` SLIC superpixels set to the
    dataset mean, chosen by ``method`` ("surprise": the gradient through the most
    surprising filter; "vanilla": the loss gradient through every filter); what the model
    then predicts, its true-class confidence, and whether that is now correct."""

    method: str
    segments: int
    blanked: int
    predicted: int
    true_confidence: float
    corrected: bool


@dataclass(frozen=True)
class SuppressionResult:
    """Surprise suppression (Hartley et al. section 4.5) on one sample: the reference before
    any change, the suppressed filter (``filter`` -1 when the sample has none: vanilla rows
    only), one row per setting, and whether any setting fixed the prediction per method."""

    reference: ReferenceState
    layer: str
    filter: int
    rows: list[SuppressionRow]
    fixed_by_surprise: bool
    fixed_by_vanilla: bool

    def to_dicts(self) -> list[dict]:
        return [dataclasses.asdict(r) for r in self.rows]

    def table(self, width: int | None = None) -> str:
        if not self.rows:
            return "(no rows)"
        names = [f.name for f in dataclasses.fields(SuppressionRow)]
        return _format_table(names, [[getattr(r, n) for n in names] for r in self.rows], width=width)

    def summary(self, width: int | None = None) -> str:
        """What the CLI prints for a finished suppression operation."""
        ref = self.reference
        who = f"sample {ref.sample_id}" if ref.sample_id is not None else "uploaded image"
        target = f"{self.layer}[{self.filter}]" if self.filter >= 0 else "none (no surprise filter)"
        lines = [
            f"reference {who}: label {ref.label}, predicted {ref.predicted}, true confidence {ref.true_confidence:.4f}",
            f"suppressed filter: {target}",
            f"fixed by surprise: {'yes' if self.fixed_by_surprise else 'no'}; "
            f"fixed by vanilla: {'yes' if self.fixed_by_vanilla else 'no'}",
            self.table(width=width),
        ]
        return "\n".join(lines)


def _region_text(d: FilterDeviation) -> str:
    if d.region_mask is None:
        return "-"
    h, w = d.region_mask.shape
    return f"{int(d.region_mask.sum())}/{h * w} px"


def _plain(value, images: bool):
    """SDK values as JSON data (see `Surprise.to_dict`)."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, FilterDeviation):
        out = {f.name: _plain(getattr(value, f.name), images) for f in dataclasses.fields(value)}
        mask = value.region_mask
        out["region_mask"] = None if mask is None else _mask_summary(mask)
        if not images:
            out.pop("region_png")
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _plain(getattr(value, f.name), images) for f in dataclasses.fields(value)}
        if not images:
            out = {k: v for k, v in out.items() if not isinstance(getattr(value, k), (bytes, bytearray))}
            if isinstance(value, Exemplar):
                out.pop("image_png", None)
        return out
    if isinstance(value, np.ndarray):
        return [_plain(v, images) for v in value.tolist()] if value.dtype.kind == "f" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, images) for v in value]
    return value


def _mask_summary(mask: np.ndarray) -> dict:
    h, w = mask.shape
    return {"height": int(h), "width": int(w), "pixels": int(np.count_nonzero(mask))}
