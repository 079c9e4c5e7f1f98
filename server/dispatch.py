"""Running parasal's handlers on a ``grpc.aio`` server so that no call holds a worker thread
it is not using (issue #12, section 1).

The sync ``grpc.server`` handed every call to a pool thread as soon as its HEADERS arrived;
the thread then blocked until the request message came (16 header-only streams on one
connection stopped a 16-thread server, health included, for as long as they stayed open).
Here instead:

* every call starts on the event loop. Its request is read there, within
  ``request_timeout_s``: a request that does not arrive in time ends the call with
  DEADLINE_EXCEEDED, having held nothing but a few KB meanwhile. Each method's request may
  be at most as large as it needs (:func:`request_limits`), and a call without the right
  token is refused before its request is read at all;
* only then is a query *admitted*: at most ``max_calls`` queries are running or queued for
  the worker threads; one more is refused at once with RESOURCE_EXHAUSTED, never queued;
* response streams (WatchOperation) are async generators: they wait on the loop, not in a
  thread, count against ``max_streams`` (refused beyond it) and end OK after
  ``stream_max_s`` (the SDK then watches again);
* health and reflection are grpc's own asyncio servicers, added as they are, outside every
  limit: health answers as long as the process runs.

The handlers themselves stay sync code behind the same interceptors (request log, token,
error table), wrapped once per method when the services are added (no per-call aio
interceptor). Requests reach that chain as raw bytes and are parsed inside it, so bytes
that are not the method's message become INVALID_ARGUMENT through the error table, and a
denied call is never parsed.

Cost: a query now crosses from the loop to a worker and back (two thread wake-ups where
grpc's sync server had one), about 0.1-0.15 ms of server CPU per call on the 2-core test
machine; the asyncio server without that hop measured the same as the sync one, and reading
the request as a stream costs nothing measurable.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import NamedTuple

import grpc
from google.protobuf.message import DecodeError

from .errors import InvalidArgument, check_request, status_for
from .inline import WouldBlock, inline

__all__ = [
    "Dispatcher",
    "DispatchLimits",
    "SyncContext",
    "Abort",
    "abort_async",
    "request_limits",
    "SMALL_REQUEST_BYTES",
]

log = logging.getLogger("parasal.server")

#: Receive limit of methods whose request carries no upload (ids, names, flags): far more
#: than any of them needs, far less than the upload limit.
SMALL_REQUEST_BYTES = 64 * 1024

if sys.version_info >= (3, 11):

    async def _within(awaitable, seconds: float):
        async with asyncio.timeout(seconds):  # a timer, no extra task per call
            return await awaitable

else:  # pragma: no cover - Python 3.10
    _within = asyncio.wait_for


@dataclass(frozen=True)
class DispatchLimits:
    """What the dispatcher enforces (ServerConfig documents each)."""

    max_calls: int = 64
    max_streams: int = 1000
    request_timeout_s: float = 10.0
    stream_max_s: float = 300.0


def request_limits(services: Iterable, upload_bytes: int, small_bytes: int = SMALL_REQUEST_BYTES) -> dict[str, int]:
    """Receive limit per method (``/package.Service/Method``) of the given service
    descriptors: ``upload_bytes`` for requests that can carry bytes or repeated fields
    (images, vectors, lists), ``small_bytes`` for the rest."""
    limits = {}
    for service in services:
        for method in service.methods:
            large = _can_be_large(method.input_type, set())
            limits[f"/{service.full_name}/{method.name}"] = upload_bytes if large else small_bytes
    return limits


def _can_be_large(message, seen: set) -> bool:
    if message.full_name in seen:
        return False
    seen.add(message.full_name)
    for field in message.fields:
        if field.type == field.TYPE_BYTES or field.is_repeated:
            return True
        if field.message_type is not None and _can_be_large(field.message_type, seen):
            return True
    return False


class Abort(Exception):
    """Raised in a worker thread by :meth:`SyncContext.abort`; the call is ended on the loop."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code, self.details = code, details


class SyncContext:
    """The ``grpc.ServicerContext`` methods parasal's sync handlers and interceptors use, over
    a call's asyncio context (grpc's own ``_SyncServicerContext`` has no ``code()``)."""

    __slots__ = ("_ctx", "_code", "_details")

    def __init__(self, ctx: grpc.aio.ServicerContext):
        self._ctx = ctx
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def abort(self, code: grpc.StatusCode, details: str = ""):
        self._code, self._details = code, details
        raise Abort(code, details)

    def abort_with_status(self, status):
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code
        self._ctx.set_code(code)

    def set_details(self, details: str) -> None:
        self._details = details
        self._ctx.set_details(details)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, metadata) -> None:
        self._ctx.set_trailing_metadata(metadata)

    def invocation_metadata(self):
        return self._ctx.invocation_metadata()

    def peer(self) -> str:
        return self._ctx.peer()

    def auth_context(self):
        return self._ctx.auth_context()

    def time_remaining(self) -> float | None:
        return self._ctx.time_remaining()

    def is_active(self) -> bool:
        return not self._ctx.done()


