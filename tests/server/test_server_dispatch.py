"""The asyncio dispatcher (server/dispatch.py) over fake handlers, in-process on 127.0.0.1:0:
admission and refusal, the request timeout, the error table, refusing before reading, and
response streams that hold no thread; plus Operations.watch_async and the per-caller limit."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parasal.server.app import AioServer
from parasal.server.auth import DENIED_MESSAGE, BearerTokenInterceptor
from parasal.server.dispatch import Dispatcher, DispatchLimits, request_limits
from parasal.server.errors import ErrorInterceptor, NotFound, ResourceExhausted
from parasal.server.inline import must_not_block
from parasal.server.interceptors import LoggingInterceptor
from parasal.server.operations import Operations, acting_for
from parasal.server.servicers import caller
from parasal.server.store import OperationStore
from parasal.v1 import saliency_pb2 as pb

TOKEN = "dispatch-token"
WAIT_S = 10  # every wait in these tests is bounded by this


class Fakes:
    """Behaviours of the service ``test.Svc``; requests are GetSampleRequest messages."""

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.parsed = 0
        self.ran = 0
        self.threads: list[str] = []  # where each Quick attempt ran

    def quick(self, request, context):
        """Answers from memory unless asked for id 99, which needs a (pretend) batcher."""
        self.threads.append(threading.current_thread().name)
        if request.id == 404:
            raise NotFound(f"no sample with id {request.id}")
        if request.id == 99:
            must_not_block("a batched computation")
        return request

    def parse(self, raw: bytes) -> pb.GetSampleRequest:
        self.parsed += 1
        return pb.GetSampleRequest.FromString(raw)

    def echo(self, request, context):
        self.ran += 1
        return request

    def block(self, request, context):
        self.entered.release()
        self.release.wait(WAIT_S)
        return request

    def missing(self, request, context):
        raise NotFound(f"no sample with id {request.id}")

    async def watch(self, request, context):
        yield pb.GetSampleRequest(id=request.id)
        if request.id == 404:
            raise NotFound("unknown operation")
        await asyncio.sleep(WAIT_S)  # until the server ends the stream (stream_max_s)
        yield pb.GetSampleRequest(id=-1)  # pragma: no cover - never reached


def _handlers(fakes: Fakes) -> dict:
    ser = pb.GetSampleRequest.SerializeToString
    unary = {
        "Echo": fakes.echo,
        "Block": fakes.block,
        "Missing": fakes.missing,
        "Small": fakes.echo,
        "Quick": fakes.quick,
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(fn, request_deserializer=fakes.parse, response_serializer=ser)
        for name, fn in unary.items()
    }
    handlers["Watch"] = grpc.unary_stream_rpc_method_handler(
        fakes.watch, request_deserializer=fakes.parse, response_serializer=ser
    )
    return handlers


@pytest.fixture
def serve():
    """serve(limits, token=None) -> (channel, fakes, dispatcher); everything stopped after."""
    started = []

    def start(limits: DispatchLimits, token: str | None = None):
        fakes = Fakes()
        workers = futures.ThreadPoolExecutor(max_workers=4)
        interceptors = [LoggingInterceptor()]
        auth = BearerTokenInterceptor(token) if token else None
        if auth is not None:
            interceptors.append(auth)
        interceptors.append(ErrorInterceptor())
        dispatcher = Dispatcher(
            interceptors,
            workers,
            limits,
            receive_limits={"/test.Svc/Small": 100},
            upload_bytes=4 << 20,
            auth=auth,
            inline_methods={"/test.Svc/Quick"},
        )
        health = []

        def make():
            server = grpc.aio.server()
            dispatcher.register(server, "test.Svc", _handlers(fakes))
            health.append(health_async.HealthServicer())
            health_pb2_grpc.add_HealthServicer_to_server(health[0], server)
            return server

        aio = AioServer(make)
        port = aio.run(lambda: aio.server.add_insecure_port("127.0.0.1:0"))
        aio.call(aio.server.start())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        started.append((aio, channel, fakes, workers))
        return channel, fakes, dispatcher

    yield start
    for aio, channel, fakes, workers in started:
        fakes.release.set()
        channel.close()
        aio.stop(None).wait(WAIT_S)
        aio.close()
        workers.shutdown(wait=True)


def _call(channel, name: str, request=None, metadata=None, timeout=WAIT_S):
    method = channel.unary_unary(
        f"/test.Svc/{name}", request_serializer=lambda m: m, response_deserializer=pb.GetSampleRequest.FromString
    )
    raw = request if isinstance(request, bytes) else (request or pb.GetSampleRequest(id=7)).SerializeToString()
    return method(raw, timeout=timeout, metadata=metadata)


def _code(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def test_calls_beyond_capacity_are_refused_at_once_and_health_still_answers(serve):
    channel, fakes, dispatcher = serve(DispatchLimits(max_calls=2))
    block = channel.unary_unary("/test.Svc/Block", request_serializer=lambda m: m)
    running = [block.future(pb.GetSampleRequest(id=i).SerializeToString(), timeout=WAIT_S) for i in range(2)]
    for _ in running:
        assert fakes.entered.acquire(timeout=WAIT_S)
    code, details = _code(lambda: _call(channel, "Echo"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in details
    assert fakes.ran == 0  # refused, not queued
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=WAIT_S)
    assert health.status == health_pb2.HealthCheckResponse.SERVING  # outside every limit
    fakes.release.set()
    for future in running:
        future.result(timeout=WAIT_S)
    assert _call(channel, "Echo").id == 7  # capacity is back once the workers are free


def test_a_request_that_never_arrives_is_ended_and_holds_nothing(serve):
    channel, fakes, dispatcher = serve(DispatchLimits(request_timeout_s=0.3))
    never_sent = threading.Event()

    def requests():  # headers go out; the message never does (until the test ends)
        never_sent.wait(WAIT_S)
        yield b""  # pragma: no cover

    stalled = channel.stream_unary("/test.Svc/Echo", request_serializer=lambda m: m)
    try:
        code, details = _code(lambda: stalled(requests(), timeout=WAIT_S))
    finally:
        never_sent.set()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "did not arrive within 0.3 s" in details
    assert fakes.parsed == fakes.ran == 0 and dispatcher.calls == 0


def test_errors_go_through_the_table_and_are_logged(serve, caplog):
    channel, fakes, _ = serve(DispatchLimits())
    with caplog.at_level(logging.INFO, logger="parasal.server.requests"):
        code, details = _code(lambda: _call(channel, "Missing", pb.GetSampleRequest(id=12)))
        assert (code, details) == (grpc.StatusCode.NOT_FOUND, "no sample with id 12")
        code, details = _code(lambda: _call(channel, "Echo", b"\xff\xff\xff"))  # not a protobuf message
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid message" in details
        code, details = _code(lambda: _call(channel, "Small", b"\x00" * 101))  # over this method's limit
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "100 bytes" in details
    logged = [r.getMessage() for r in caplog.records if r.name == "parasal.server.requests"]
    assert any("/test.Svc/Missing NOT_FOUND" in line for line in logged)
    assert any("/test.Svc/Echo INVALID_ARGUMENT" in line for line in logged)
    assert fakes.ran == 0


def test_a_call_without_the_token_is_refused_before_its_request_is_read(serve):
    channel, fakes, _ = serve(DispatchLimits(request_timeout_s=WAIT_S), token=TOKEN)
    never_sent = threading.Event()

    def requests():
        never_sent.wait(WAIT_S)
        yield b""  # pragma: no cover

    stalled = channel.stream_unary("/test.Svc/Echo", request_serializer=lambda m: m)
    start = time.monotonic()
    try:
        code, details = _code(lambda: stalled(requests(), timeout=WAIT_S))
    finally:
        never_sent.set()
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, DENIED_MESSAGE)
    assert time.monotonic() - start < WAIT_S  # refused without waiting for the body
    big = pb.GetSampleRequest(id=1, bundle="x" * (1 << 20))
    assert _code(lambda: _call(channel, "Echo", big))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: list(_watch(channel, 1)))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert fakes.parsed == fakes.ran == 0  # never parsed, never run
    authorized = (("authorization", f"Bearer {TOKEN}"),)
    assert _call(channel, "Echo", metadata=authorized).id == 7


def _watch(channel, op_id: int, timeout=WAIT_S):
    method = channel.unary_stream(
        "/test.Svc/Watch",
        request_serializer=pb.GetSampleRequest.SerializeToString,
        response_deserializer=pb.GetSampleRequest.FromString,
    )
    return method(pb.GetSampleRequest(id=op_id), timeout=timeout)


def test_streams_are_capped_and_end_after_their_longest_time(serve):
    channel, fakes, dispatcher = serve(DispatchLimits(max_streams=1, stream_max_s=1.0, max_calls=1))
    first = _watch(channel, 1)
    assert next(first).id == 1  # open, waiting on the loop
    assert dispatcher.streams == 1
    code, _ = _code(lambda: list(_watch(channel, 2)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # one stream more than the limit
    assert _call(channel, "Echo").id == 7  # the stream holds no query capacity (max_calls=1)
    assert list(first) == []  # ended OK by the server after stream_max_s, without a last message
    assert dispatcher.streams == 0
    code, details = _code(lambda: list(_watch(channel, 404)))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "unknown operation")


def test_request_limits_follow_the_messages():
    limits = request_limits(pb.DESCRIPTOR.services_by_name.values(), upload_bytes=1 << 26, small_bytes=1 << 16)
    assert limits["/parasal.v1.SaliencyService/FindSimilarFailures"] == 1 << 26  # images, vectors, labels
    assert limits["/parasal.v1.EvaluationService/StartFinetuneEvaluation"] == 1 << 26
    for small in ("SaliencyService/GetSample", "OperationsService/GetOperation", "OperationsService/WatchOperation"):
        assert limits[f"/parasal.v1.{small}"] == 1 << 16


def test_watch_async_follows_an_operation_without_a_thread(tmp_path):
    operations = Operations(OperationStore(tmp_path / "state"), max_operations=2, progress_interval_s=0.0)
    go = threading.Event()

    def job(progress, should_stop):
        go.wait(WAIT_S)
        progress(0.5, "half")
        return pb.PruningEvaluationResult()

    try:
        op = operations.start(pb.OPERATION_KIND_PRUNING_EVALUATION, "demo", job)

        async def follow() -> list[int]:
            states = []
            threads = threading.active_count()
            async for snapshot in operations.watch_async(op.id, poll_s=WAIT_S):
                states.append(snapshot.state)
                if len(states) == 1:
                    assert threading.active_count() == threads  # waiting costs no thread
                    go.set()
            return states

        states = asyncio.run(asyncio.wait_for(follow(), WAIT_S))
        assert states[-1] == pb.OPERATION_STATE_SUCCEEDED and len(states) >= 2
        with pytest.raises(NotFound):
            asyncio.run(_first(operations.watch_async("nope")))
    finally:
        operations.close()


async def _first(stream):
    async for item in stream:
        return item


def test_one_caller_cannot_fill_the_operation_pool(tmp_path):
    operations = Operations(OperationStore(tmp_path / "state"), max_operations=4, max_per_caller=2)
    go = threading.Event()

    def job(progress, should_stop):
        go.wait(WAIT_S)
        return pb.PruningEvaluationResult()

    kind = pb.OPERATION_KIND_PRUNING_EVALUATION
    try:
        with acting_for("ipv4:10.0.0.7"):
            first = [operations.start(kind, "demo", job) for _ in range(2)]
            with pytest.raises(ResourceExhausted, match=r"this caller \(ipv4:10.0.0.7\).*limit 2 per caller"):
                operations.start(kind, "demo", job)
        with acting_for("ipv4:10.0.0.8"):  # another caller still has room
            operations.start(kind, "demo", job)
        operations.cancel(first[1].id)  # a pending one: its room is free at once
        with acting_for("ipv4:10.0.0.7"):
            operations.start(kind, "demo", job)
    finally:
        go.set()
        operations.close()


class _Peer:
    def __init__(self, peer):
        self._peer = peer

    def peer(self):
        return self._peer


def test_a_caller_is_its_address_without_the_port():
    assert caller(_Peer("ipv4:127.0.0.1:51886")) == caller(_Peer("ipv4:127.0.0.1:40000")) == "ipv4:127.0.0.1"
    assert caller(_Peer("ipv6:[::1]:51886")) == "ipv6:[::1]"
    assert caller(_Peer("unix:/run/parasal.sock")) == "unix:/run/parasal.sock"


def test_the_limits_are_settings_and_flags(tmp_path):
    from parasal.server.cli import build_parser, config_from_args
    from parasal.server.config import ConfigError, ServerConfig

    bundle = tmp_path / "b"
    bundle.mkdir()
    flags = ["--bundle", str(bundle), "--state-dir", str(tmp_path / "state"), "--request-timeout", "2.5"]
    flags += ["--max-streams", "7", "--stream-max", "30", "--max-streams-per-connection", "9"]
    flags += ["--max-operations-per-caller", "1"]
    config = config_from_args(build_parser().parse_args(flags))
    assert (config.request_timeout_s, config.max_streams, config.stream_max_s) == (2.5, 7, 30.0)
    assert (config.max_streams_per_connection, config.max_operations_per_caller) == (9, 1)
    for name, value in [("request_timeout_s", 0.0), ("stream_max_s", -1.0), ("max_streams", 0)]:
        bad = ServerConfig(bundles=[("b", bundle)], state_dir=tmp_path / "state", **{name: value})
        with pytest.raises(ConfigError, match=name):
            bad.validate()


def test_quick_methods_are_answered_on_the_loop_and_hand_over_when_they_would_wait(serve, caplog):
    """server/inline.py: a quick method runs on the event loop (no worker hop); one that
    reaches a waiting point is run again on a worker, answers the same, and is logged once;
    errors of an inline attempt go through the table as usual."""
    channel, fakes, dispatcher = serve(DispatchLimits())
    loop_thread = dispatcher_loop_thread = None
    with caplog.at_level(logging.INFO, logger="parasal.server.requests"):
        assert _call(channel, "Quick", pb.GetSampleRequest(id=7)).id == 7
        (loop_thread,) = fakes.threads
        fakes.threads.clear()
        assert _call(channel, "Quick", pb.GetSampleRequest(id=99)).id == 99
        dispatcher_loop_thread, worker_thread = fakes.threads
        code, details = _code(lambda: _call(channel, "Quick", pb.GetSampleRequest(id=404)))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "no sample with id 404")
    assert dispatcher_loop_thread == loop_thread != worker_thread  # first on the loop, then a worker
    assert not worker_thread.startswith("MainThread")
    logged = [r.getMessage() for r in caplog.records if "/test.Svc/Quick" in r.getMessage()]
    assert [line.split()[1] for line in logged] == ["OK", "OK", "NOT_FOUND"]  # one line per call
    assert dispatcher.calls == 0
    assert _call(channel, "Echo").id == 7 and fakes.ran == 1  # other methods still go to a worker
