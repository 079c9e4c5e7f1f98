"""The values the SDK returns: frozen dataclasses with numpy arrays, no protobuf in sight.

Conversions from and to the wire messages live in `_convert.py`. Dataclasses holding
arrays compare their arrays by value (`np.array_equal`) and are unhashable.
"""

from __future__ import annotations

import dataclasses
import io
import math
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


def _format_table(headers: list[str], rows: list[list], width: int | None = None) -> str:
    """A plain-text table (rich, no colour): numbers right-aligned, long cells (paths)
    folded to fit ``width`` columns; None: every cell on one line, as wide as it needs."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    cells = [[_cell(v) for v in row] for row in rows]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, safe_box=True)
    for i, header in enumerate(headers):
        numeric = bool(cells) and all(_numeric(r[i]) for r in cells)
        table.add_column(header, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric)
    for r in cells:
        table.add_row(*r)
    buffer = io.StringIO()
    # A wide console measures the table at its natural width; markup and highlighting are
    # off so paths and names print exactly as given.
    console = Console(file=buffer, width=width or 100_000, color_system=None, markup=False, highlight=False)
    console.print(table, crop=False)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())


def _cell(value) -> str:
    if value is None:
        return "-"  # not measured
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _numeric(text: str) -> bool:
    if text == "-":
        return True
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
    """A bundle the server has loaded: the model, the dataset and the index built from them.

    ``class_names[i]`` names label ``i`` (empty when the bundle records none);
    ``input_shape`` is the model's (C, H, W) after the recorded preprocessing;
    ``layers`` slice the profile vector of ``num_filters`` entries."""

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
    """An indexed sample: where it came from (``uri``), its true ``label``, what the model
    ``predicted``, the softmax confidences of both, the loss, and its most salient filters
    (empty in neighbour answers unless asked for). ``*_name`` are the classes' names."""

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
    """One answer of `find_similar_failures`: a sample and the cosine similarity of its
    profile to the query's (1 = the same direction)."""

    id: int
    similarity: float
    sample: Sample


@dataclass(frozen=True)
class ConfusionCount:
    """How many neighbours have this (true label, predicted class) pair."""

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
    """Input-space saliency: heatmap float32 (H, W) in [0, 1] and the overlay as PNG.

    ``filters`` are the boosted filters with their z-scores; ``label`` and ``predicted``
    are the query's true and predicted classes."""

    heatmap: np.ndarray
    overlay_png: bytes
    filters: list[FilterScore]
    label: int
    predicted: int

    def overlay(self, scale: int | None = None) -> bytes:
        """The overlay PNG enlarged ``scale`` times (nearest neighbour); None: enough to make
        its longest side at least 256 pixels (10x for 28x28 images, 1x for large ones).

        The server draws it on the original image (its size is the sample's image size),
        so it lines up with `Client.sample_image`."""
        from ._images import enlarge_png, png_size, readable_scale

        return enlarge_png(self.overlay_png, readable_scale(png_size(self.overlay_png)) if scale is None else scale)


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
    """One gradient step on ``count`` filters chosen by ``selection`` (paper section 3.3).

    ``reference_*``: whether the reference became correct and how its true-class
    confidence changed. ``neighbors_*``: the same over ``neighbors_evaluated``
    misclassified neighbours; None (``null`` in JSON) when none were evaluated."""

    selection: str
    count: int
    reference_corrected: bool
    reference_true_confidence_delta: float
    neighbors_corrected_fraction: float | None
    neighbors_true_confidence_delta: float | None
    neighbors_evaluated: int


@dataclass(frozen=True)
class PruningRow:
    """``count`` filters chosen by ``selection`` set to zero (paper section 3.1).

    ``corrected``: the reference is now classified correctly; ``incorrect_confidence_delta``
    and ``true_confidence_delta``: changes of the confidences of the originally predicted
    (wrong) class and of the true class. ``neighbors_*``: the same over
    ``neighbors_evaluated`` misclassified neighbours; None (``null`` in JSON) when none
    were evaluated."""

    selection: str
    count: int
    corrected: bool
    incorrect_confidence_delta: float
    true_confidence_delta: float
    neighbors_corrected_fraction: float | None
    neighbors_incorrect_confidence_delta: float | None
    neighbors_true_confidence_delta: float | None
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

    def table(self, width: int | None = None) -> str:
        """The rows as a text table (short column titles; "-" where not measured), folded
        to ``width`` columns when given."""
        if not self.rows:
            return "(no rows)"
        names = [f.name for f in dataclasses.fields(self.rows[0])]
        titles = [_SHORT_TITLES.get(n, n) for n in names]
        return _format_table(titles, [[getattr(r, n) for n in names] for r in self.rows], width=width)


@dataclass(frozen=True, eq=False)
class FinetuneResult(_RowsTable, _ArrayEq):
    """A fine-tuning evaluation: the reference before any change, the neighbours it was
    measured on, one row per (selection, count) plus the whole-network baseline, and the
    step size used."""

    reference: ReferenceState
    neighbor_ids: np.ndarray  # int64 (N,)
    rows: list[FinetuneRow]
    step_size: float


@dataclass(frozen=True, eq=False)
class PruningResult(_RowsTable, _ArrayEq):
    """A pruning evaluation: the reference before any change, the neighbours it was
    measured on and one row per (selection, count)."""

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
