"""Connection settings: defaults, channel options and the retry policy, as values."""

from __future__ import annotations

import json

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0  # seconds per call; None means no deadline
# Full profiles of wide models (ResNet-50: 26,560 floats) and uploaded images stay well
# below this; gRPC's default 4 MiB receive limit is too tight for batches of neighbours
# with images and for large uploads.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Retried by gRPC itself, with backoff, only on UNAVAILABLE (server restarting, connection
# refused) and only for calls that change nothing or are idempotent. Starting an
# evaluation is not retried: a second attempt could start a second operation. Nothing is
# retried on INVALID_ARGUMENT or any other code.
RETRYABLE_METHODS = (
    {"service": "parasal.v1.SaliencyService"},
    {"service": "parasal.v1.OperationsService", "method": "GetOperation"},
    {"service": "parasal.v1.OperationsService", "method": "ListOperations"},
    {"service": "parasal.v1.OperationsService", "method": "CancelOperation"},
    {"service": "parasal.v1.OperationsService", "method": "WatchOperation"},
)
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("parasal")
    except PackageNotFoundError:  # not installed as a distribution (e.g. a source checkout)
        return "0"


def service_config() -> str:
    return json.dumps({"methodConfig": [{"name": list(RETRYABLE_METHODS), "retryPolicy": RETRY_POLICY}]})


def channel_options(extra=None) -> list[tuple[str, object]]:
    """Default channel options, overridden key by key by `extra` (pairs or a dict)."""
    options: dict[str, object] = {
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.enable_retries": 1,
        # grpc's default reconnect back-off grows to 120 s: after a server restart a waiting
        # OperationHandle would sit idle that long before it re-watches. 5 s is plenty gentle.
        "grpc.max_reconnect_backoff_ms": 5000,
        "grpc.service_config": service_config(),
        "grpc.primary_user_agent": f"parasal-client/{_version()}",
    }
    if extra:
        options.update(dict(extra.items() if isinstance(extra, dict) else extra))
    return list(options.items())
