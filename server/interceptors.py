"""Wrapping gRPC method handlers, and the request-log interceptor.

grpc's ``ServerInterceptor`` hands us a method handler of one of four shapes; wrapping
its behaviour means rebuilding a handler of the same shape. :func:`wrap_handler` does that
once, so the error table (errors.py), authentication (auth.py) and logging only say what
happens around a call.

Response streams written as async generators (WatchOperation: it waits on the server's
event loop, see dispatch.py) are wrapped by :meth:`WrappingInterceptor.stream_async`;
dispatch.py applies the error table to them itself.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable

import grpc

from .inline import WouldBlock

__all__ = ["wrap_handler", "is_async_stream", "WrappingInterceptor", "LoggingInterceptor"]

log = logging.getLogger("parasal.server.requests")

Behavior = Callable  # (request_or_iterator, context) -> response or iterator of responses


def wrap_handler(
    handler: grpc.RpcMethodHandler | None,
    *,
    unary: Callable[[Behavior], Behavior],
    stream: Callable[[Behavior], Behavior],
    stream_async: Callable[[Behavior], Behavior] | None = None,
) -> grpc.RpcMethodHandler | None:
    """Same handler with its behaviour wrapped: ``unary`` for a single response, ``stream``
    for a response stream (the wrapper must then return an iterator), ``stream_async`` for
    a response stream that is an async generator function (the wrapper must be one too;
    None leaves such a behaviour as it is)."""
    if handler is None:
        return None
    if handler.unary_stream and is_async_stream(handler.unary_stream):
        stream = stream_async or (lambda behavior: behavior)
    kwargs = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **kwargs)


def is_async_stream(behavior) -> bool:
    """True for a response stream written as an async generator function (run on the loop)."""
    return inspect.isasyncgenfunction(behavior)


class WrappingInterceptor(grpc.ServerInterceptor):
    """Wraps every handler with :meth:`unary` / :meth:`stream` (given the method name).

    A method's handler is the same object call after call, so its wrapped version is
    built once and reused (rebuilding it per call was a measurable share of a quick rpc)."""

    def __init__(self):
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def unary(self, behavior: Behavior, method: str) -> Behavior:  # pragma: no cover - abstract
        raise NotImplementedError

    def stream(self, behavior: Behavior, method: str) -> Behavior:  # pragma: no cover - abstract
        raise NotImplementedError

    def stream_async(self, behavior: Behavior, method: str) -> Behavior:
        """Async response streams pass unchanged unless a subclass says otherwise."""
        return behavior

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = wrap_handler(
            handler,
            unary=lambda b: self.unary(b, method),
            stream=lambda b: self.stream(b, method),
            stream_async=lambda b: self.stream_async(b, method),
        )
        self._cache[method] = (handler, wrapped)
        return wrapped


class LoggingInterceptor(WrappingInterceptor):
    """One log line per call: method, status code, latency in ms, peer. Never the metadata
    (it may carry the bearer token) and never the payload."""

    @staticmethod
    def _finish(method, context, start, failed):
        if not log.isEnabledFor(logging.INFO):
            return
        code = context.code() or (grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK)
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        log.info("%s %s %.1fms %s", method, name, (time.perf_counter() - start) * 1e3, context.peer())

    def unary(self, behavior, method):
        def wrapped(request, context):
            start, failed = time.perf_counter(), True
            try:
                response = behavior(request, context)
                failed = False
                return response
            except WouldBlock:  # handed over to a worker (inline.py): that run logs the call
                start = None
                raise
            finally:
                if start is not None:
                    self._finish(method, context, start, failed)

        return wrapped

    def stream(self, behavior, method):
        def wrapped(request, context):
            start, failed = time.perf_counter(), True
            try:
                yield from behavior(request, context)
                failed = False
            finally:
                self._finish(method, context, start, failed)

        return wrapped

    def stream_async(self, behavior, method):
        async def wrapped(request, context):
            start, failed = time.perf_counter(), True
            try:
                async for response in behavior(request, context):
                    yield response
                failed = False
            finally:
                self._finish(method, context, start, failed)

        return wrapped