async def abort_async(context: grpc.aio.ServicerContext, exc: BaseException):
    """End an asyncio call with ``exc``'s status from the error table (raises, as
    ``context.abort`` does); an abort already under way goes on as it is."""
    if isinstance(exc, grpc.aio.AbortError) or context.code() not in (None, grpc.StatusCode.OK):
        raise exc
    code, message = status_for(exc)
    await context.abort(code, message)


def _parse(deserialize: Callable | None, raw: bytes):
    """The request message; bytes that are not one are the client's mistake (INVALID_ARGUMENT,
    not grpc's INTERNAL), and a message over the field caps is refused like the error
    interceptor refuses it (that one sees the raw bytes here)."""
    if deserialize is None:
        return raw
    try:
        request = deserialize(raw)
    except (DecodeError, ValueError, TypeError) as exc:
        raise InvalidArgument("the request is not a valid message of this method") from exc
    check_request(request)
    return request


def _raw_unary(behavior: Callable, deserialize: Callable | None) -> Callable:
    """``behavior`` taking the raw request bytes: parsed here, inside the interceptor chain."""

    def parsed(raw, context):
        return behavior(_parse(deserialize, raw), context)

    return parsed


def _raw_stream(behavior: Callable, deserialize: Callable | None) -> Callable:
    """An async response stream taking raw bytes, with the error table applied (errors.py's
    interceptor wraps sync behaviours only)."""

    async def parsed(raw, context):
        try:
            request = _parse(deserialize, raw)
            async for response in behavior(request, context):
                yield response
        except Exception as exc:  # noqa: BLE001 - mapped, never swallowed
            await abort_async(context, exc)

    return parsed


class _Details(NamedTuple):
    """The ``grpc.HandlerCallDetails`` the sync interceptors read, built once per method."""

    method: str
    invocation_metadata: tuple = ()


class _Registrar:
    """What the generated ``add_*Servicer_to_server`` functions call, so that each method's
    handler is wrapped once on its way to the server."""

    def __init__(self, dispatcher: Dispatcher, server: grpc.aio.Server):
        self._dispatcher, self._server = dispatcher, server

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass  # the same handlers come again by name, through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self._dispatcher.register(self._server, service, handlers)


