"""Typed errors of the parasal SDK, mapped from gRPC status codes in one table.

Every error the SDK raises on purpose is a `ParasalError` carrying the status `.code`
(a `grpc.StatusCode`) and the server's `.details`. Client-side argument checks raise
`InvalidArgument` too (before any call), which is also a `ValueError`; deadlines raise
`DeadlineExceeded`, which is also the builtin `TimeoutError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

__all__ = [
    "ParasalError",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "OperationError",
    "OperationFailed",
    "OperationCancelled",
    "OperationAborted",
    "OperationTimeout",
    "error_for_status",
    "map_grpc_errors",
    "status_code_from_number",
]


class ParasalError(Exception):
    """Base of every SDK error: `.code` is the `grpc.StatusCode`, `.details` the message."""

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str = "", code: grpc.StatusCode | None = None) -> None:
        super().__init__(details)
        self.details = details
        self.code = code if code is not None else self.default_code

    def __str__(self) -> str:
        return self.details or self.code.name


class Cancelled(ParasalError):
    default_code = grpc.StatusCode.CANCELLED


class Unknown(ParasalError):
    default_code = grpc.StatusCode.UNKNOWN


class InvalidArgument(ParasalError, ValueError):
    """The request is wrong whatever the server's state. Never worth retrying."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(ParasalError, TimeoutError):
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ParasalError, LookupError):
    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ParasalError):
    default_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ParasalError):
    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ParasalError):
    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ParasalError):
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ParasalError):
    default_code = grpc.StatusCode.ABORTED


class OutOfRange(ParasalError):
    default_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ParasalError):
    default_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ParasalError):
    default_code = grpc.StatusCode.INTERNAL


class Unavailable(ParasalError):
    default_code = grpc.StatusCode.UNAVAILABLE


class DataLoss(ParasalError):
    default_code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(ParasalError):
    default_code = grpc.StatusCode.UNAUTHENTICATED


# The one table from status codes to exception types. OK never reaches it (not an error).
_ERRORS_BY_CODE: dict[grpc.StatusCode, type[ParasalError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def error_for_status(code: grpc.StatusCode, details: str = "") -> ParasalError:
    """The typed exception for a status code (the base class for codes without one)."""
    return _ERRORS_BY_CODE.get(code, ParasalError)(details, code)


def status_code_from_number(number: int) -> grpc.StatusCode:
    """`grpc.StatusCode` from its google.rpc.Code number (UNKNOWN for numbers it lacks)."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


@contextlib.contextmanager
def map_grpc_errors() -> Iterator[None]:
    """Re-raise `grpc.RpcError` from the block as the matching `ParasalError`."""
    try:
        yield
    except grpc.RpcError as exc:
        code_fn = getattr(exc, "code", None)
        details_fn = getattr(exc, "details", None)
        code = code_fn() if callable(code_fn) else None
        details = details_fn() if callable(details_fn) else None
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        raise error_for_status(code, details or "") from exc


# ---------------------------------------------------------------------------------------
# Outcomes of long-running operations (raised by OperationHandle.result()).


class OperationError(ParasalError):
    """An operation ended without a result; `.operation` is its final snapshot."""

    def __init__(self, details: str = "", code: grpc.StatusCode | None = None, operation=None) -> None:
        super().__init__(details, code)
        self.operation = operation


class OperationFailed(OperationError):
    """The operation failed; `.code`/`.details` are the operation's own error."""


class OperationCancelled(OperationError):
    default_code = grpc.StatusCode.CANCELLED


class OperationAborted(OperationError):
    """The server stopped before the operation finished: while it ran, or before it started
    (`.details` then says it never ran, so starting it again repeats nothing)."""

    default_code = grpc.StatusCode.ABORTED


class OperationTimeout(OperationError, DeadlineExceeded):
    """`result(timeout=...)` passed before the operation finished (it keeps running)."""
