"""The ordered filters of a model: which profile entries belong to which layer.

A *filter* is one output channel of an ``nn.Conv2d`` (optionally one output unit of an
``nn.Linear``, the paper's column-wise aggregation for transformers, A.4). A saliency
profile is a vector with one entry per filter, laid out layer after layer in module
registration order (``model.named_modules()``), which is also forward order for the
usual torchvision architectures.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
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
        span = self._by_name.get(name)
        if span is None:
            raise KeyError(f"unknown layer {name!r}; known: {[s.name for s in self.layers][:8]}...")
        return span

    def locate(self, index: int) -> tuple[LayerSpan, int]:
        """Profile index -> (layer, filter index within that layer), in O(1)."""
        index = operator.index(index)
        if not 0 <= index < self.num_filters:
            raise IndexError(f"filter index {index} outside [0, {self.num_filters})")
        span = self.layers[self._owner[index]]
        return span, index - span.offset

    def locate_many(self, indices) -> tuple[list[str], np.ndarray]:
        """Profile indices (n,) -> (layer name of each, int64 filter index within its layer)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = idx[(idx < 0) | (idx >= self.num_filters)]
        if len(bad):
            raise IndexError(f"filter index {int(bad[0])} outside [0, {self.num_filters})")
        owner = self._owner[idx]  # (n,) layer positions
        offsets = np.array([s.offset for s in self.layers], np.int64)
        return [self.layers[i].name for i in owner.tolist()], idx - offsets[owner]

    # Lookup tables, built on first use and kept on the (frozen, immutable) instance;
    # cached_property writes the instance __dict__ directly, so frozen=True allows it,
    # and they are not fields: equality and the dict form ignore them.
    @functools.cached_property
    def _by_name(self) -> dict[str, LayerSpan]:
        table: dict[str, LayerSpan] = {}
        for span in self.layers:
            table.setdefault(span.name, span)  # the first of a repeated name, as a scan would find
        return table

    @functools.cached_property
    def _owner(self) -> np.ndarray:
        """(F,) position in ``layers`` of the first layer whose ``stop`` exceeds each profile index."""
        stops = np.array([s.stop for s in self.layers], np.int64)
        return np.searchsorted(stops, np.arange(self.num_filters), side="right").astype(np.int32)

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
    def from_dict(cls, rows: Sequence[dict]) -> FilterLayout:
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
