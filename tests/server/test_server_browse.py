"""Browsing in the server (server/browse.py): listing against a plain Python filter + sort over
the bundle's metadata, paging tokens, the confusion matrix against counting, the failure-mode
cache (once per generation, one computation for concurrent first callers). One tiny real
bundle (an untrained 3-class net on an image folder: many misclassified samples), in process."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import Counter

import indexer_helpers as H
import numpy as np
import pytest

from parasal.indexer import NoReferenceData
from parasal.indexer.pipeline import IndexJob, run_index
from parasal.server import browse as B
from parasal.server.browse import Browse, SampleFilter
from parasal.server.config import ServerConfig
from parasal.server.errors import FailedPrecondition, InvalidArgument
from parasal.server.registry import Registry

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}


def serve(tmp, name: str, data, model: str = H.FACTORY) -> Registry:
    out = tmp / name
    run_index(IndexJob(data=str(data), out=out, model=model, preprocessing=GRAY, progress=False))
    config = ServerConfig(
        bundles=[(name, out)],
        state_dir=tmp / f"state-{name}",
        device="cpu",
        model_replicas=1,
        neighbor_lists=0,
        saliency_process=False,
    )
    return Registry.load(config.validate())


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browse")
    registry = serve(tmp, "tiny", H.make_image_folder(tmp / "imgs", per_class=24))
    yield registry
    registry.close()


@pytest.fixture
def browse(registry):
    return Browse(registry)


def all_metas(served):
    return served.bundle.metas(served.bundle.ids.tolist())


def oracle(metas, q: SampleFilter, modes=None) -> list[int]:
    """The obviously correct listing: a Python filter, then a stable sort (ties by id)."""
    kept = []
    for m in metas:
        if q.true_labels and m.label not in q.true_labels:
            continue
        if q.predicted_labels and m.predicted not in q.predicted_labels:
            continue
        if q.correct is not None and m.correct != q.correct:
            continue
        if q.min_true_confidence is not None and not m.true_confidence >= q.min_true_confidence:
            continue
        if q.max_true_confidence is not None and not m.true_confidence <= q.max_true_confidence:
            continue
        if q.min_loss is not None and not m.loss >= q.min_loss:
            continue
        if q.max_loss is not None and not m.loss <= q.max_loss:
            continue
        if q.failure_mode is not None and m.id not in set(modes.modes[q.failure_mode].member_ids.tolist()):
            continue
        kept.append(m)
    if q.order_by == "id":
        kept.sort(key=lambda m: m.id, reverse=q.descending)
    else:
        sign = -1 if q.descending else 1
        kept.sort(key=lambda m: (sign * getattr(m, q.order_by), m.id))
    return [m.id for m in kept]


def listed(browse, q: SampleFilter, page_size: int) -> tuple[list[int], int, int]:
    """(every id over all pages, total_size, pages)."""
    ids, token, pages = [], "", 0
    while True:
        page = browse.list_samples("tiny", q, page_size, token)
        ids += page.ids.tolist()
        pages += 1
        token = page.next_page_token
        if not token:
            return ids, page.total_size, pages


def random_filters(metas, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    losses = sorted(m.loss for m in metas)
    confs = sorted(m.true_confidence for m in metas)
    for _ in range(n):
        q = {}
        if rng.random() < 0.4:
            q["true_labels"] = tuple(int(v) for v in rng.choice(3, size=rng.integers(1, 3), replace=False))
        if rng.random() < 0.3:
            q["predicted_labels"] = tuple(int(v) for v in rng.choice(3, size=rng.integers(1, 3), replace=False))
        if rng.random() < 0.4:
            q["correct"] = bool(rng.random() < 0.5)
        if rng.random() < 0.4:
            q["min_loss"] = float(losses[rng.integers(len(losses))])
        if rng.random() < 0.3:
            q["max_loss"] = float(max(losses[rng.integers(len(losses))], q.get("min_loss", -1.0)))
        if rng.random() < 0.3:
            q["min_true_confidence"] = float(confs[rng.integers(len(confs) // 2)])
        if rng.random() < 0.3:
            q["max_true_confidence"] = float(confs[len(confs) // 2 + rng.integers(len(confs) // 2)])
        q["order_by"] = str(rng.choice(B.ORDERS[:4]))
        q["descending"] = bool(rng.random() < 0.5)
        yield SampleFilter(**q)


def test_listing_equals_a_plain_filter_and_sort_over_all_pages(registry, browse):
    metas = all_metas(registry.get("tiny"))
    assert len(metas) == 72
    for q in random_filters(metas, 40):
        expected = oracle(metas, q)
        ids, total, pages = listed(browse, q, page_size=7)
        assert ids == expected, q
        assert total == len(expected)
        assert pages == max(1, math.ceil(len(expected) / 7))


def test_the_defaults_list_every_sample_by_id_a_hundred_per_page(registry, browse):
    page = browse.list_samples("tiny", SampleFilter())
    assert page.ids.tolist() == registry.get("tiny").bundle.ids.tolist() and page.next_page_token == ""
    assert page.total_size == 72


def test_ties_in_the_sort_key_go_to_the_lower_id_in_both_directions(registry, browse):
    metas = all_metas(registry.get("tiny"))
    for descending in (False, True):
        q = SampleFilter(order_by="predicted_confidence", descending=descending)
        assert listed(browse, q, 1000)[0] == oracle(metas, q)


def test_a_page_token_binds_to_its_filters(registry, browse):
    q = SampleFilter(correct=False, order_by="loss")
    first = browse.list_samples("tiny", q, 5)
    assert first.next_page_token
    second = browse.list_samples("tiny", q, 5, first.next_page_token)
    assert set(first.ids.tolist()).isdisjoint(second.ids.tolist())
    # the same filters written differently (label order, duplicates) are the same filters
    a = SampleFilter(true_labels=(2, 0, 2))
    t = browse.list_samples("tiny", a, 3).next_page_token
    assert browse.list_samples("tiny", SampleFilter(true_labels=(0, 2)), 3, t).ids.size == 3
    for other in (
        dataclasses.replace(q, order_by="id"),
        dataclasses.replace(q, descending=True),
        dataclasses.replace(q, correct=True),
        dataclasses.replace(q, min_loss=0.0),
    ):
        with pytest.raises(InvalidArgument, match="other filters"):
            browse.list_samples("tiny", other, 5, first.next_page_token)
    for garbage in ("not-a-token", "e30", "!!!!", B._token(B._digest(registry.get("tiny"), q.canonical()), -1)):
        with pytest.raises(InvalidArgument, match="page_token"):
            browse.list_samples("tiny", q, 5, garbage)
    with pytest.raises(InvalidArgument, match="past the end"):
        browse.list_samples("tiny", q, 5, B._token(B._digest(registry.get("tiny"), q.canonical()), 10_000))


@pytest.mark.parametrize(
    "q, size, message",
    [
        (SampleFilter(true_labels=(3,)), 0, "label 3 outside 0..2"),
        (SampleFilter(predicted_labels=(-1,)), 0, "label -1 outside"),
        (SampleFilter(min_loss=2.0, max_loss=1.0), 0, "min_loss 2.0 is above max_loss 1.0"),
        (SampleFilter(min_true_confidence=0.9, max_true_confidence=0.1), 0, "min_true_confidence"),
        (SampleFilter(min_loss=float("nan")), 0, "min_loss is NaN"),
        (SampleFilter(order_by="colour"), 0, "order_by"),
        (SampleFilter(), 1001, "page_size 1001 outside 0..1000"),
        (SampleFilter(), -1, "page_size -1"),
        (SampleFilter(failure_mode=99), 0, "unknown failure mode 99"),
    ],
)
def test_bad_listing_requests_are_invalid_arguments(browse, q, size, message):
    with pytest.raises(InvalidArgument, match=message):
        browse.list_samples("tiny", q, size)


def test_beta_filters_on_a_bundle_without_reference_data_say_so(browse):
    for q in (
        SampleFilter(beta_below=0.0),
        SampleFilter(beta_above=0.0),
        SampleFilter(only_with_surprise=True),
        SampleFilter(only_with_expectation=True),
        SampleFilter(order_by="beta"),
    ):
        with pytest.raises(NoReferenceData, match="--reference-data"):
            browse.list_samples("tiny", q)


def test_the_confusion_matrix_counts_the_table(registry, browse):
    metas = all_metas(registry.get("tiny"))
    m = browse.confusion_matrix("tiny")
    pairs = Counter((s.label, s.predicted) for s in metas)
    assert m.num_classes == 3 and m.num_samples == 72
    assert m.counts.tolist() == [[pairs[(t, p)] for p in range(3)] for t in range(3)]
    for c in range(3):
        of_class = [s for s in metas if s.label == c]
        assert m.per_class_accuracy[c] == pytest.approx(sum(s.correct for s in of_class) / len(of_class))
    assert m.accuracy == pytest.approx(sum(s.correct for s in metas) / 72)
    assert m.class_names == ["a", "b", "c"]
    assert browse.confusion_matrix("tiny") is m  # computed once


def test_failure_modes_are_computed_once_even_for_concurrent_first_callers(registry, monkeypatch):
    served = registry.get("tiny")
    calls = []
    real = B.bundle_failure_modes
    started = threading.Event()

    def counted(bundle, settings):
        calls.append(1)
        started.set()
        return real(bundle, settings)

    monkeypatch.setattr(B, "bundle_failure_modes", counted)
    settings = dataclasses.replace(B.DEFAULT_SETTINGS, seed=12345)  # a cache key no other test uses
    results = []
    threads = [threading.Thread(target=lambda: results.append(B.failure_modes(served, settings))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(calls) == 1 and len(results) == 4 and all(r is results[0] for r in results)
    assert B.cached_failure_modes(served, settings) is results[0]
    modes = results[0]
    assert sum(m.size for m in modes.modes) == modes.num_misclassified == int((~served.bundle.correct).sum())


def test_listing_by_failure_mode_gives_its_members_and_samples_carry_their_mode(registry, browse):
    served = registry.get("tiny")
    modes = browse.failure_modes("tiny")
    metas = all_metas(served)
    for mode in modes.modes:
        q = SampleFilter(failure_mode=mode.id, order_by="loss", descending=True)
        ids, total, _ = listed(browse, q, 4)
        assert ids == oracle(metas, q, modes) and total == mode.size
        page = browse.list_samples("tiny", q, 1000)
        assert page.failure_modes.tolist() == [mode.id] * mode.size
    # once computed, every listed misclassified sample carries its mode; correct ones -1
    page = browse.list_samples("tiny", SampleFilter(), 1000)
    correct = served.bundle.correct
    assert (page.failure_modes[correct] == -1).all() and (page.failure_modes[~correct] >= 0).all()


def test_too_few_failures_is_a_failed_precondition(tmp_path):
    # Three samples: fewer than four can be misclassified, whatever the model predicts.
    registry = serve(tmp_path, "few", H.make_image_folder(tmp_path / "imgs", per_class=1))
    try:
        with pytest.raises(FailedPrecondition, match="at least 4"):
            Browse(registry).failure_modes("few")
    finally:
        registry.close()


def test_mode_counts_default_and_are_capped(browse):
    assert browse.check_mode_counts(0, 0) == (5, 10)
    assert browse.check_mode_counts(100, 1) == (100, 1)
    for bad in ((101, 0), (0, 101), (-1, 0)):
        with pytest.raises(InvalidArgument):
            browse.check_mode_counts(*bad)


def test_the_request_filters_round_trip_through_the_proto():
    from parasal.server import conversions as cv
    from parasal.v1 import saliency_pb2 as pb

    full = SampleFilter(
        true_labels=(1, 2),
        predicted_labels=(0,),
        correct=False,
        min_true_confidence=0.25,
        max_true_confidence=0.75,
        min_loss=0.5,
        max_loss=2.5,
        beta_below=0.125,
        beta_above=-0.5,
        only_with_surprise=True,
        only_with_expectation=True,
        failure_mode=0,  # an optional set to 0 is still set
        order_by="beta",
        descending=True,
    )
    for q in (full, SampleFilter(), SampleFilter(correct=True, order_by="predicted_confidence")):
        assert cv.sample_filter_from_proto(cv.sample_filter_to_proto(q, pb.ListSamplesRequest())) == q
    assert set(cv.ORDER_FROM_PROTO) == set(pb.SampleOrder.values())
    assert set(cv.CORRECTNESS_FROM_PROTO) == set(pb.Correctness.values())
    with pytest.raises(InvalidArgument, match="order_by 99"):
        cv.sample_filter_from_proto(pb.ListSamplesRequest(order_by=99))
    with pytest.raises(InvalidArgument, match="correctness 7"):
        cv.sample_filter_from_proto(pb.ListSamplesRequest(correctness=7))


def test_failure_modes_go_out_with_the_requested_counts(registry, browse):
    from parasal.server import conversions as cv

    served = registry.get("tiny")
    modes = browse.failure_modes("tiny")
    plain = cv.failure_modes_to_proto(modes, served.layout.locate, medoids=2, top_filters=3)
    assert plain.method == modes.method and plain.num_misclassified == modes.num_misclassified
    assert plain.silhouette == pytest.approx(modes.silhouette) and not plain.map and not plain.map_method
    for message, mode in zip(plain.modes, modes.modes, strict=True):
        assert list(message.medoid_ids) == mode.medoid_ids[:2].tolist() and not message.member_ids
        assert [(f.index, f.layer, f.filter) for f in message.top_filters] == [
            (i, *_located(served, i)) for i, _ in mode.top_filters[:3]
        ]
        assert [(c.label, c.predicted, c.count) for c in message.confusions] == mode.confusions
    full = cv.failure_modes_to_proto(
        modes, served.layout.locate, medoids=100, top_filters=100, include_map=True, include_members=True
    )
    assert sorted(i for m in full.modes for i in m.member_ids) == modes.ids.tolist()
    assert [p.id for p in full.map] == modes.ids.tolist() and full.map_method.startswith("PCA")
    assert {(p.id, p.failure_mode) for p in full.map} == set(zip(modes.ids.tolist(), modes.assignment.tolist()))


def _located(served, index):
    span, j = served.layout.locate(index)
    return span.name, j


@pytest.mark.parametrize("descending", [False, True])
def test_the_sort_puts_ties_by_id_and_nan_last_in_both_directions(descending):
    from types import SimpleNamespace

    rng = np.random.default_rng(1)
    key = rng.integers(0, 4, 200).astype(np.float64)  # many ties
    key[rng.random(200) < 0.1] = np.nan
    rows = np.sort(rng.choice(1000, 200, replace=False))  # ascending rows = ascending ids
    table = np.full(1000, np.nan)
    table[rows] = key
    columns = SimpleNamespace(loss=table)
    got = B._sorted(rows, columns, "loss", descending, bundle=None).tolist()
    finite = [r for r in rows.tolist() if not np.isnan(table[r])]
    nan = [r for r in rows.tolist() if np.isnan(table[r])]
    expected = sorted(finite, key=lambda r: ((-1 if descending else 1) * table[r], r)) + nan
    assert got == expected


def test_an_empty_beta_interval_is_refused_as_in_find_similar():
    from parasal.server.browse import SampleFilter, check_filter
    from parasal.server.errors import InvalidArgument

    class Served:
        num_classes = 10

    with pytest.raises(InvalidArgument, match="beta"):
        check_filter(SampleFilter(beta_below=0.0, beta_above=0.5), Served())