class Dispatcher:
    """Wraps each parasal method's handler, once, in an async one that reads, admits and runs
    it as the module docstring says, behind the sync interceptor chain (``interceptors``,
    outermost first). ``auth``, when given, is one of them: it decides per call, and a call
    it refuses is refused at once on the loop, before its request is read."""

    def __init__(
        self,
        interceptors: Iterable[grpc.ServerInterceptor],
        executor: Executor,
        limits: DispatchLimits,
        *,
        receive_limits: dict[str, int],
        upload_bytes: int,
        auth=None,
        inline_methods: Iterable[str] = (),
    ):
        self._interceptors = list(interceptors)
        self._inline = frozenset(inline_methods)  # "/pkg.Service/Method" tried on the loop first (inline.py)
        self._executor = executor
        self.limits = limits
        self._receive_limits = receive_limits
        self._upload_bytes = upload_bytes
        self._auth = auth
        self.calls = 0  # queries running or queued for a worker (touched on the loop only)
        self.streams = 0  # open response streams (likewise)

    def add(self, server: grpc.aio.Server, add_to_server: Callable, servicer) -> None:
        """``add_to_server(servicer, server)`` (a generated function), every handler wrapped."""
        add_to_server(servicer, _Registrar(self, server))

    def register(self, server: grpc.aio.Server, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        """Add ``service``'s handlers (method name -> handler) to ``server``, each wrapped."""
        wrapped = {name: self._wrap(f"/{service}/{name}", handler) for name, handler in handlers.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        server.add_registered_method_handlers(service, wrapped)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_streaming:
            raise TypeError(f"{method}: request streams are not dispatched (parasal has none)")
        serializer = handler.response_serializer
        if handler.unary_unary:
            behavior = _raw_unary(handler.unary_unary, handler.request_deserializer)
            raw = grpc.unary_unary_rpc_method_handler(behavior, response_serializer=serializer)
        elif inspect.isasyncgenfunction(handler.unary_stream):
            behavior = _raw_stream(handler.unary_stream, handler.request_deserializer)
            raw = grpc.unary_stream_rpc_method_handler(behavior, response_serializer=serializer)
        else:
            raise TypeError(f"{method}: response streams must be async generators (no thread per stream)")
        # Everything but the token check is the same for every call of a method: both chains
        # are built here, and each call only asks the token interceptor which one it gets.
        allowed = self._chain(raw, _Details(method), [i for i in self._interceptors if i is not self._auth])
        denied = self._chain(raw, _Details(method), self._interceptors) if self._auth is not None else None
        limit = self._receive_limits.get(method, self._upload_bytes)
        if handler.unary_unary:
            # Served as a request *stream*: grpc then starts it when the HEADERS arrive, so
            # reading the request can time out (a unary handler starts once the message is in).
            quick = method in self._inline
            run = self._unary(method, limit, allowed.unary_unary, denied and denied.unary_unary, quick)
            return grpc.stream_unary_rpc_method_handler(run, response_serializer=serializer)
        run = self._stream(method, limit, allowed.unary_stream, denied and denied.unary_stream)
        return grpc.stream_stream_rpc_method_handler(run, response_serializer=serializer)

    @staticmethod
    def _chain(handler: grpc.RpcMethodHandler, details: _Details, interceptors: list) -> grpc.RpcMethodHandler:
        for interceptor in reversed(interceptors):
            handler = interceptor.intercept_service(lambda _details, h=handler: h, details)
        return handler

    def _denied(self, context) -> bool:
        return self._auth is not None and not self._auth.authorized(context.invocation_metadata())

    def _unary(self, method: str, limit: int, behavior: Callable, refuse: Callable | None, quick: bool = False):
        executor = self._executor

        async def unary(request_iterator, context):
            sync_context = SyncContext(context)
            if refuse is not None and self._denied(context):  # refused: nothing to read, queue or parse
                return await _settle(context, refuse, None, sync_context)
            raw = await self._read(request_iterator, context, method, limit)
            # Answered here when nothing in it waits (inline.py); else on a worker below. Uploads
            # are not even parsed here: they would hand over at their decode anyway.
            if quick and len(raw) <= SMALL_REQUEST_BYTES:
                try:
                    with inline():  # synchronous: no other coroutine runs while the flag is set
                        return behavior(raw, sync_context)
                except WouldBlock:
                    sync_context = SyncContext(context)  # the worker run starts from a clean context
                except Abort as exc:
                    await context.abort(exc.code, exc.details)
            if self.calls >= self.limits.max_calls:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server busy: {self.calls} queries running or queued (the limit); retry shortly",
                )
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            self.calls += 1  # until the worker is done with it (see _finished)
            try:
                work = executor.submit(_work, loop, done, self._finished, behavior, raw, sync_context)
            except BaseException:
                self.calls -= 1
                raise
            try:
                return await done
            except asyncio.CancelledError:  # the client gave up (deadline, cancel)
                if work.cancel():  # still queued: it never runs, so its place is free now
                    self.calls -= 1
                raise
            except Abort as exc:
                await context.abort(exc.code, exc.details)

        return unary

    def _finished(self, done: asyncio.Future, result, error: BaseException | None) -> None:
        """On the loop, when a worker has run a query: its place is free; the call gets its
        outcome (unless the client gave up meanwhile)."""
        self.calls -= 1
        if done.cancelled():
            return
        if error is None:
            done.set_result(result)
        else:
            done.set_exception(error)

    def _stream(self, method: str, limit: int, behavior: Callable, refuse: Callable | None):
        async def stream(request_iterator, context):
            if refuse is not None and self._denied(context):  # refused at once: nothing read or counted
                return await self._pump(refuse(None, context), context)
            raw = await self._read(request_iterator, context, method, limit)
            if self.streams >= self.limits.max_streams:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self.streams} streams open (the limit); retry shortly"
                )
            self.streams += 1
            try:
                await self._pump(behavior(raw, context), context)
            finally:
                self.streams -= 1

        return stream

    async def _pump(self, responses, context) -> None:
        """Write ``responses`` (an async generator) until it ends or ``stream_max_s`` passes:
        the stream then ends OK without a terminal state, and the SDK watches again."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.limits.stream_max_s
        try:
            while True:
                try:
                    response = await _within(responses.__anext__(), end - loop.time())
                except (StopAsyncIteration, asyncio.TimeoutError):
                    return
                await context.write(response)
        finally:
            await responses.aclose()

    async def _read(self, request_iterator, context, method: str, limit: int) -> bytes:
        """The call's one request message, raw, within the request timeout and ``limit``."""
        timeout = self.limits.request_timeout_s
        try:
            raw = await _within(request_iterator.__anext__(), timeout)
        except asyncio.TimeoutError:
            log.info("%s: no request within %gs from %s; ended", method, timeout, context.peer())
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"the request did not arrive within {timeout:g} s")
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call sent no request message")
        size = len(raw)
        if size > limit:
            # Drop the bytes before raising: the abort's traceback keeps this frame (and so a
            # refused 60 MB body) alive until the cycle collector runs.
            del raw
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {size} bytes is larger than this method accepts ({limit} bytes)",
            )
        return raw


def _work(loop, done, finished, behavior: Callable, raw: bytes, sync_context: SyncContext) -> None:
    """In a worker thread: run the query and hand its outcome back to the loop (one wake-up;
    cheaper than chaining a concurrent future to an asyncio one)."""
    try:
        result, error = behavior(raw, sync_context), None
    except BaseException as exc:  # noqa: BLE001 - handed to the call, which re-raises it
        result, error = None, exc
    loop.call_soon_threadsafe(finished, done, result, error)


async def _settle(context, behavior: Callable, request, sync_context: SyncContext):
    """Run a quick sync behaviour (a refusal) on the loop and end the call with its outcome."""
    try:
        return behavior(request, sync_context)
    except Abort as exc:
        await context.abort(exc.code, exc.details)
