"""The SDK side of browsing (client/_browse.py): pages are fetched lazily and only as needed,
`limit` stops early, labels resolve by name, requests carry exactly what was asked."""

from __future__ import annotations

import pytest

from parasal.client import InvalidArgument, SamplePage
from parasal.client._browse import SampleIterator, list_samples_request, mode_counts, resolve_labels
from parasal.v1 import saliency_pb2 as pb


def sample(i: int):
    from parasal.client import Sample

    return Sample(i, f"u{i}", 0, 0, True, 1.0, 1.0, 0.0, [])


def pages(sizes: list[int]):
    """A fake ListSamples: pages of the given sizes, tokens "1", "2", ...; records each token asked for."""
    asked = []
    starts = [sum(sizes[:k]) for k in range(len(sizes))]

    def fetch(token: str) -> SamplePage:
        asked.append(token)
        k = int(token or 0)
        last = k == len(sizes) - 1
        ids = range(starts[k], starts[k] + sizes[k])
        return SamplePage([sample(i) for i in ids], "" if last else str(k + 1), sum(sizes))

    return fetch, asked


def test_pages_are_fetched_as_iteration_needs_them():
    fetch, asked = pages([3, 3, 2])
    found = SampleIterator(fetch)
    assert asked == []  # nothing until asked
    assert found.total_size == 8 and asked == [""]
    it = iter(found)
    assert [next(it).id for _ in range(4)] == [0, 1, 2, 3] and asked == ["", "1"]
    assert [s.id for s in it] == [4, 5, 6, 7] and asked == ["", "1", "2"]


def test_limit_stops_without_fetching_further_pages():
    fetch, asked = pages([3, 3, 2])
    assert [s.id for s in SampleIterator(fetch, limit=3)] == [0, 1, 2] and asked == [""]
    fetch, asked = pages([3, 3, 2])
    assert [s.id for s in SampleIterator(fetch, limit=4)] == [0, 1, 2, 3] and asked == ["", "1"]
    fetch, _ = pages([2])
    assert len(SampleIterator(fetch, limit=10).to_list()) == 2


def test_labels_resolve_by_number_or_name_and_ask_for_names_only_when_needed():
    calls = []

    def names():
        calls.append(1)
        return ["T-shirt/top", "Trouser", "Shirt"]

    assert resolve_labels([2, "1"], "true_labels", names) == [2, 1] and not calls
    assert resolve_labels(["shirt", "Trouser ", 0], "true_labels", names) == [2, 1, 0] and len(calls) == 1
    assert resolve_labels("Shirt", "x", names) == [2] and resolve_labels(None, "x", names) == []
    with pytest.raises(InvalidArgument, match="unknown class 'Boat'.*0:T-shirt/top"):
        resolve_labels(["Boat"], "true_labels", names)


def test_the_request_sets_only_what_was_given():
    common = dict(bundle="b", true_labels=[1], predicted_labels=[], correct=None)
    request = list_samples_request(**common)
    assert not request.HasField("min_loss") and not request.HasField("failure_mode")
    assert request.correctness == pb.CORRECTNESS_UNSPECIFIED and request.order_by == pb.SAMPLE_ORDER_ID
    request = list_samples_request(
        **{**common, "correct": False},
        min_loss=0,
        beta_above=-1,
        failure_mode=0,
        order_by="beta",
        descending=True,
        page_size=7,
    )
    assert request.HasField("min_loss") and request.min_loss == 0 and request.beta_above == -1
    assert request.HasField("failure_mode") and request.failure_mode == 0
    assert request.correctness == pb.CORRECTNESS_MISCLASSIFIED and request.order_by == pb.SAMPLE_ORDER_BETA
    assert request.descending and request.page_size == 7
    for bad in (dict(order_by="size"), dict(page_size=0), dict(min_loss="1"), dict(max_loss=float("nan"))):
        with pytest.raises(InvalidArgument):
            list_samples_request(**common, **bad)
    assert mode_counts(None, None) == (0, 0) and mode_counts(100, 1) == (100, 1)
    for bad in ((0, None), (None, 101)):
        with pytest.raises(InvalidArgument):
            mode_counts(*bad)
