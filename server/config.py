"""Server settings: one dataclass with documented, safe defaults.

Everything the server can be told lives here; nothing reads the environment or argv
elsewhere. ``parasal serve`` builds a :class:`ServerConfig` from flags (server/cli.py);
tests build one directly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("parasal.server")

__all__ = [
    "ServerConfig",
    "ConfigError",
    "STATE_DIR_ENV",
    "default_state_dir",
    "parse_bundle_arg",
    "MAX_MESSAGE_BYTES",
    "NEIGHBOR_LIST_SIZE",
    "NEIGHBOR_LISTS_MAX_SAMPLES",
]

#: Environment variable that overrides the default operation-store directory.
STATE_DIR_ENV = "PARASAL_STATE_DIR"

# Limits other modules default to as well: each is written here once.
#: gRPC message limit both ways (uploads and full profile vectors need more than 4 MiB).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Neighbours precomputed per indexed sample (neighbor_lists.py).
NEIGHBOR_LIST_SIZE = 64
#: Bundles with more samples get no neighbour lists (N² work: 50k is ~25 s at start-up on 2 cores).
NEIGHBOR_LISTS_MAX_SAMPLES = 50_000


class ConfigError(ValueError):
    """A setting that cannot work (reported as one line, exit status 2, by the CLI)."""


def default_state_dir() -> Path:
    """``$PARASAL_STATE_DIR``, else ``~/.cache/parasal/state``."""
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "parasal" / "state"


def parse_bundle_arg(arg: str) -> tuple[str, Path]:
    """``DIR`` -> (basename of DIR, DIR); ``NAME=DIR`` -> (NAME, DIR)."""
    name, sep, path = arg.partition("=")
    if not sep:
        path = arg
        name = Path(arg.rstrip("/")).name
    if not name or not path:
        raise ConfigError(f"--bundle {arg!r}: expected DIR or NAME=DIR")
    return name, Path(path).expanduser()


@dataclass
class ServerConfig:
    #: (name, directory) of each bundle to serve; requests naming no bundle get the first.
    bundles: list[tuple[str, Path]] = field(default_factory=list)
    #: Bundle name -> weights file to load its model from instead of the bundle's own copy
    #: (``model.pt``), e.g. a bundle built before bundles kept their weights; the
    #: fingerprint must still match.
    weights: dict[str, Path] = field(default_factory=dict)
    #: Loopback by default: exposing the server is an explicit choice (use TLS and a token then).
    host: str = "127.0.0.1"
    #: 0 picks a free port; the chosen one is printed as ``parasal: serving on HOST:PORT``.
    port: int = 50051
    #: Operation store (LMDB). Never inside a bundle: no request can change a bundle.
    state_dir: Path = field(default_factory=default_state_dir)
    #: File holding the bearer token clients must send; None = no authentication.
    token_file: Path | None = None
    #: PEM certificate chain and private key; both or neither (None = plaintext).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Operations pending or running at once; one more is refused with RESOURCE_EXHAUSTED.
    max_operations: int = 4
    #: Of those, at most this many for one caller (one client address: callers behind one
    #: proxy count as one), so one caller cannot fill the pool.
    max_operations_per_caller: int = 2
    #: Threads running operations (each evaluation uses the model on one thread).
    operation_workers: int = 1
    #: Finished operation records kept in the store (oldest pruned at start-up).
    max_stored_operations: int = 10_000
    #: Largest k for FindSimilarFailures (the proto promises 1..1000).
    max_k: int = 1000
    #: Largest num_neighbors for evaluations.
    max_neighbors: int = 1000
    #: Decoded images larger than this (width x height) are refused before any work.
    max_image_pixels: int = 4096 * 4096
    #: gRPC message limit both ways (uploads and full profile vectors need more than 4 MiB).
    max_message_bytes: int = MAX_MESSAGE_BYTES
    #: Queries (unary calls) running or queued for a worker at once; one more is refused at
    #: once with RESOURCE_EXHAUSTED, never queued. Streams and health are not counted.
    max_concurrent_rpcs: int = 64
    #: Worker threads running queries. Streams, health and calls whose request has not fully
    #: arrived hold none (they wait on the server's event loop).
    threads: int = 16
    #: Seconds a call's request may take to arrive once its headers did; then the call ends
    #: with DEADLINE_EXCEEDED (a stalled client holds nothing longer). Uploads must arrive
    #: within it too: 64 MB in 10 s needs 6.4 MB/s.
    request_timeout_s: float = 10.0
    #: WatchOperation streams open at once; one more is refused with RESOURCE_EXHAUSTED.
    max_streams: int = 1000
    #: Seconds a WatchOperation stream lasts at most; it then ends OK and the SDK watches again.
    stream_max_s: float = 300.0
    #: HTTP/2 streams (calls) one connection may have open at once.
    max_streams_per_connection: int = 100
    #: Copies of each model for concurrent queries (saliency hooks make one copy single-threaded).
    model_replicas: int = 2
    #: Samples per bundle whose metadata and response messages are cached, filled at
    #: start-up (misclassified samples first); about 2 KB each. 0 disables the cache.
    sample_cache: int = 100_000
    #: Neighbours precomputed per indexed sample of an exact index, among all samples and
    #: among misclassified ones (neighbor_lists.py): a by-id query then needs no search when
    #: its answer lies within them. 0 disables. Built at start-up, N² work.
    neighbor_lists: int = NEIGHBOR_LIST_SIZE
    #: Bundles with more samples get no neighbour lists (50k: ~25 s at start-up on 2 cores).
    neighbor_lists_max_samples: int = NEIGHBOR_LISTS_MAX_SAMPLES
    #: Compute upload saliency in a child process per bundle (saliency_process.py): away
    #: from the server's GIL a batch runs ~1.7x faster. False computes in the server process.
    saliency_process: bool = True
    #: torch intra-op threads (0 = torch's default, one per core). The server already runs
    #: work side by side (rpc threads, a saliency batch, searches, evaluations); intra-op
    #: threads on top of that oversubscribe the cores: on 2 cores, uploads answered in
    #: 47 ms (p50, 8 callers) with 1, 94 ms with torch's default. Raise it on a machine
    #: with many cores and few concurrent callers.
    torch_threads: int = 1
    #: FAISS OpenMP threads per searching thread (0 = OpenMP's default, all cores). Small
    #: searches gain little from more; idle OpenMP threads spin and oversubscribe the cores
    #: (faiss #2731).
    faiss_threads: int = 1
    #: Threads per bundle running neighbour searches; concurrent queries are searched
    #: together in batches (batching.py), so one keeps a core busy.
    search_workers: int = 1
    #: "cpu", "cuda" or "auto" (cuda when available).
    device: str = "auto"
    #: Minimum seconds between two recorded progress updates of one operation.
    progress_interval_s: float = 0.2
    #: Seconds in-flight calls get to finish after SIGTERM/SIGINT.
    grace_s: float = 10.0

    def validate(self) -> ServerConfig:
        """Raise ConfigError for settings that cannot work; returns self."""
        if not self.bundles:
            raise ConfigError("no bundle given (use --bundle DIR)")
        names = [name for name, _ in self.bundles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"bundle name(s) given twice: {', '.join(dupes)} (use --bundle NAME=DIR)")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} outside 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"device must be cpu, cuda or auto, not {self.device!r}")
        for name, value in [
            ("sample_cache", self.sample_cache),
            ("neighbor_lists", self.neighbor_lists),
            ("neighbor_lists_max_samples", self.neighbor_lists_max_samples),
        ]:
            if value < 0:
                raise ConfigError(f"{name} must be at least 0, got {value}")
        for name, value in [
            ("max_operations", self.max_operations),
            ("max_operations_per_caller", self.max_operations_per_caller),
            ("operation_workers", self.operation_workers),
            ("max_k", self.max_k),
            ("threads", self.threads),
            ("model_replicas", self.model_replicas),
            ("search_workers", self.search_workers),
            ("max_concurrent_rpcs", self.max_concurrent_rpcs),
            ("max_image_pixels", self.max_image_pixels),
            ("max_message_bytes", self.max_message_bytes),
            ("max_streams", self.max_streams),
            ("max_streams_per_connection", self.max_streams_per_connection),
        ]:
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        for name, value in [("request_timeout_s", self.request_timeout_s), ("stream_max_s", self.stream_max_s)]:
            if not value > 0:
                raise ConfigError(f"{name} must be more than 0, got {value}")
        state = Path(self.state_dir).expanduser().resolve()
        for name, path in self.bundles:
            bundle = Path(path).expanduser().resolve()
            if state == bundle or bundle in state.parents:
                raise ConfigError(f"state dir {state} is inside bundle {name!r} ({bundle}); bundles stay read-only")
        return self

    def read_token(self) -> str | None:
        """The bearer token from token_file (surrounding whitespace stripped), or None."""
        if self.token_file is None:
            return None
        path = Path(self.token_file).expanduser()
        try:
            token = path.read_text().strip()
            mode = path.stat().st_mode
        except OSError as exc:
            raise ConfigError(f"cannot read token file {self.token_file}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"token file {self.token_file} is empty")
        if mode & 0o077:  # as ssh warns for private keys: anyone who can read it can call the server
            log.warning("token file %s is accessible by others (mode %04o); chmod 600 %s", path, mode & 0o7777, path)
        return token

    def read_tls(self) -> tuple[bytes, bytes] | None:
        """(key PEM, certificate chain PEM), or None for plaintext."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        try:
            return Path(self.tls_key).expanduser().read_bytes(), Path(self.tls_cert).expanduser().read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from None
