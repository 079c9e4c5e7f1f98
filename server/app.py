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
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

from .auth import BearerTokenInterceptor
from .config import ConfigError, ServerConfig
from .devices import limit_faiss_threads
from .errors import ErrorInterceptor
from .evaluations import Evaluations
from .interceptors import LoggingInterceptor
from .operations import Operations
from .queries import Queries
from .registry import Registry
from .servicers import EvaluationServicer, OperationsServicer, SaliencyServicer
from .store import OperationStore

__all__ = ["RunningServer", "create_server", "serve", "SERVICE_NAMES"]

log = logging.getLogger("parasal.server")

#: The parasal services, by full name (health reports each, reflection lists them).
SERVICE_NAMES = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())


@dataclass
class RunningServer:
    """A started server and what it owns; :meth:`stop` shuts it all down gracefully."""

    server: grpc.Server
    port: int
    address: str
    health: health.HealthServicer
    registry: Registry
    operations: Operations
    config: ServerConfig

    def stop(self, grace: float | None = None) -> None:
        grace = self.config.grace_s if grace is None else grace
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(grace)  # refuses new calls now; in-flight ones get `grace`
        self.operations.shutdown(timeout=grace)  # running ops -> ABORTED, so their watchers end
        stopped.wait()
        self.operations.close()
        self.registry.close()
        log.info("stopped")


def create_server(config: ServerConfig, registry: Registry | None = None) -> tuple[grpc.Server, int, RunningServer]:
    """Build and start the server; returns (server, bound port, handle). Raises ConfigError
    (or the indexer's BundleError) for settings or bundles that cannot work."""
    config.validate()
    token = config.read_token()
    tls = config.read_tls()
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    registry, operations, saliency, evaluations = _open_services(config, registry)
    server = _grpc_server(config, token)
    health_servicer = _add_services(server, saliency, EvaluationServicer(evaluations), OperationsServicer(operations))
    host, port = _listen(server, config, tls)
    if not port:
        operations.close()
        registry.close()
        raise ConfigError(f"cannot listen on {host}:{config.port} (in use, or not an address of this machine)")
    server.start()
    running = RunningServer(server, port, f"{host}:{port}", health_servicer, registry, operations, config)
    log.info(
        "serving %d bundle(s) on %s%s%s",
        len(registry),
        running.address,
        " with TLS" if tls else "",
        " with token authentication" if token else "",
    )
    return server, port, running


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


def _grpc_server(config: ServerConfig, token: str | None) -> grpc.Server:
    """A grpc.Server (not started, no services) with the interceptors, limits and threads."""
    interceptors = [LoggingInterceptor()]
    if token is not None:
        interceptors.append(BearerTokenInterceptor(token))
    interceptors.append(ErrorInterceptor())
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]  # never share a port with another process by accident
    rpc_threads = futures.ThreadPoolExecutor(
        max_workers=config.threads,
        thread_name_prefix="parasal-rpc",
        initializer=limit_faiss_threads,
        initargs=(config.faiss_threads,),
    )
    return grpc.server(
        rpc_threads, interceptors=interceptors, options=options, maximum_concurrent_rpcs=config.max_concurrent_rpcs
    )


def _add_services(
    server: grpc.Server, saliency: SaliencyServicer, evaluation: EvaluationServicer, operations: OperationsServicer
) -> health.HealthServicer:
    """The parasal services, health (each reported SERVING) and reflection; returns the health servicer."""
    pb_grpc.add_SaliencyServiceServicer_to_server(saliency, server)
    pb_grpc.add_EvaluationServiceServicer_to_server(evaluation, server)
    pb_grpc.add_OperationsServiceServicer_to_server(operations, server)
    health_servicer = health.HealthServicer(
        experimental_non_blocking=True, experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1)
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return health_servicer


def _listen(server: grpc.Server, config: ServerConfig, tls: tuple[bytes, bytes] | None) -> tuple[str, int]:
    """(host as written in an address, bound port; 0 when the address cannot be bound)."""
    host = f"[{config.host}]" if ":" in config.host and not config.host.startswith("[") else config.host
    try:
        if tls is None:
            return host, server.add_insecure_port(f"{host}:{config.port}")
        return host, server.add_secure_port(f"{host}:{config.port}", grpc.ssl_server_credentials([tls]))
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
