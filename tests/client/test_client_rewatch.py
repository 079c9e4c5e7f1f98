"""Waiting for an operation never leaves an rpc without a deadline, and survives a server that
ends streams early or is briefly unreachable (issue #12 section 1), against the fake server."""

from __future__ import annotations

import threading

import grpc
import pytest

import parasal.client as pc
from parasal.client import _operations

UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "connection refused (the server restarting)")
#: gRPC itself makes this many attempts per call on UNAVAILABLE (client/_config.py), each
#: one a call the fake records: one SDK call that fails takes this many planned failures.
ATTEMPTS = 4
# The settings are patched with raising=False so that these tests fail, rather than error,
# against an SDK without them.


def test_every_watch_stream_has_a_deadline(client, fake):
    handle = client.start_finetune_evaluation(sample_id=3)
    assert isinstance(handle.result(), pc.FinetuneResult)  # no timeout: as long as it takes...
    (deadline,) = fake.state.time_remaining("WatchOperation")
    assert deadline is not None and deadline < 61  # ...but never an rpc without one (WATCH_STREAM_S = 60)


def test_a_stream_that_reaches_its_deadline_is_followed_by_another(client, fake, monkeypatch):
    monkeypatch.setattr(_operations, "WATCH_STREAM_S", 0.3, raising=False)
    handle = client.start_finetune_evaluation(sample_id=3)
    fake.state.hang(handle.id)
    outcome = []

    def wait():
        try:
            handle.result()
        except pc.OperationCancelled as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    for _ in range(100):  # until the wait has watched twice (0.3 s per stream), at most 10 s
        if fake.state.count("WatchOperation") >= 2:
            break
        waiter.join(0.1)
    handle.cancel()
    waiter.join(10)
    assert fake.state.count("WatchOperation") >= 2 and len(outcome) == 1  # the real outcome, after re-watching


def test_a_server_briefly_unreachable_is_watched_again(client, fake):
    handle = client.start_finetune_evaluation(sample_id=3)
    fake.state.failures["WatchOperation"] = [UNAVAILABLE] * (2 * ATTEMPTS)  # two watch calls fail
    assert isinstance(handle.result(timeout=20), pc.FinetuneResult)
    assert fake.state.count("WatchOperation") == 2 * ATTEMPTS + 1


@pytest.mark.slow  # ~3 s: tries for RECONNECT_S
def test_a_server_gone_for_good_is_unavailable_after_the_reconnect_time(client, fake, monkeypatch):
    monkeypatch.setattr(_operations, "RECONNECT_S", 3.0, raising=False)
    handle = client.start_finetune_evaluation(sample_id=3)
    fake.state.failures["WatchOperation"] = [UNAVAILABLE] * 100
    fake.state.failures["GetOperation"] = [UNAVAILABLE] * 100
    with pytest.raises(pc.Unavailable):
        handle.result(timeout=30)
    calls = fake.state.count("WatchOperation")
    assert 2 * ATTEMPTS <= calls < 100  # watched again at least once, then gave up
