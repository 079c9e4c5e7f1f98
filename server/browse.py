"""Browsing a served bundle (no protobuf here): listing samples, the confusion matrix, failure modes.

Listing filters and sorts the bundle's table columns with numpy (no per-row Python, no
LMDB), pages through the result with an opaque ``page_token``, and keeps the last few
orderings so that following pages costs a slice. A token names its bundle generation and
a digest of its filters and order: a token from other filters is refused.

Failure modes (parasal.indexer.failure_modes) are computed once per bundle generation, on
the first request that needs them, and cached in this process: :func:`failure_modes` is the
one entry point (evaluations targeting a mode use it too). Concurrent first requests wait
for one computation. Bundles never change while served, so neither does anything cached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import threading
from collections import OrderedDict
from dataclasses import astuple, dataclass

import numpy as np

from parasal.indexer.columns import SampleColumns, sample_columns
from parasal.indexer.failure_modes import FailureModes, ModeSettings, TooFewFailures, bundle_failure_modes

from .errors import FailedPrecondition, InvalidArgument, shown
from .queries import check_beta_filters, check_label, check_range
from .registry import Registry, ServedBundle

__all__ = [
    "SampleFilter",
    "SamplePage",
    "ConfusionMatrix",
    "Browse",
    "failure_modes",
    "cached_failure_modes",
    "ORDERS",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "DEFAULT_MEDOIDS",
    "DEFAULT_TOP_FILTERS",
    "MAX_MODE_COUNT",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DEFAULT_MEDOIDS = 5
DEFAULT_TOP_FILTERS = 10
#: medoids and top_filters of ListFailureModes at most (the proto's cap).
MAX_MODE_COUNT = 100
#: Sort keys of ListSamples, by the proto's SampleOrder names.
ORDERS = ("id", "loss", "true_confidence", "predicted_confidence", "beta")
#: How modes are found (parasal.indexer.failure_modes' defaults; `parasal export` uses the same).
DEFAULT_SETTINGS = ModeSettings()
#: Orderings kept per server (each (n,) int64: 8 MB for a million samples).
KEPT_ORDERINGS = 8


@dataclass(frozen=True)
class SampleFilter:
    """What ListSamples keeps (every condition must hold) and how it sorts them."""

    true_labels: tuple[int, ...] = ()
    predicted_labels: tuple[int, ...] = ()
    correct: bool | None = None  # None: any
    min_true_confidence: float | None = None
    max_true_confidence: float | None = None
    min_loss: float | None = None
    max_loss: float | None = None
    beta_below: float | None = None
    beta_above: float | None = None
    only_with_surprise: bool = False
    only_with_expectation: bool = False
    failure_mode: int | None = None
    order_by: str = "id"
    descending: bool = False

    def canonical(self) -> SampleFilter:
        """The same filter with label sets sorted and deduplicated (what a page token binds to)."""
        return SampleFilter(
            *(tuple(sorted(set(self.true_labels))), tuple(sorted(set(self.predicted_labels)))),
            *astuple(self)[2:],
        )


@dataclass(frozen=True, eq=False)
class SamplePage:
    ids: np.ndarray  # (m,) int64, in the requested order
    failure_modes: np.ndarray | None  # (m,) int32 mode of each (-1: none); None when modes are not computed
    next_page_token: str  # "" on the last page
    total_size: int


@dataclass(frozen=True, eq=False)
class ConfusionMatrix:
    num_classes: int
    class_names: list[str]
    counts: np.ndarray  # (C, C) int64: counts[true, predicted]
    per_class_accuracy: np.ndarray  # (C,) float64, NaN for a class without samples
    accuracy: float  # NaN for an empty bundle
    num_samples: int


# ---------------------------------------------------------------------------------------
# Failure modes, once per bundle generation

_modes: dict[tuple, FailureModes] = {}
_modes_locks: dict[tuple, threading.Lock] = {}
_modes_guard = threading.Lock()


def _modes_key(served: ServedBundle, settings: ModeSettings) -> tuple:
    return (os.fspath(served.bundle.generation_path), settings)


def failure_modes(served: ServedBundle, settings: ModeSettings = DEFAULT_SETTINGS) -> FailureModes:
    """The bundle's failure modes, computed on first use and cached per generation.

    Blocking (seconds for ten thousand samples): call it from a worker thread, never on the
    event loop. FailedPrecondition when the bundle has too few misclassified samples."""
    key = _modes_key(served, settings)
    cached = _modes.get(key)
    if cached is not None:
        return cached
    with _modes_guard:
        lock = _modes_locks.setdefault(key, threading.Lock())
    with lock:  # concurrent first callers wait here for the one computation
        cached = _modes.get(key)
        if cached is None:
            try:
                cached = bundle_failure_modes(served.bundle, settings)
            except TooFewFailures as exc:
                raise FailedPrecondition(f"{exc} (bundle {served.name!r})") from None
            _modes[key] = cached
    return cached


def cached_failure_modes(served: ServedBundle, settings: ModeSettings = DEFAULT_SETTINGS) -> FailureModes | None:
    """The failure modes if already computed, else None (never computes)."""
    return _modes.get(_modes_key(served, settings))


# ---------------------------------------------------------------------------------------
# Listing


class Browse:
    def __init__(self, registry: Registry, settings: ModeSettings = DEFAULT_SETTINGS):
        self.registry = registry
        self.settings = settings
        self._orderings: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._orderings_lock = threading.Lock()
        self._confusions: dict[str, ConfusionMatrix] = {}

    def failure_modes(self, bundle: str) -> FailureModes:
        return failure_modes(self.registry.get(bundle), self.settings)

    def list_samples(self, bundle: str, query: SampleFilter, page_size: int = 0, page_token: str = "") -> SamplePage:
        served = self.registry.get(bundle)
        page_size = check_range("page_size", page_size, 0, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        query = check_filter(query.canonical(), served)
        digest = _digest(served, query)
        offset = _read_token(page_token, digest) if page_token else 0
        rows = self._ordering(served, query, digest)  # (total,) row positions in order
        if offset > len(rows):
            raise InvalidArgument("page_token points past the end of these results")
        page = rows[offset : offset + page_size]
        ids = np.asarray(served.bundle.ids[page], np.int64)
        modes = cached_failure_modes(served, self.settings)
        end = offset + len(page)
        return SamplePage(
            ids=ids,
            failure_modes=None if modes is None else modes.mode_of(ids),
            next_page_token=_token(digest, end) if end < len(rows) else "",
            total_size=len(rows),
        )

    def _ordering(self, served: ServedBundle, query: SampleFilter, digest: str) -> np.ndarray:
        key = (served.name, digest)
        with self._orderings_lock:
            rows = self._orderings.get(key)
            if rows is not None:
                self._orderings.move_to_end(key)
                return rows
        rows = matching_rows(served, query, self.settings)
        with self._orderings_lock:
            self._orderings[key] = rows
            while len(self._orderings) > KEPT_ORDERINGS:
                self._orderings.popitem(last=False)
        return rows

    def confusion_matrix(self, bundle: str) -> ConfusionMatrix:
        served = self.registry.get(bundle)
        cached = self._confusions.get(served.name)
        if cached is None:
            cached = self._confusions[served.name] = confusion_matrix(served)
        return cached

    @staticmethod
    def check_mode_counts(medoids: int, top_filters: int) -> tuple[int, int]:
        """(medoids, top_filters) of a ListFailureModes request: 0 means the default; at most 100."""
        return (
            check_range("medoids", medoids, 0, MAX_MODE_COUNT) or DEFAULT_MEDOIDS,
            check_range("top_filters", top_filters, 0, MAX_MODE_COUNT) or DEFAULT_TOP_FILTERS,
        )


def check_filter(query: SampleFilter, served: ServedBundle) -> SampleFilter:
    """InvalidArgument for a label out of range, a NaN bound, a range with min > max or an unknown order."""
    for label in (*query.true_labels, *query.predicted_labels):
        check_label(label, served.num_classes)
    for name in ("min_true_confidence", "max_true_confidence", "min_loss", "max_loss", "beta_below", "beta_above"):
        value = getattr(query, name)
        if value is not None and math.isnan(value):
            raise InvalidArgument(f"{name} is NaN")
    for low, high in (("min_true_confidence", "max_true_confidence"), ("min_loss", "max_loss")):
        a, b = getattr(query, low), getattr(query, high)
        if a is not None and b is not None and a > b:
            raise InvalidArgument(f"{low} {a} is above {high} {b}")
    check_beta_filters(query.beta_below, query.beta_above, query.only_with_surprise)  # as FindSimilarFailures
    if query.order_by not in ORDERS:
        raise InvalidArgument(f"order_by {shown(query.order_by)} is not one of {', '.join(ORDERS)}")
    return query


def matching_rows(served: ServedBundle, query: SampleFilter, settings: ModeSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """(total,) int64 row positions matching ``query``, in its order (ties: ascending id).

    All on the table's columns: a boolean mask, then one (lex)sort of the survivors."""
    bundle = served.bundle
    columns = sample_columns(bundle)
    mask = bundle.rows_where(
        misclassified=None if query.correct is None else not query.correct,
        labels=list(query.true_labels) or None,
        predicted=list(query.predicted_labels) or None,
        beta_below=query.beta_below,  # these four refuse a bundle without reference data (NoReferenceData)
        beta_above=query.beta_above,
        only_with_surprise=query.only_with_surprise,
        only_with_expectation=query.only_with_expectation,
    )
    for column, low, high in (
        (columns.true_confidence, query.min_true_confidence, query.max_true_confidence),
        (columns.loss, query.min_loss, query.max_loss),
    ):
        if low is not None:
            mask &= column >= low
        if high is not None:
            mask &= column <= high
    if query.failure_mode is not None:
        modes = failure_modes(served, settings)
        if not 0 <= query.failure_mode < len(modes.modes):
            raise InvalidArgument(
                f"unknown failure mode {query.failure_mode}; bundle {served.name!r} has modes 0..{len(modes.modes) - 1}"
            )
        mask &= np.isin(columns.ids, modes.modes[query.failure_mode].member_ids)
    rows = np.flatnonzero(mask)  # ascending: id order
    return _sorted(rows, columns, query.order_by, query.descending, bundle)


