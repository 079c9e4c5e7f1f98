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
    "Collateral",
    "DrawSpread",
    "FinetuneRow",
    "PruningRow",
    "FinetuneResult",
    "PruningResult",
    "ExportedEdit",
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
    # Set where the bundle was indexed with reference data (`Client.surprise` works).
    reference: ReferenceDataInfo | None = None


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
    # Where the bundle has reference data: beta (eq. 2) and the numbers of surprise and
    # expectation filters at the default thresholds (else None, 0, 0).
    beta: float | None = None
    num_surprise: int = 0
    num_expectation: int = 0
    # The failure mode of a misclassified sample, where the server has computed the modes
    # (`Client.failure_modes`); else None.
    failure_mode: int | None = None


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
class Collateral:
    """The edited model on correctly classified samples of the neighbour bundle: is the fix safe?

    ``evaluated``: samples measured (correct before the edit); ``flips``: correct -> incorrect;
    ``accuracy_delta`` = −flips / evaluated; ``true_confidence_delta``: the mean change of
    their true-class confidence. A random row's collateral is its first draw's (the row's
    ``filters``). None in a row: not measured (``skip_collateral``)."""

    evaluated: int
    accuracy_delta: float | None
    flips: int
    true_confidence_delta: float | None


@dataclass(frozen=True)
class DrawSpread:
    """Standard deviation (ddof 1) over a random row's ``draws`` (the row's figures are their
    means); None where not measured (no neighbours; ``incorrect_*`` for fine-tuning)."""

    draws: int
    reference_true_confidence_delta_std: float | None
    neighbors_true_confidence_delta_std: float | None
    neighbors_corrected_fraction_std: float | None
    incorrect_confidence_delta_std: float | None


@dataclass(frozen=True)
class FinetuneRow:
    """One gradient step on ``count`` filters chosen by ``selection`` (Levin et al. section 3.3).

    The step (section B.1): the most salient filters take ``step_size`` times their raw loss
    gradient on the reference; random and least-salient sets are rescaled to the salient
    set's gradient norm first; the ``whole_network`` row (``count`` 0, see ``parameters``)
    takes ``step_size`` times the whole gradient.

    ``reference_*``: whether the reference became correct and how its true-class
    confidence changed. ``neighbors_*``: the same over ``neighbors_evaluated``
    misclassified neighbours; None (``null`` in JSON) when none were evaluated. A random
    row's figures are means over its draws (``spread``; ``reference_corrected``: in the
    majority, ``reference_corrected_fraction``: the share). ``filters``: the exact profile
    indices changed (a random row: its first draw's); ``parameters``: scalars changed."""

    selection: str
    count: int
    reference_corrected: bool
    reference_true_confidence_delta: float
    neighbors_corrected_fraction: float | None
    neighbors_true_confidence_delta: float | None
    neighbors_evaluated: int
    parameters: int = 0
    filters: tuple[int, ...] = ()
    collateral: Collateral | None = None
    spread: DrawSpread | None = None
    reference_corrected_fraction: float = 0.0

    @property
    def label(self) -> str:
        """``"most 5"``, or ``"whole network (N parameters)"`` for the whole-network row."""
        if self.selection == "whole_network":
            return f"whole network ({self.parameters:,} parameters)"
        return f"{self.selection} {self.count}"


@dataclass(frozen=True)
class PruningRow:
    """``count`` filters chosen by ``selection`` set to zero (Levin et al. section 3.1).

    ``corrected``: the reference is now classified correctly; ``incorrect_confidence_delta``
    and ``true_confidence_delta``: changes of the confidences of the originally predicted
    (wrong) class and of the true class. ``neighbors_*``: the same over
    ``neighbors_evaluated`` misclassified neighbours; None (``null`` in JSON) when none
    were evaluated. Random rows, ``filters``, ``collateral``: as in :class:`FinetuneRow`."""

    selection: str
    count: int
    corrected: bool
    incorrect_confidence_delta: float
    true_confidence_delta: float
    neighbors_corrected_fraction: float | None
    neighbors_incorrect_confidence_delta: float | None
    neighbors_true_confidence_delta: float | None
    neighbors_evaluated: int
    filters: tuple[int, ...] = ()
    collateral: Collateral | None = None
    spread: DrawSpread | None = None
    reference_corrected_fraction: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.selection} {self.count}"


# Short column titles for `table()` ("d" = change of a confidence, "nbr" = neighbours,
# "coll" = collateral, "sd" = standard deviation over random draws).
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
#: Row fields that get their own rendering in `table()` instead of a column each.
_TABLE_EXTRAS = ("parameters", "filters", "collateral", "spread", "reference_corrected_fraction")
#: Filters shown in a table cell (all of them in to_dicts() / --json).
_TABLE_FILTERS = 4


