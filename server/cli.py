"""``parasal serve`` (also ``python -m parasal.server``): flags -> ServerConfig -> serve().

Bad flags, unreadable files and unusable bundles print one line on stderr and exit with
status 2; the server itself logs to stderr and prints ``parasal: serving on HOST:PORT``
on stdout once it listens.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from pathlib import Path

from .config import ConfigError, ServerConfig, default_state_dir, parse_bundle_arg

__all__ = ["main", "build_parser", "config_from_args"]

PROG = "parasal serve"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    defaults = ServerConfig()
    p = _Parser(prog=PROG, description="Serve saliency bundles over gRPC (parasal.v1).")
    _add_serving(p.add_argument_group("serving"), defaults)
    _add_limits(
        p.add_argument_group("capacity and limits"),
        defaults,
    )
    _add_engine(p.add_argument_group("engine and process"), defaults)
    return p


def _add_serving(g, defaults: ServerConfig) -> None:
    """What is served, where, and who may call."""
    g.add_argument(
        "--bundle",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        required=True,
        help="a bundle directory to serve (repeatable; NAME defaults to the directory's name; "
        "requests naming no bundle get the first)",
    )
    g.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="load bundle NAME's model from FILE instead of the bundle's own copy (model.pt); "
        "its fingerprint must match the bundle's (repeatable)",
    )
    g.add_argument("--host", default=defaults.host, help=f"address to listen on (default {defaults.host})")
    g.add_argument(
        "--port", type=int, default=defaults.port, help=f"port; 0 picks a free one (default {defaults.port})"
    )
    g.add_argument(
        "--token-file", type=Path, help="require 'authorization: Bearer <token>' with the token in this file"
    )
    g.add_argument("--tls-cert", type=Path, help="PEM certificate chain (with --tls-key)")
    g.add_argument("--tls-key", type=Path, help="PEM private key (with --tls-cert)")
    g.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"operation store directory (default $PARASAL_STATE_DIR or {default_state_dir()})",
    )


def _add_limits(g, defaults: ServerConfig) -> None:
    """How much the server takes on (see server/dispatch.py and the README's reliability section)."""
    g.add_argument(
        "--max-operations",
        type=int,
        default=defaults.max_operations,
        help=f"evaluations pending or running at once (default {defaults.max_operations})",
    )
    g.add_argument(
        "--max-operations-per-caller",
        type=int,
        default=defaults.max_operations_per_caller,
        help=f"of those, for one client address (default {defaults.max_operations_per_caller})",
    )
    g.add_argument(
        "--operation-workers",
        type=int,
        default=defaults.operation_workers,
        help=f"threads running evaluations (default {defaults.operation_workers})",
    )
    g.add_argument(
        "--threads", type=int, default=defaults.threads, help=f"threads serving calls (default {defaults.threads})"
    )
    g.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=defaults.max_concurrent_rpcs,
        help=f"queries running or queued at once; more get RESOURCE_EXHAUSTED at once "
        f"(default {defaults.max_concurrent_rpcs})",
    )
    g.add_argument(
        "--request-timeout",
        type=float,
        default=defaults.request_timeout_s,
        dest="request_timeout_s",
        help=f"seconds a call's request may take to arrive; later, DEADLINE_EXCEEDED "
        f"(default {defaults.request_timeout_s:g})",
    )
    g.add_argument(
        "--max-streams",
        type=int,
        default=defaults.max_streams,
        help=f"WatchOperation streams open at once; more get RESOURCE_EXHAUSTED (default {defaults.max_streams})",
    )
    g.add_argument(
        "--stream-max",
        type=float,
        default=defaults.stream_max_s,
        dest="stream_max_s",
        help=f"seconds a WatchOperation stream lasts at most; the SDK then watches again "
        f"(default {defaults.stream_max_s:g})",
    )
    g.add_argument(
        "--max-streams-per-connection",
        type=int,
        default=defaults.max_streams_per_connection,
        help=f"calls one connection may have open at once (default {defaults.max_streams_per_connection})",
    )


def _add_engine(g, defaults: ServerConfig) -> None:
    """Where the work runs and how it is cached."""
    g.add_argument(
        "--model-replicas",
        type=int,
        default=defaults.model_replicas,
        help=f"model copies for concurrent profile/explain calls (default {defaults.model_replicas})",
    )
    g.add_argument(
        "--search-workers",
        type=int,
        default=defaults.search_workers,
        help=f"threads per bundle searching neighbours, concurrent queries batched (default {defaults.search_workers})",
    )
    g.add_argument(
        "--sample-cache",
        type=int,
        default=defaults.sample_cache,
        help=f"samples per bundle whose metadata is cached, filled at start-up "
        f"(default {defaults.sample_cache}; 0 = none)",
    )
    g.add_argument(
        "--neighbor-lists",
        type=int,
        default=defaults.neighbor_lists,
        help=f"neighbours precomputed per indexed sample at start-up (exact index), so by-id "
        f"queries need no search (default {defaults.neighbor_lists}; 0 = none)",
    )
    g.add_argument(
        "--neighbor-lists-max-samples",
        type=int,
        default=defaults.neighbor_lists_max_samples,
        help=f"no neighbour lists for bundles with more samples: N² work "
        f"(default {defaults.neighbor_lists_max_samples})",
    )
    g.add_argument(
        "--no-saliency-process",
        dest="saliency_process",
        action="store_false",
        help="compute upload saliency in the server process instead of a child process per bundle",
    )
    g.add_argument(
        "--torch-threads",
        type=int,
        default=defaults.torch_threads,
        help=f"torch intra-op threads, 0 = one per core (default {defaults.torch_threads}: "
        f"the server already parallelises across calls)",
    )
    g.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default=defaults.device,
        help=f"where models run (default {defaults.device}: cuda when available)",
    )
    g.add_argument(
        "--grace",
        type=float,
        default=defaults.grace_s,
        help=f"seconds in-flight calls get after SIGTERM (default {defaults.grace_s:g})",
    )
    g.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (default INFO); logs go to stderr",
    )


