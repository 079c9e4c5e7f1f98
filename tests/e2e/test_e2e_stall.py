"""Issue #12 section 1 against real server processes: one idle connection, open watches or
waiting SDK callers must not take the service down, calls beyond capacity are refused at
once, and a wait survives a server restart.

Before the fix, 16 HTTP/2 streams that send headers and no body (on one connection, with a
token required or not), 16 WatchOperation streams or 16 callers in `result()` blocked every
rpc, health included. Here health and by-id queries must keep answering during each stall
(their p99 is printed, not asserted) and the stalled streams must be ended by the server
after its request timeout (2 s here). Each scenario is bounded and stops by itself.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parasal.client import Client, OperationAborted, OperationCancelled
from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

STALLS = 16  # as many as the old server had threads
REQUEST_TIMEOUT_S = 2.0
ENDED_WITHIN_S = 20.0  # the longest this test waits for the server to end stalled streams
PROBE_S = 1.5
TOKEN = "stall-token-e2e"
FIND = "/parasal.v1.SaliencyService/FindSimilarFailures"


class H2Stall:
    """One TCP connection with ``n`` gRPC streams that never finish their request: HEADERS only,
    or (``partial``) a message prefix announcing 100 bytes followed by 3. It answers PINGs
    like a live peer, so keepalive alone cannot end it."""

    def __init__(self, address: str, n: int, *, partial: bool = False):
        self._events = h2.events
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.opened = time.monotonic()
        self.ended: dict[int, tuple[float, str]] = {}  # stream id -> (seconds after opening, how)
        self.streams = []
        headers = [(":method", "POST"), (":scheme", "http"), (":path", FIND), (":authority", address)]
        headers += [("content-type", "application/grpc"), ("te", "trailers")]
        for _ in range(n):
            stream_id = self.conn.get_next_available_stream_id()
            self.conn.send_headers(stream_id, headers, end_stream=False)
            if partial:
                self.conn.send_data(stream_id, b"\x00\x00\x00\x00\x64" + b"\x10\x0a\x18", end_stream=False)
            self.streams.append(stream_id)
        self.sock.sendall(self.conn.data_to_send())
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            now = time.monotonic() - self.opened
            if not data:
                for stream_id in self.streams:
                    self.ended.setdefault(stream_id, (now, "connection closed"))
                return
            for event in self.conn.receive_data(data):
                self._note(event, now)
            out = self.conn.data_to_send()  # PING acks, window updates: a polite peer
            if out:
                try:
                    self.sock.sendall(out)
                except OSError:
                    pass

    def _note(self, event, now: float) -> None:
        events = self._events
        headers = dict(getattr(event, "headers", None) or ())
        if isinstance(event, (events.TrailersReceived, events.ResponseReceived)) and "grpc-status" in headers:
            self.ended.setdefault(event.stream_id, (now, f"grpc-status {headers['grpc-status']}"))
        elif isinstance(event, events.StreamReset):
            self.ended.setdefault(event.stream_id, (now, "RST_STREAM"))
        elif isinstance(event, events.ConnectionTerminated):
            for stream_id in self.streams:
                self.ended.setdefault(stream_id, (now, "GOAWAY"))

    def wait_all_ended(self, limit_s: float) -> list[tuple[float, str]]:
        deadline = self.opened + limit_s
        while time.monotonic() < deadline and len(self.ended) < len(self.streams):
            time.sleep(0.05)
        return sorted(self.ended.values())

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2)
        self.sock.close()


def probe(address: str, ids, seconds: float, metadata=()) -> dict[str, list[tuple[str, float]]]:
    """Health Check and FindSimilarFailures by id (cycling through ``ids``), one after the
    other, for ``seconds``: (status code name, ms) of each."""
    out = {"health": [], "by_id": []}
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        saliency = pb_grpc.SaliencyServiceStub(channel)
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            by_id = pb.FindSimilarFailuresRequest(sample_id=ids[i], k=10)
            calls = {
                "health": (health.Check, health_pb2.HealthCheckRequest(), ()),
                "by_id": (saliency.FindSimilarFailures, by_id, metadata),
            }
            for name, (call, request, md) in calls.items():
                start = time.perf_counter()
                try:
                    call(request, timeout=2, metadata=md)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                out[name].append((code, (time.perf_counter() - start) * 1e3))
            i = (i + 1) % len(ids)
            time.sleep(0.01)
    return out


def assert_answered(samples: dict, label: str) -> None:
    for name, results in samples.items():
        ms = sorted(m for _, m in results)
        p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else float("nan")
        print(f"{label}: {name} {len(ms)} calls, p50 {ms[len(ms) // 2]:.1f} ms, p99 {p99:.1f} ms")
        assert results and {code for code, _ in results} == {"OK"}, f"{name} failed during the stall: {results[:5]}"


def stall_and_probe(server, ids, *, partial=False, metadata=(), ends=("grpc-status 4", "RST_STREAM")) -> None:
    """Stall ``STALLS`` streams on one connection, probe meanwhile, and check that each stalled
    stream was ended the way ``ends`` says (4: DEADLINE_EXCEEDED; 16: UNAUTHENTICATED)."""
    stall = H2Stall(server.address, STALLS, partial=partial)
    try:
        time.sleep(0.3)
        label = f"{'partial' if partial else 'headers-only'} stall"
        assert_answered(probe(server.address, ids, PROBE_S, metadata), label)
        ended = stall.wait_all_ended(ENDED_WITHIN_S)
    finally:
        stall.close()
    print(f"stalled streams ended after {ended[0][0]:.2f}-{ended[-1][0]:.2f} s: {sorted({h for _, h in ended})}")
    assert len(ended) == STALLS, f"only {len(ended)} of {STALLS} stalled streams were ended"
    assert {how for _, how in ended} <= set(ends)


def sample_ids(bundle) -> list[int]:
    return [int(i) for i in bundle.ids[:100]]


def reference(bundle) -> int:
    return int(bundle.ids[np.flatnonzero(~bundle.correct)[0]])


def start_long(client: Client, bundle):
    return client.start_finetune_evaluation(sample_id=reference(bundle), counts=list(range(1, 65)), num_neighbors=1000)


@pytest.fixture(scope="module")
def server(start_server):
    return start_server("--request-timeout", str(REQUEST_TIMEOUT_S), "--max-concurrent-rpcs", "4")


def test_an_idle_connection_does_not_stop_the_service(server, bundle):
    stall_and_probe(server, sample_ids(bundle))
    stall_and_probe(server, sample_ids(bundle), partial=True)


def test_a_token_does_not_change_it(start_server, bundle, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    secured = start_server("--request-timeout", str(REQUEST_TIMEOUT_S), "--token-file", str(token))
    # The stalled streams send no token: they are refused at once, before their body is read.
    token_metadata = (("authorization", f"Bearer {TOKEN}"),)
    stall_and_probe(secured, sample_ids(bundle), metadata=token_metadata, ends=("grpc-status 16",))


def test_watches_and_waiting_callers_take_no_worker(server, bundle):
    with Client(server.address, timeout=30) as client:
        running, pending = start_long(client, bundle), start_long(client, bundle)
        channel = grpc.insecure_channel(server.address)
        stub = pb_grpc.OperationsServiceStub(channel)
        watches = [stub.WatchOperation(pb.WatchOperationRequest(id=pending.id), timeout=60) for _ in range(STALLS)]
        waiters = [Client(server.address) for _ in range(STALLS)]
        outcomes = []

        def wait(c: Client) -> None:
            try:
                c.operation_handle(pending.id).result()
            except Exception as exc:  # noqa: BLE001 - recorded and checked below
                outcomes.append(type(exc).__name__)

        threads = [threading.Thread(target=wait, args=(c,), daemon=True) for c in waiters]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            assert_answered(probe(server.address, sample_ids(bundle), PROBE_S), "16 watches + 16 SDK waiters")
        finally:
            client.cancel(pending.id)
            client.cancel(running.id)
            for t in threads:
                t.join(30)
            with pytest.raises(OperationCancelled):  # done before the next test uses the pool
                client.operation_handle(running.id).result(timeout=60)
            for w in watches:
                w.cancel()
            for c in waiters:
                c.close()
            channel.close()
        assert outcomes == ["OperationCancelled"] * STALLS


def test_calls_beyond_capacity_are_refused_at_once(server, bundle):
    results, barrier = [], threading.Barrier(STALLS)
    with grpc.insecure_channel(server.address) as watch_channel:
        watch = pb_grpc.OperationsServiceStub(watch_channel)
        with Client(server.address, timeout=30) as client:
            image = client.sample_image(reference(bundle))
            op = start_long(client, bundle)  # watched by 8 streams: they must not use up the capacity
            streams = [watch.WatchOperation(pb.WatchOperationRequest(id=op.id), timeout=30) for _ in range(8)]

            def one():
                barrier.wait(10)
                try:
                    client.find_similar_failures(image=image, label=0, k=50, include_top_filters=True)
                    results.append("OK")
                except Exception as exc:  # noqa: BLE001 - recorded and checked below
                    results.append(type(exc).__name__)

            threads = [threading.Thread(target=one, daemon=True) for _ in range(STALLS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            client.cancel(op.id)
            with pytest.raises(OperationCancelled):
                client.operation_handle(op.id).result(timeout=60)
            for s in streams:
                s.cancel()
    print(f"{STALLS} uploads at once, limit 4: {sorted(results)}")
    assert set(results) <= {"OK", "ResourceExhausted"} and len(results) == STALLS
    assert "OK" in results and "ResourceExhausted" in results


def test_a_wait_survives_a_server_restart(start_server, bundle, tmp_path):
    state = tmp_path / "state"
    first = start_server(state_dir=state)
    port = first.address.rsplit(":", 1)[1]
    outcome = []
    with Client(first.address, timeout=10) as client:
        handle = start_long(client, bundle)

        def wait():
            try:
                handle.result(timeout=90)
                outcome.append("finished")
            except Exception as exc:  # noqa: BLE001 - recorded and checked below
                outcome.append(exc)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        time.sleep(0.5)
        assert first.signal(signal.SIGKILL) == -signal.SIGKILL
        second = start_server("--port", port, state_dir=state)  # same port: the client's address
        waiter.join(90)
    assert second.address == first.address
    assert len(outcome) == 1 and isinstance(outcome[0], OperationAborted), outcome  # its real outcome