class _RowsTable:
    """`to_dicts()` and `table()` over a result's `rows`."""

    rows: list

    def to_dicts(self) -> list[dict]:
        return [dataclasses.asdict(r) for r in self.rows]

    def table(self, width: int | None = None) -> str:
        """The rows as a text table (short column titles; "-" where not measured), folded
        to ``width`` columns when given: the row's figures, then its collateral (flips of
        evaluated, accuracy and true-confidence change), the spread of the reference's
        true-confidence change over random draws, and the first filters changed."""
        if not self.rows:
            return "(no rows)"
        names = [f.name for f in dataclasses.fields(self.rows[0]) if f.name not in _TABLE_EXTRAS]
        titles = [_SHORT_TITLES.get(n, n) for n in names]
        titles += ["coll_flips", "coll_dacc", "coll_dtrue", "sd_ref_dtrue", "filters"]
        return _format_table(titles, [self._cells(r, names) for r in self.rows], width=width)

    @staticmethod
    def _cells(row, names: list[str]) -> list:
        cells = [getattr(row, n) for n in names]
        if row.selection == "whole_network":
            cells[0], cells[1] = row.label, None
        c = row.collateral
        measured = c is not None and c.evaluated > 0
        cells += [f"{c.flips}/{c.evaluated}" if measured else None]
        cells += [c.accuracy_delta if measured else None, c.true_confidence_delta if measured else None]
        cells += [row.spread.reference_true_confidence_delta_std if row.spread is not None else None]
        shown = ",".join(str(f) for f in row.filters[:_TABLE_FILTERS])
        more = len(row.filters) - _TABLE_FILTERS
        cells += [(shown + (f",+{more}" if more > 0 else "")) or None]
        return cells


@dataclass(frozen=True, eq=False)
class FinetuneResult(_RowsTable, _ArrayEq):
    """A fine-tuning evaluation: the reference before any change, the neighbours it was
    measured on, one row per (selection, count) plus the whole-network baseline, and what
    the step was: ``step_size`` (see :class:`FinetuneRow`), the ``seed`` and the number of
    ``random_draws`` per random row (``Client.export_edited_model`` replays any row)."""

    reference: ReferenceState
    neighbor_ids: np.ndarray  # int64 (N,)
    rows: list[FinetuneRow]
    step_size: float
    seed: int = 0
    random_draws: int = 0
    failure_mode: int | None = None


@dataclass(frozen=True, eq=False)
class PruningResult(_RowsTable, _ArrayEq):
    """A pruning evaluation: the reference before any change, the neighbours it was
    measured on, one row per (selection, count), the ``seed`` and ``random_draws``."""

    reference: ReferenceState
    neighbor_ids: np.ndarray  # int64 (N,)
    rows: list[PruningRow]
    seed: int = 0
    random_draws: int = 0


@dataclass(frozen=True)
class ExportedEdit:
    """The edited model of one evaluation row, written by ``Client.export_edited_model``:
    ``path`` holds a ``torch.save`` state dict (``model.load_state_dict(torch.load(path))``);
    ``filters``, ``step_size`` and ``seed`` say what the edit was."""

    path: str
    filters: list[int]
    step_size: float
    seed: int
    total_bytes: int


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


# Surprise and expectation: defined in their own module (it builds on the helpers above),
# imported last so that module can import them.
from ._surprise_types import (  # noqa: E402
    Exemplar,
    FilterDeviation,
    ReferenceDataInfo,
    SuppressionResult,
    SuppressionRow,
    Surprise,
)

__all__ += ["ReferenceDataInfo", "Exemplar", "FilterDeviation", "Surprise", "SuppressionRow", "SuppressionResult"]

# Browsing (samples, confusion matrix, failure modes): their own module, imported last likewise.
from ._browse_types import (  # noqa: E402
    SAMPLE_ORDERS,
    ConfusionMatrix,
    FailureMapPoint,
    FailureMode,
    FailureModes,
    FilterCount,
    SamplePage,
)

__all__ += [
    "ConfusionMatrix",
    "FilterCount",
    "FailureMode",
    "FailureMapPoint",
    "FailureModes",
    "SamplePage",
    "SAMPLE_ORDERS",
]

# Dataset-level experiments: their own module, imported last likewise.
from ._experiment_types import EXPERIMENT_NAMES, ExperimentPoint, ExperimentResult  # noqa: E402

__all__ += ["ExperimentPoint", "ExperimentResult", "EXPERIMENT_NAMES"]
