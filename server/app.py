"""Assembling and running the server.

:func:`create_server` builds everything from a :class:`ServerConfig` and starts a
``grpc.Server`` on the configured address (port 0: a free one) without blocking, so tests
can run it in-process; :func:`serve` runs it until SIGTERM/SIGINT and shuts down
gracefully:

1. health reports NOT_SERVING (load balancers stop sending);
2. the server stops accepting calls; calls in flight get ``grace_s`` seconds to finish;
3. operations still running are asked to stop and recorded ABORTED (so is anything that
   does not stop in time); the store and bundles are closed; exit status 0.

Interceptors, outermost first: request log (one line per call), bearer token (when a
token file is configured), error table (domain exceptions -> status codes).

The server is a ``grpc.aio`` server on its own event-loop thread (``parasal-grpc``, see
:class:`AioServer`): calls start there and their requests are read there, within a
deadline; only admitted queries go to the ``threads`` workers, and streams and health never
take one (dispatch.py). Transport limits bound what one connection can hold open.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

from .auth import BearerTokenInterceptor
from .browse import Browse
from .config import ConfigError, ServerConfig
from .devices import limit_faiss_threads
from .dispatch import Dispatcher, DispatchLimits, request_limits
from .errors import ErrorInterceptor
from .evaluations import Evaluations
from .interceptors import LoggingInterceptor
from .operations import Operations
from .queries import Queries
from .registry import Registry
from .servicers import INLINE_METHODS, BrowseServicer, EvaluationServicer, OperationsServicer, SaliencyServicer
from .store import OperationStore

__all__ = ["AioServer", "RunningServer", "create_server", "serve", "SERVICE_NAMES"]

log = logging.getLogger("parasal.server")

#: The parasal services, by full name (health reports each, reflection lists them).
SERVICE_NAMES = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())


class AioServer:
    """A ``grpc.aio.Server`` on its own event-loop thread, driven from sync code."""

    def __init__(self, make_server: Callable[[], grpc.aio.Server]):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="parasal-grpc", daemon=True)
        self._thread.start()
        self.server: grpc.aio.Server = self.run(make_server)

    def call(self, coro: Awaitable, timeout: float | None = 60):
        """Await ``coro`` on the server's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable, timeout: float | None = 60):
        """``fn()`` on the server's loop (grpc.aio objects belong to the loop they run on)."""

        async def call():
            return fn()

        return self.call(call(), timeout)

    def stop(self, grace: float | None) -> threading.Event:
        """Refuse new calls now; calls in flight get ``grace`` seconds. Set when stopped."""
        done = threading.Event()
        future = asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop)
        future.add_done_callback(lambda _future: done.set())
        return done

    def close(self) -> None:
        """Stop the loop and its thread (after :meth:`stop`)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class RunningServer:
    """A started server and what it owns; :meth:`stop` shuts it all down gracefully."""

    server: AioServer
    port: int
    address: str
    health: health_async.HealthServicer
    registry: Registry
    operations: Operations
    config: ServerConfig
    workers: futures.ThreadPoolExecutor

    def stop(self, grace: float | None = None) -> None:
        grace = self.config.grace_s if grace is None else grace
        self.server.call(self.health.enter_graceful_shutdown())
        stopped = self.server.stop(grace)  # refuses new calls now; in-flight ones get `grace`
        self.operations.shutdown(timeout=grace)  # running ops -> ABORTED, so their watchers end
        stopped.wait(grace + 10)
        self.server.close()
        self.workers.shutdown(wait=False, cancel_futures=True)
        self.operations.close()
        self.registry.close()
        log.info("stopped")


def create_server(config: ServerConfig, registry: Registry | None = None) -> tuple[AioServer, int, RunningServer]:
    """Build and start the server; returns (server, bound port, handle). Raises ConfigError
    (or the indexer's BundleError) for settings or bundles that cannot work."""
    config.validate()
    token = config.read_token()
    tls = config.read_tls()
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    registry, operations, saliency, evaluations = _open_services(config, registry)
    workers = _workers(config)
    aio = None
    try:
        browse = BrowseServicer(registry, Browse(registry), saliency)
        servicers = (saliency, EvaluationServicer(evaluations), OperationsServicer(operations), browse)
        aio = AioServer(lambda: _grpc_server(config, workers))
        health_servicer = aio.call(_add_services(aio.server, _dispatcher(config, token, workers), *servicers))
        host, port = _listen(aio, config, tls)
        if not port:
            raise ConfigError(f"cannot listen on {host}:{config.port} (in use, or not an address of this machine)")
        aio.call(aio.server.start())
    except BaseException:
        # Whatever failed (the port, TLS material, start-up), nothing opened so far outlives it.
        if aio is not None:
            aio.close()
        workers.shutdown(wait=False)
        operations.close()
        registry.close()
        raise
    running = RunningServer(aio, port, f"{host}:{port}", health_servicer, registry, operations, config, workers)
    log.info(
        "serving %d bundle(s) on %s%s%s",
        len(registry),
        running.address,
        " with TLS" if tls else "",
        " with token authentication" if token else "",
    )
    return aio, port, running


def _open_services(
    config: ServerConfig, registry: Registry | None
) -> tuple[Registry, Operations, SaliencyServicer, Evaluations]:
    """The operation store, the bundles (unless given) and the domain services, warmed;
    what was opened is closed again when a later step fails."""
    store = OperationStore(config.state_dir)
    try:
        registry = registry or Registry.load(config)
    except BaseException:
        store.close()
        raise
    operations = Operations(
        store,
        max_operations=config.max_operations,
        max_per_caller=config.max_operations_per_caller,
        workers=config.operation_workers,
        progress_interval_s=config.progress_interval_s,
        max_stored=config.max_stored_operations,
    )
    queries = Queries(registry, config)
    evaluations = Evaluations(registry, queries, operations, config)
    saliency = SaliencyServicer(registry, queries)
    try:
        saliency.warm()  # before listening: the first answers are as quick as the later ones
    except BaseException:
        operations.close()
        registry.close()
        raise
    return registry, operations, saliency, evaluations


def _workers(config: ServerConfig) -> futures.ThreadPoolExecutor:
    """The threads running admitted queries (each with FAISS limited to its share of cores)."""
    return futures.ThreadPoolExecutor(
        max_workers=config.threads,
        thread_name_prefix="parasal-rpc",
        initializer=limit_faiss_threads,
        initargs=(config.faiss_threads,),
    )


def _dispatcher(config: ServerConfig, token: str | None, workers: futures.ThreadPoolExecutor) -> Dispatcher:
    """What every parasal call goes through: the interceptors (log, token, error table), the
    request timeout and size limits, admission to ``workers`` (dispatch.py)."""
    auth = BearerTokenInterceptor(token) if token is not None else None
    interceptors = [LoggingInterceptor(), *([auth] if auth is not None else []), ErrorInterceptor()]
    limits = DispatchLimits(
        max_calls=config.max_concurrent_rpcs,
        max_streams=config.max_streams,
        request_timeout_s=config.request_timeout_s,
        stream_max_s=config.stream_max_s,
    )
    return Dispatcher(
        interceptors,
        workers,
        limits,
        receive_limits=request_limits(pb.DESCRIPTOR.services_by_name.values(), config.max_message_bytes),
        upload_bytes=config.max_message_bytes,
        auth=auth,
        inline_methods=INLINE_METHODS,
    )


def _grpc_server(config: ServerConfig, workers: futures.ThreadPoolExecutor) -> grpc.aio.Server:
    """A grpc.aio.Server (not started, no services) with the transport limits; called on the
    server's loop."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),  # never share a port with another process by accident
        # One connection cannot open more streams than this (SETTINGS_MAX_CONCURRENT_STREAMS).
        ("grpc.max_concurrent_streams", config.max_streams_per_connection),
        # Dead peers are found by keepalive pings; a connection with no call for a while is
        # closed; clients may ping every 10 s (their keepalive) without being cut off.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.max_connection_idle_ms", 300_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    # Every parasal handler is async once dispatched; a sync one would run in `workers`.
    return grpc.aio.server(migration_thread_pool=workers, options=options)


async def _add_services(
    server: grpc.aio.Server,
    dispatcher: Dispatcher,
    saliency: SaliencyServicer,
    evaluation: EvaluationServicer,
    operations: OperationsServicer,
    browse: BrowseServicer,
) -> health_async.HealthServicer:
    """The parasal services (through the dispatcher), health (each reported SERVING) and
    reflection; returns the health servicer. Health and reflection are grpc's asyncio
    servicers, added as they are: they answer on the loop, outside every limit."""
    dispatcher.add(server, pb_grpc.add_SaliencyServiceServicer_to_server, saliency)
    dispatcher.add(server, pb_grpc.add_EvaluationServiceServicer_to_server, evaluation)
    dispatcher.add(server, pb_grpc.add_OperationsServiceServicer_to_server, operations)
    dispatcher.add(server, pb_grpc.add_BrowseServiceServicer_to_server, browse)
    health_servicer = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return health_servicer


def _listen(aio: AioServer, config: ServerConfig, tls: tuple[bytes, bytes] | None) -> tuple[str, int]:
    """(host as written in an address, bound port; 0 when the address cannot be bound)."""
    host = f"[{config.host}]" if ":" in config.host and not config.host.startswith("[") else config.host
    address = f"{host}:{config.port}"
    try:
        if tls is None:
            return host, aio.run(lambda: aio.server.add_insecure_port(address))
        credentials = grpc.ssl_server_credentials([tls])
        return host, aio.run(lambda: aio.server.add_secure_port(address, credentials))
    except RuntimeError as exc:
        log.debug("bind failed: %s", exc)
        return host, 0


def serve(config: ServerConfig) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully; returns the exit status (0).

    Prints exactly ``parasal: serving on HOST:PORT`` to stdout once listening, so scripts
    and tests started with port 0 can read the port."""
    _, _, running = create_server(config)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(f"parasal: serving on {running.address}", flush=True)
        while not stop.wait(timeout=3600):
            pass
        log.info("signal received; shutting down (grace %.0fs)", config.grace_s)
    finally:
        running.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
    return 0