def _weights_arg(arg: str) -> tuple[str, Path]:
    """``NAME=FILE`` -> (NAME, FILE), the file checked to exist."""
    name, sep, path = arg.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--weights {arg!r}: expected NAME=FILE (NAME as in --bundle)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"--weights {arg!r}: {file} is not a file")
    return name, file


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    config = ServerConfig(
        bundles=[parse_bundle_arg(b) for b in args.bundle],
        weights=dict(_weights_arg(w) for w in args.weights),
        host=args.host,
        port=args.port,
        token_file=args.token_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_operations=args.max_operations,
        max_operations_per_caller=args.max_operations_per_caller,
        operation_workers=args.operation_workers,
        threads=args.threads,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        request_timeout_s=args.request_timeout_s,
        max_streams=args.max_streams,
        stream_max_s=args.stream_max_s,
        max_streams_per_connection=args.max_streams_per_connection,
        model_replicas=args.model_replicas,
        search_workers=args.search_workers,
        sample_cache=args.sample_cache,
        neighbor_lists=args.neighbor_lists,
        neighbor_lists_max_samples=args.neighbor_lists_max_samples,
        saliency_process=args.saliency_process,
        torch_threads=args.torch_threads,
        device=args.device,
        grace_s=args.grace,
    )
    if args.state_dir is not None:
        config.state_dir = args.state_dir.expanduser()
    for name, path in config.bundles:
        if not path.is_dir():
            raise ConfigError(f"bundle {name!r}: {path} is not a directory")
    unknown = sorted(set(config.weights) - {name for name, _ in config.bundles})
    if unknown:
        raise ConfigError(f"--weights names no served bundle: {unknown}")
    return config.validate()


_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


def _candidates(host: str, port: int) -> list[tuple[int, tuple]]:
    """(family, sockaddr) pairs grpc would try to bind for ``host:port``: every address the
    host resolves to, or for a wildcard host a dual-stack ``[::]`` and then ``0.0.0.0``."""
    if host in _WILDCARDS:
        return [(socket.AF_INET6, ("::", port)), (socket.AF_INET, ("0.0.0.0", port))]
    if host == "localhost":  # grpc's resolver gives both loopbacks, whatever /etc/hosts says
        return [(socket.AF_INET6, ("::1", port)), (socket.AF_INET, ("127.0.0.1", port))]
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return list(dict.fromkeys((family, sockaddr[:2]) for family, _, _, _, sockaddr in infos))


def _bind_error(family: int, sockaddr: tuple) -> OSError | None:
    """Why a listening socket cannot be made on ``sockaddr`` (None: it can). SO_REUSEADDR and
    listen() as grpc's own listener does, so a port in TIME_WAIT is free and a port another
    socket listens on (or holds bound without SO_REUSEADDR) is not."""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # grpc's dual-stack wildcard
            s.bind(sockaddr)
            s.listen(1)
    except OSError as exc:
        return exc
    return None


def port_problem(host: str, port: int) -> str | None:
    """Why ``parasal serve`` could not listen on ``host:port``, found in milliseconds before
    the bundles are opened (tens of seconds); None when it can (or when only grpc can tell:
    port 0, a host this resolver does not know). Like grpc, one bindable address is enough.
    The check is advisory: the server's own bind still decides (and fails cleanly)."""
    if port == 0:
        return None
    try:
        candidates = _candidates(host, port)
    except (OSError, UnicodeError):
        return None  # grpc resolves it (or says it cannot) itself
    errors = [_bind_error(family, sockaddr) for family, sockaddr in candidates]
    if not errors or any(e is None for e in errors):
        return None
    first = errors[0]
    if any(e.errno == errno.EADDRINUSE for e in errors):
        return f"port {port} on {host} is already in use; stop what holds it, or pick another --port (0 = a free one)"
    return f"cannot listen on {host}:{port}: {first.strerror or first}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
        # Before the imports and the bundles (tens of seconds): a port in use fails at once.
        problem = port_problem(config.host, config.port)
        if problem:
            raise ConfigError(problem)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    # Imported here so `--help` and flag errors stay fast (torch, faiss load with the app).
    from parasal.indexer import IndexerError

    from .app import serve

    try:
        return serve(config)
    except (ConfigError, IndexerError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
