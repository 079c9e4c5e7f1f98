"""Domain errors and the one table that maps them to gRPC status codes.

Domain code (queries, operations, registry) raises the exceptions defined here, or lets
parasal.indexer's SampleNotFound/BundleError through; nothing below the servicers knows
about gRPC. :class:`ErrorInterceptor` applies :data:`ERROR_TABLE` to every call: a known
exception becomes its status code with its message; anything else is a bug and becomes
INTERNAL with a generic message and a reference, while the traceback goes to the server
log only (never to clients).

Messages that quote input quote it through :func:`shown` (at most ``SHOWN_CHARS``
characters of it), and :func:`status_for` caps every message at ``MAX_MESSAGE_CHARS``:
a 100 KB operation id must not come back as a 100 KB status message (which grpc then
refuses as oversized metadata). The interceptor also refuses requests over the field caps
of limits.py before the handler runs, through the same table.
"""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf.message import Message

from parasal.indexer import BundleError, CorruptSample, SampleNotFound
from parasal.indexer.errors import NoReferenceData

from .inline import WouldBlock
from .interceptors import WrappingInterceptor
from .limits import request_problem

__all__ = [
    "ServerError",
    "NotFound",
    "InvalidArgument",
    "ResourceExhausted",
    "FailedPrecondition",
    "DeadlineExceeded",
    "Unauthenticated",
    "Unavailable",
    "ERROR_TABLE",
    "MAX_MESSAGE_CHARS",
    "shown",
    "status_for",
    "abort",
    "check_request",
    "ErrorInterceptor",
]

log = logging.getLogger("parasal.server")


class ServerError(Exception):
    """Base of the server's domain errors; the message is shown to clients as is."""


class NotFound(ServerError, LookupError):
    """An unknown bundle, sample id, operation id."""


class InvalidArgument(ServerError, ValueError):
    """Input that is wrong whatever the server's state (bad image, k out of range, NaN...)."""


class ResourceExhausted(ServerError):
    """A limit was hit (the operation pool is full)."""


class FailedPrecondition(ServerError):
    """The request is valid but the server's state does not allow it."""


class DeadlineExceeded(ServerError):
    """The client's deadline passed while the call was still working."""


class Unauthenticated(ServerError):
    """A bearer token is required and was missing or wrong."""


class Unavailable(ServerError):
    """Transient: a worker the request needed went away; retrying is safe."""


#: Checked in order; the first class the exception is an instance of gives the code.
ERROR_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (SampleNotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    # Surprise asked of a bundle indexed without --reference-data: a state, not a broken bundle
    # (before BundleError, its base class).
    (NoReferenceData, grpc.StatusCode.FAILED_PRECONDITION),
    # A bundle that fails its own checks while serving, or a sample image that can no
    # longer be read (a file changed or vanished under us), is data loss, not a client mistake.
    (BundleError, grpc.StatusCode.DATA_LOSS),
    (CorruptSample, grpc.StatusCode.DATA_LOSS),
)

INTERNAL_MESSAGE = "internal error (reference {ref}; details are in the server log)"
#: Longest status message sent (status messages travel as HTTP/2 trailers, which grpc
#: limits to 16 KiB by default; a message is for people, a few lines at most).
MAX_MESSAGE_CHARS = 1000
#: Characters of an input value a message quotes.
SHOWN_CHARS = 80


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` as a message quotes it: its repr when short, else the first ``limit``
    characters and how long it was (``'aaaa...' (100000 characters)``)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    head = repr(text[:limit]) if isinstance(value, str) else text[:limit]
    return f"{head}... ({len(text)} characters)"


def _capped(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 40] + f"... (message cut, {len(message)} characters)"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """(status code, client-safe message of at most MAX_MESSAGE_CHARS) for an exception;
    logs unknown ones with traceback."""
    for cls, code in ERROR_TABLE:
        if isinstance(exc, cls):
            return code, _capped(str(exc))  # SampleNotFound defines __str__ without KeyError's quotes
    ref = uuid.uuid4().hex[:12]
    log.error("internal error %s: %s", ref, exc, exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE.format(ref=ref)


def abort(context: grpc.ServicerContext, exc: Exception):
    """End the call with ``exc``'s status from the table (raises, as ``context.abort`` does)."""
    if context.code() not in (None, grpc.StatusCode.OK):
        raise exc  # already aborted further in (context.abort raises a bare Exception)
    code, message = status_for(exc)
    context.abort(code, message)


def check_request(request) -> None:
    """InvalidArgument naming the first field of ``request`` over its cap (limits.py)."""
    if isinstance(request, Message):  # not a request stream, nor raw bytes
        problem = request_problem(request)
        if problem:
            raise InvalidArgument(problem)


class ErrorInterceptor(WrappingInterceptor):
    """Applies :data:`ERROR_TABLE` to every exception a handler raises; refuses requests
    over the field caps first (innermost interceptor: after authentication)."""

    def unary(self, behavior, method):
        def wrapped(request, context):
            try:
                check_request(request)
                return behavior(request, context)
            except WouldBlock:  # an inline attempt handing over to a worker (inline.py): not an error
                raise
            except Exception as exc:  # noqa: BLE001 - mapped, never swallowed
                abort(context, exc)

        return wrapped

    def stream(self, behavior, method):
        def wrapped(request, context):
            try:
                check_request(request)
                yield from behavior(request, context)
            except Exception as exc:  # noqa: BLE001 - mapped, never swallowed
                abort(context, exc)

        return wrapped
