"""The ordered filters of a model: which profile entries belong to which layer.

A *filter* is one output channel of an ``nn.Conv2d`` (optionally one output unit of an
``nn.Linear``, the paper's column-wise aggregation for transformers, A.4). A saliency
profile is a vector with one entry per filter, laid out layer after layer in module
registration order (``model.named_modules()``), which is also forward order for the
usual torchvision architectures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from torch import nn


@dataclass(frozen=True)
class LayerSpan:
    """One layer's slice of the profile vector: entries ``[offset, offset + filters)``."""

    name: str  # module name in ``model.named_modules()``
    kind: str  # "conv2d" or "linear"
    filters: int  # output channels (conv) or output units (linear)
    offset: int

    @property
    def stop(self) -> int:
        return self.offset + self.filters


@dataclass(frozen=True)
class FilterLayout:
    """Ordered layers of a model and where their filters sit in a profile vector."""

    layers: tuple[LayerSpan, ...]

    @property
    def num_filters(self) -> int:
        return self.layers[-1].stop if self.layers else 0

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[LayerSpan]:
        return iter(self.layers)

    def layer(self, name: str) -> LayerSpan:
        for span in self.layers:
            if span.name == name:
                return span
        raise KeyError(f"unknown layer {name!r}; known: {[s.name for s in self.layers][:8]}...")

    def locate(self, index: int) -> tuple[LayerSpan, int]:
        """Profile index -> (layer, filter index within that layer)."""
        if not 0 <= index < self.num_filters:
            raise IndexError(f"filter index {index} outside [0, {self.num_filters})")
        for span in self.layers:
            if index < span.stop:
                return span, index - span.offset
        raise AssertionError("unreachable")  # pragma: no cover

    def indices(self, layer_names: Sequence[str]) -> list[int]:
        """Profile indices of every filter of the named layers, in layout order."""
        wanted = set(layer_names)
        missing = wanted - {s.name for s in self.layers}
        if missing:
            raise KeyError(f"unknown layer(s): {sorted(missing)}")
        return [i for s in self.layers if s.name in wanted for i in range(s.offset, s.stop)]

    def to_dict(self) -> list[dict]:
        return [{"name": s.name, "kind": s.kind, "filters": s.filters, "offset": s.offset} for s in self.layers]

    @classmethod
    def from_dict(cls, rows: Sequence[dict]) -> "FilterLayout":
        return cls(tuple(LayerSpan(r["name"], r["kind"], int(r["filters"]), int(r["offset"])) for r in rows))


def filter_layout(model: nn.Module, include_linear: bool = False) -> FilterLayout:
    """Ordered filters of ``model``: every ``nn.Conv2d`` (and, if asked, ``nn.Linear``).

    Any stride, padding, dilation and groups count; a filter is one output channel, whose
    weights are ``conv.weight[c]`` (shape ``[C_in / groups, kh, kw]``).
    """
    spans: list[LayerSpan] = []
    offset = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            kind, filters = "conv2d", module.out_channels
        elif include_linear and isinstance(module, nn.Linear):
            kind, filters = "linear", module.out_features
        else:
            continue
        spans.append(LayerSpan(name, kind, filters, offset))
        offset += filters
    if not spans:
        raise ValueError("model has no nn.Conv2d layers (pass include_linear=True for linear-only models)")
    return FilterLayout(tuple(spans))
