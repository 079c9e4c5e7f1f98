"""GreedyBatcher: grouping, lingering under load, errors, shutdown; SearchBatcher routing.

The computations here are stand-ins that record the batches they see, so the batching
rules are checked without a model or an index (the real searches and saliency passes are
checked against their oracles in tests/e2e and tests/core)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest

from parasal.server.batching import GreedyBatcher, SearchBatcher


@dataclass
class Req:
    value: int
    key: str = ""
    future: Future = field(default_factory=Future)


class Recording(GreedyBatcher[Req]):
    """Answers value * 10; records each group; optionally slow or failing."""

    def __init__(self, *, delay_s=0.0, fail_on=None, **kwargs):
        self.groups, self.delay_s, self.fail_on = [], delay_s, fail_on
        super().__init__("test", **kwargs)

    def key(self, request):
        return request.key

    def compute(self, group):
        self.groups.append([r.value for r in group])
        time.sleep(self.delay_s)
        if self.fail_on is not None and any(r.value == self.fail_on for r in group):
            raise ValueError("bad value in batch")
        return [r.value * 10 for r in group]


def test_each_request_gets_its_own_answer_and_keys_split_batches():
    batcher = Recording(workers=1, max_batch=64, delay_s=0.01)
    try:
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(batcher.submit, Req(i, key="ab"[i % 2])) for i in range(60)]
            assert [f.result(timeout=30) for f in futures] == [i * 10 for i in range(60)]
        for group in batcher.groups:
            assert len({v % 2 for v in group}) == 1  # one key per computation
        assert sorted(v for g in batcher.groups for v in g) == list(range(60))
        assert max(len(g) for g in batcher.groups) > 1  # concurrent requests did share computations
    finally:
        batcher.close()


def test_an_error_reaches_every_request_of_its_group_only():
    batcher = Recording(workers=1, max_batch=8, fail_on=3)
    try:
        with pytest.raises(ValueError, match="bad value"):
            batcher.submit(Req(3))
        assert batcher.submit(Req(4)) == 40  # the worker survives
    finally:
        batcher.close()


def test_under_load_the_worker_lingers_until_the_batch_is_whole():
    """4 callers in a closed loop (each sends its next request when answered): without the
    linger the worker starts on the first re-sent request alone; with it, batches become
    whole (all 4 callers) and stay whole."""
    batcher = Recording(workers=1, max_batch=64, delay_s=0.02, linger_s=1.0)
    try:
        start = threading.Barrier(4)

        def caller(c):
            start.wait()
            return [batcher.submit(Req(100 * c + j)) for j in range(6)]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(caller, range(4)))
        assert results == [[(100 * c + j) * 10 for j in range(6)] for c in range(4)]
        sizes = [len(g) for g in batcher.groups]
        first_full = next(i for i, s in enumerate(sizes) if s == 4)
        # Whole from the second or third batch on; the last may be short (callers that got
        # ahead in the first, partial batches have finished).
        assert first_full <= 2 and all(s == 4 for s in sizes[first_full:-1]), sizes
    finally:
        batcher.close()


def test_idle_requests_do_not_wait_for_the_linger():
    batcher = Recording(workers=1, max_batch=8, linger_s=30.0)
    try:
        began = time.monotonic()
        assert [batcher.submit(Req(i)) for i in range(3)] == [0, 10, 20]  # one at a time: batches of one
        assert time.monotonic() - began < 10.0
        assert batcher.groups == [[0], [1], [2]]
    finally:
        batcher.close()


def test_close_stops_the_workers():
    batcher = Recording(workers=2, max_batch=4)
    batcher.close()
    assert not any(t.is_alive() for t in batcher._threads)


@pytest.mark.parametrize(
    "bad", [dict(workers=0, max_batch=1), dict(workers=1, max_batch=0), dict(workers=1, max_batch=1, linger_s=-1)]
)
def test_bad_settings(bad):
    with pytest.raises(ValueError):
        Recording(**bad)


class FakeBundle:
    """Bundle.search over a small matrix by brute force; records each call's batch."""

    def __init__(self, x):
        self.x = x / np.linalg.norm(x, axis=1, keepdims=True)
        self.calls = []
        self.gate = threading.Event()

    def search(self, queries, k, *, allowed=None, layers=None):
        self.gate.wait(10)
        self.calls.append(
            (
                len(queries),
                k,
                None if allowed is None else int(allowed.sum()),
                None if layers is None else tuple(layers),
            )
        )
        sims = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ self.x.T
        if allowed is not None:
            sims[:, ~allowed] = -np.inf
        return [[(int(i), float(s[i])) for i in np.argsort(-s, kind="stable")[:k]] for s in sims]


def test_search_batcher_routes_rows_back_and_never_mixes_k_filters_or_layers():
    rng = np.random.default_rng(0)
    bundle = FakeBundle(rng.standard_normal((40, 6)))
    mask = rng.random(40) < 0.5
    searcher = SearchBatcher(bundle, "fake", max_batch=64)
    variants = [dict(k=3), dict(k=5), dict(k=3, filters="odd", allowed=mask), dict(k=3, layers=["conv1"])]
    try:
        queries = [(rng.standard_normal(6).astype(np.float32), variants[j % 4]) for j in range(24)]
        with ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(searcher.search, q, **v) for q, v in queries]
            time.sleep(0.2)  # let them all queue behind the gate
            bundle.gate.set()
            answers = [f.result(timeout=30) for f in futures]
    finally:
        searcher.close()
    for (q, v), got in zip(queries, answers):
        alone = bundle.search(q[None], v["k"], allowed=v.get("allowed"))[0]
        assert [i for i, _ in got] == [i for i, _ in alone]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in alone], rtol=1e-12)  # batched matmul rounding
    assert sum(n for n, *_ in bundle.calls[:-24]) == 24  # every query searched once, in batches
    assert max(n for n, *_ in bundle.calls[:-24]) > 1
    for _n, k, allowed, layers in bundle.calls[:-24]:
        assert (k, allowed, layers) in {
            (3, None, None),
            (5, None, None),
            (3, int(mask.sum()), None),
            (3, None, ("conv1",)),
        }