def _sorted(rows: np.ndarray, columns: SampleColumns, order_by: str, descending: bool, bundle) -> np.ndarray:
    if order_by == "id":
        return rows[::-1].copy() if descending else rows
    key = np.asarray(bundle.beta if order_by == "beta" else getattr(columns, order_by), np.float64)[rows]
    # A stable sort keeps the rows' ascending ids among equal keys, in both directions (the
    # descending order sorts the negated key); NaN (a beta without reference samples) sorts
    # last either way.
    return rows[np.argsort(-key if descending else key, kind="stable")]


def _digest(served: ServedBundle, query: SampleFilter) -> str:
    what = json.dumps([served.name, os.fspath(served.bundle.generation_path), list(astuple(query))], default=str)
    return hashlib.sha256(what.encode()).hexdigest()[:24]


def _token(digest: str, offset: int) -> str:
    raw = json.dumps({"k": digest, "o": int(offset)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str, digest: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        key, offset = data["k"], data["o"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise InvalidArgument(f"page_token {shown(token)} is not a token this server issued") from None
    if key != digest:
        raise InvalidArgument("page_token was issued for other filters, another order or another bundle generation")
    if not isinstance(offset, int) or offset < 0:
        raise InvalidArgument(f"page_token {shown(token)} is not a token this server issued")
    return offset


# ---------------------------------------------------------------------------------------
# Confusion matrix


def confusion_matrix(served: ServedBundle) -> ConfusionMatrix:
    """From the table: one bincount over true * C + predicted."""
    columns = sample_columns(served.bundle)
    c = int(served.num_classes)
    counts = np.bincount(columns.label * c + columns.predicted, minlength=c * c).reshape(c, c).astype(np.int64)
    totals = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(totals > 0, np.diag(counts) / np.maximum(totals, 1), np.nan)
    n = int(counts.sum())
    accuracy = float(np.trace(counts) / n) if n else math.nan
    return ConfusionMatrix(c, list(served.class_names), counts, per_class, accuracy, n)
