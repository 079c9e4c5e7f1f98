"""The SDK's values for browsing a bundle: `Client.samples`, `Client.confusion_matrix`,
`Client.failure_modes`.

Re-exported from `types.py`; conversions from and to the wire are in `_convert_browse.py`.
Field names are the proto's (`per_class_accuracy`, `medoid_ids`, `shared_surprise`, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .types import ConfusionCount, FilterScore, Sample, _ArrayEq, _format_table

__all__ = [
    "ConfusionMatrix",
    "FilterCount",
    "FailureMode",
    "FailureMapPoint",
    "FailureModes",
    "SamplePage",
    "SAMPLE_ORDERS",
]

#: `Client.samples(order_by=...)`: the proto's SampleOrder names.
SAMPLE_ORDERS = ("id", "loss", "true_confidence", "predicted_confidence", "beta")


@dataclass(frozen=True, eq=False)
class ConfusionMatrix(_ArrayEq):
    """``counts[true, predicted]`` (int64 (C, C)); ``per_class_accuracy`` (float32 (C,), NaN
    for a class without samples) is correct / samples of each true class."""

    num_classes: int
    class_names: list[str]
    counts: np.ndarray
    per_class_accuracy: np.ndarray
    accuracy: float
    num_samples: int

    def name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def table(self, width: int | None = None) -> str:
        """Rows: true classes; columns: predicted classes, then the class's accuracy."""
        names = [self.name(c) for c in range(self.num_classes)]
        headers = ["true \\ predicted", *names, "accuracy"]
        rows = [
            [names[t], *self.counts[t].tolist(), float(self.per_class_accuracy[t])] for t in range(self.num_classes)
        ]
        return _format_table(headers, rows, width=width)


@dataclass(frozen=True)
class FilterCount:
    """A filter (``layer``, ``filter`` within it) and how many of a mode's members have it among
    their surprise (or expectation) filters."""

    layer: str
    filter: int
    count: int


@dataclass(frozen=True, eq=False)
class FailureMode(_ArrayEq):
    """Misclassified samples failing for the same reason (one cluster of their profiles).

    ``confusions``: its (true, predicted) pairs, most frequent first; ``top_filters``: its mean
    profile's most salient filters; ``medoid_ids``: members closest to its centre, closest
    first; ``cohesion``: mean cosine of members to its centre; ``shared_surprise`` /
    ``shared_expectation``: only for bundles with reference data; ``member_ids``: every
    member (empty unless asked for with ``include_members``)."""

    id: int
    size: int
    confusions: list[ConfusionCount]
    top_filters: list[FilterScore]
    medoid_ids: np.ndarray
    cohesion: float
    shared_surprise: list[FilterCount] = field(default_factory=list)
    shared_expectation: list[FilterCount] = field(default_factory=list)
    member_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass(frozen=True)
class FailureMapPoint:
    """One misclassified sample on the failure map (``failure_mode`` -1: in no mode)."""

    id: int
    x: float
    y: float
    label: int
    predicted: int
    failure_mode: int


@dataclass(frozen=True, eq=False)
class FailureModes(_ArrayEq):
    """A bundle's failure modes, largest first (``modes[i].id == i``); iterating yields them.

    ``method`` says how they were found and ``silhouette`` scores the chosen number of modes;
    ``map`` (with ``include_map``) places every misclassified sample in 2-D (``map_method``)."""

    modes: list[FailureMode]
    method: str
    silhouette: float
    num_misclassified: int
    num_unassigned: int
    map: list[FailureMapPoint] = field(default_factory=list)
    map_method: str = ""

    def __iter__(self) -> Iterator[FailureMode]:
        return iter(self.modes)

    def __len__(self) -> int:
        return len(self.modes)

    def __getitem__(self, i) -> FailureMode:
        return self.modes[i]

    def table(self, class_names: list[str] | None = None, width: int | None = None) -> str:
        """One row per mode: size, cohesion, its three most frequent confusion pairs, medoid, top filter."""
        names = class_names or []

        def name(label: int) -> str:
            return names[label] if 0 <= label < len(names) else str(label)

        rows = [
            [
                m.id,
                m.size,
                m.cohesion,
                ", ".join(f"{name(c.label)}->{name(c.predicted)} {c.count}" for c in m.confusions[:3]),
                int(m.medoid_ids[0]) if len(m.medoid_ids) else "-",
                f"{m.top_filters[0].layer}[{m.top_filters[0].filter}]" if m.top_filters else "-",
            ]
            for m in self.modes
        ]
        return _format_table(["mode", "size", "cohesion", "confusions", "medoid", "top filter"], rows, width=width)


@dataclass(frozen=True)
class SamplePage:
    """One page of `Client.samples` (the iterator follows ``next_page_token`` itself)."""

    samples: list[Sample]
    next_page_token: str
    total_size: int
