"""What `Client.samples`, `Client.confusion_matrix` and `Client.failure_modes` send, checked
before any call, and the iterator that follows ListSamples' pages lazily."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from parasal.v1 import saliency_pb2 as pb

from ._convert import _shown, as_int
from ._convert_browse import CORRECTNESS_TO_PROTO, ORDER_TO_PROTO
from .errors import InvalidArgument
from .types import SAMPLE_ORDERS, Sample, SamplePage

__all__ = ["SampleIterator", "list_samples_request", "resolve_labels", "mode_counts"]

#: ListSamples' largest page (the proto's cap).
MAX_PAGE_SIZE = 1000
#: ListFailureModes' largest medoids / top_filters.
MAX_MODE_COUNT = 100


def resolve_labels(values, name: str, class_names: Callable[[], list[str]]) -> list[int]:
    """Class numbers for ``values`` (numbers or class names, case-insensitive); ``class_names``
    is asked only when a name needs it. None: no filter."""
    if values is None:
        return []
    if isinstance(values, (str, int, np.integer)):
        values = [values]
    try:
        values = list(values)
    except TypeError:
        raise InvalidArgument(f"{name} must be class numbers or names, got {_shown(values)}") from None
    out, names = [], None
    for value in values:
        if isinstance(value, str):
            if value.strip().lstrip("-").isdigit():
                out.append(int(value))
                continue
            names = class_names() if names is None else names
            matches = [i for i, n in enumerate(names) if n.casefold() == value.strip().casefold()]
            if not matches:
                known = ", ".join(f"{i}:{n}" for i, n in enumerate(names)) if names else "none; use class numbers"
                raise InvalidArgument(f"{name}: unknown class {value!r}; this bundle's classes are {known}")
            out.append(matches[0])
        else:
            out.append(as_int(value, name))
    return out


def _bound(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{name} must be a number, got {_shown(value)}")
    if math.isnan(value):
        raise InvalidArgument(f"{name} is NaN")
    return float(value)


def list_samples_request(
    *,
    bundle: str,
    true_labels: list[int],
    predicted_labels: list[int],
    correct: bool | None,
    min_true_confidence=None,
    max_true_confidence=None,
    min_loss=None,
    max_loss=None,
    beta_below=None,
    beta_above=None,
    only_with_surprise: bool = False,
    only_with_expectation: bool = False,
    failure_mode: int | None = None,
    order_by: str = "id",
    descending: bool = False,
    include_top_filters: bool = False,
    page_size: int | None = None,
) -> pb.ListSamplesRequest:
    """The first page's request (later pages add the token); InvalidArgument for what cannot work."""
    if correct is not None and not isinstance(correct, (bool, np.bool_)):
        raise InvalidArgument(f"correct must be True, False or None, got {_shown(correct)}")
    if order_by not in ORDER_TO_PROTO:
        raise InvalidArgument(f"order_by must be one of {', '.join(SAMPLE_ORDERS)}, got {_shown(order_by)}")
    if page_size is not None and not 1 <= as_int(page_size, "page_size") <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be in 1..{MAX_PAGE_SIZE}, got {page_size}")
    request = pb.ListSamplesRequest(
        bundle=bundle,
        page_size=page_size or 0,
        true_labels=true_labels,
        predicted_labels=predicted_labels,
        correctness=CORRECTNESS_TO_PROTO[None if correct is None else bool(correct)],
        only_with_surprise=bool(only_with_surprise),
        only_with_expectation=bool(only_with_expectation),
        order_by=ORDER_TO_PROTO[order_by],
        descending=bool(descending),
        include_top_filters=bool(include_top_filters),
    )
    bounds = dict(
        min_true_confidence=min_true_confidence,
        max_true_confidence=max_true_confidence,
        min_loss=min_loss,
        max_loss=max_loss,
        beta_below=beta_below,
        beta_above=beta_above,
    )
    for name, value in bounds.items():
        value = _bound(value, name)
        if value is not None:
            setattr(request, name, value)
    if failure_mode is not None:
        request.failure_mode = as_int(failure_mode, "failure_mode")
    return request


def mode_counts(medoids, top_filters) -> tuple[int, int]:
    """(medoids, top_filters) as sent: None is 0 (the server's default: 5 and 10)."""
    out = []
    for name, value in (("medoids", medoids), ("top_filters", top_filters)):
        if value is None:
            out.append(0)
            continue
        value = as_int(value, name)
        if not 1 <= value <= MAX_MODE_COUNT:
            raise InvalidArgument(f"{name} must be in 1..{MAX_MODE_COUNT}, got {value}")
        out.append(value)
    return out[0], out[1]


class SampleIterator:
    """The samples of `Client.samples`, fetched a page at a time as iteration needs them.

    ``total_size`` (samples matching the filters, over all pages) is known once the first page
    has been fetched; reading it fetches that page. ``limit`` stops after that many samples."""

    def __init__(self, fetch: Callable[[str], SamplePage], limit: int | None = None):
        self._fetch = fetch
        self._limit = limit
        self._first: SamplePage | None = None

    def _first_page(self) -> SamplePage:
        if self._first is None:
            self._first = self._fetch("")
        return self._first

    @property
    def total_size(self) -> int:
        return self._first_page().total_size

    def pages(self) -> Iterator[SamplePage]:
        page = self._first_page()
        while True:
            yield page
            if not page.next_page_token:
                return
            page = self._fetch(page.next_page_token)

    def __iter__(self) -> Iterator[Sample]:
        left = self._limit
        for page in self.pages():
            for sample in page.samples:
                if left is not None:
                    if left <= 0:
                        return
                    left -= 1
                yield sample
            if left is not None and left <= 0:
                return

    def to_list(self) -> list[Sample]:
        return list(self)
