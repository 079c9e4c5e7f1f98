"""The values the SDK returns: frozen dataclasses with numpy arrays, no protobuf in sight.

Conversions from and to the wire messages live in `_convert.py`. Dataclasses holding
arrays compare their arrays by value (`np.array_equal`) and are unhashable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import grpc
import numpy as np

__all__ = [
    "Layer",
    "BundleInfo",
    "FilterScore",
    "Sample",
    "Profile",
    "Neighbor",
    "ConfusionCount",
    "SimilarFailures",
    "Explanation",
    "ReferenceState",
    "FinetuneRow",
    "PruningRow",
    "FinetuneResult",
    "PruningResult",
    "OperationErrorInfo",
    "Operation",
    "SELECTIONS",
    "OPERATION_STATES",
    "TERMINAL_STATES",
]

# Names of the proto enums as the SDK spells them.
SELECTIONS = ("most", "random", "least", "whole_network")
OPERATION_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "aborted")
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "aborted"})


def _values_equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if a is None or b is None:
            return a is b
        return bool(np.array_equal(a, b))
    return a == b


class _ArrayEq:
    """Field-wise equality that compares numpy arrays by value."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(_values_equal(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))


def _format_table(headers: list[str], rows: list[list]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Index description


@dataclass(frozen=True)
class Layer:
    """One layer's slice of the profile vector: entries [offset, offset + filters)."""

    name: str
    kind: str
    filters: int
    offset: int


@dataclass(frozen=True)
class BundleInfo:
    name: str
    model: str
    model_fingerprint: str
    dataset: str
    num_samples: int
    num_misclassified: int
    num_filters: int
    layers: list[Layer]
    index_type: str
    class_names: list[str]
    created_at: datetime | None
    input_shape: tuple[int, ...]


@dataclass(frozen=True)
class FilterScore:
    """A filter (profile index, layer, index within the layer) and its z-score."""

    index: int
    layer: str
    filter: int
    z: float


# ---------------------------------------------------------------------------------------
# Samples, profiles, neighbours, explanations


@dataclass(frozen=True)
class Sample:
    id: int
    uri: str
    label: int
    predicted: int
    correct: bool
    true_confidence: float
    predicted_confidence: float
    loss: float
    top_filters: list[FilterScore]
    label_name: str = ""
    predicted_name: str = ""
    # PNG of the stored image, only when asked for (GetSample with include_image).
    image_png: bytes | None = None


@dataclass(frozen=True, eq=False)
class Profile(_ArrayEq):
    """Saliency profile of an indexed sample (`sample_id` set) or of an uploaded image."""

    sample_id: int | None
    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float
    loss: float
    top_filters: list[FilterScore]
    # The full standardized profile, float32 (F,), when requested with full=True.
    vector: np.ndarray | None = None

    @property
    def correct(self) -> bool:
        return self.label == self.predicted


@dataclass(frozen=True)
class Neighbor:
    id: int
    similarity: float
    sample: Sample


@dataclass(frozen=True)
class ConfusionCount:
    label: int
    predicted: int
    count: int


@dataclass(frozen=True)
class SimilarFailures:
    """Nearest profiles, most similar first; iterating yields the neighbours."""

    neighbors: list[Neighbor]
    confusions: list[ConfusionCount] = field(default_factory=list)

    def __iter__(self) -> Iterator[Neighbor]:
        return iter(self.neighbors)

    def __len__(self) -> int:
        return len(self.neighbors)

    def __getitem__(self, i):
        return self.neighbors[i]

    @property
    def ids(self) -> np.ndarray:
        return np.array([n.id for n in self.neighbors], dtype=np.int64)

    @property
    def similarities(self) -> np.ndarray:
        return np.array([n.similarity for n in self.neighbors], dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Explanation(_ArrayEq):
    """Input-space saliency: heatmap float32 (H, W) in [0, 1] and the overlay as PNG."""

    heatmap: np.ndarray
    overlay_png: bytes
    filters: list[FilterScore]
    label: int
    predicted: int


# ---------------------------------------------------------------------------------------
# Evaluations


@dataclass(frozen=True)
class ReferenceState:
    """The evaluated sample before any change."""

    sample_id: int | None
    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float


@dataclass(frozen=True)
class FinetuneRow:
    selection: str
    count: int
    reference_corrected: bool
    reference_true_confidence_delta: float
    neighbors_corrected_fraction: float
    neighbors_true_confidence_delta: float
    neighbors_evaluated: int


@dataclass(frozen=True)
class PruningRow:
    selection: str
    count: int
    corrected: bool
    incorrect_confidence_delta: float
    true_confidence_delta: float
    neighbors_corrected_fraction: float
    neighbors_incorrect_confidence_delta: float
    neighbors_true_confidence_delta: float
    neighbors_evaluated: int


# Short column titles for `table()` ("d" = change of a confidence, "nbr" = neighbours).
_SHORT_TITLES = {
    "reference_corrected": "ref_fixed",
    "reference_true_confidence_delta": "ref_dtrue",
    "corrected": "fixed",
    "incorrect_confidence_delta": "dwrong",
    "true_confidence_delta": "dtrue",
    "neighbors_corrected_fraction": "nbr_fixed",
    "neighbors_incorrect_confidence_delta": "nbr_dwrong",
    "neighbors_true_confidence_delta": "nbr_dtrue",
    "neighbors_evaluated": "nbrs",
}


class _RowsTable:
    """`to_dicts()` and `table()` over a result's `rows`."""

    rows: list

    def to_dicts(self) -> list[dict]:
        return [dataclasses.asdict(r) for r in self.rows]

    def table(self) -> str:
        """The rows as a fixed-width text table (short column titles)."""
        if not self.rows:
            return "(no rows)"
        names = [f.name for f in dataclasses.fields(self.rows[0])]
        titles = [_SHORT_TITLES.get(n, n) for n in names]
        return _format_table(titles, [[getattr(r, n) for n in names] for r in self.rows])


@dataclass(frozen=True, eq=False)
class FinetuneResult(_RowsTable, _ArrayEq):
    reference: ReferenceState
    neighbor_ids: np.ndarray  # int64 (N,)
    rows: list[FinetuneRow]
    step_size: float


@dataclass(frozen=True, eq=False)
class PruningResult(_RowsTable, _ArrayEq):
    reference: ReferenceState
    neighbor_ids: np.ndarray  # int64 (N,)
    rows: list[PruningRow]


# ---------------------------------------------------------------------------------------
# Operations


@dataclass(frozen=True)
class OperationErrorInfo:
    """Why an operation failed or was aborted: a gRPC status code and a message."""

    code: grpc.StatusCode
    message: str


@dataclass(frozen=True)
class Operation:
    """A snapshot of a long-running evaluation."""

    id: str
    kind: str  # "finetune" | "pruning" ("" if unspecified)
    state: str  # one of OPERATION_STATES ("unspecified" if the server sent none)
    progress: float
    message: str
    bundle: str
    created_at: datetime | None
    updated_at: datetime | None
    result: FinetuneResult | PruningResult | None = None
    error: OperationErrorInfo | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES
