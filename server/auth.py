"""Bearer-token authentication as a server interceptor.

Clients send metadata ``authorization: Bearer <token>``. A missing or wrong token ends
the call with UNAUTHENTICATED before any servicer runs, and before its request is read or
parsed (the server's dispatcher asks :meth:`BearerTokenInterceptor.authorized` first): the
interceptor raises :class:`~parasal.server.errors.Unauthenticated` through the server's
one error table (errors.py), like any other domain error. The comparison is constant-time
(``hmac.compare_digest``) and the token is never logged.

Health checking and server reflection stay open: load balancers and Kubernetes probes
cannot send tokens, and neither reveals data (reflection lists the service schema, which
is the public proto anyway).
"""

from __future__ import annotations

import hmac

import grpc

from .dispatch import abort_async
from .errors import Unauthenticated, abort
from .interceptors import wrap_handler

__all__ = ["BearerTokenInterceptor", "OPEN_METHOD_PREFIXES", "DENIED_MESSAGE"]

#: What a call without the right token is told (never the token it sent).
DENIED_MESSAGE = "missing or wrong bearer token (send metadata 'authorization: Bearer <token>')"

#: Methods callable without a token.
OPEN_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str):
        if not token:
            raise ValueError("empty bearer token")
        self._expected = f"Bearer {token}".encode()

    def authorized(self, metadata) -> bool:
        """True when ``metadata`` (pairs of key, value) carries the right token."""
        presented = b""
        for key, value in metadata or ():
            if key.lower() == "authorization":
                presented = value.encode() if isinstance(value, str) else bytes(value)
                break
        return hmac.compare_digest(presented, self._expected)

    def denies(self, handler_call_details) -> bool:
        """True when this call is refused (a closed method without the right token)."""
        return not (
            handler_call_details.method.startswith(OPEN_METHOD_PREFIXES)
            or self.authorized(handler_call_details.invocation_metadata)
        )

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if not self.denies(handler_call_details):
            return handler

        # The denying handler replaces the real one, so the error interceptor (inside this
        # one) never sees it: apply the table here.
        def deny(context):
            abort(context, Unauthenticated(DENIED_MESSAGE))

        def unary(_behavior):
            return lambda _request, context: deny(context)

        def stream(_behavior):
            def denied(_request, context):
                deny(context)
                yield  # pragma: no cover - makes this a generator like the handler it replaces

            return denied

        def stream_async(_behavior):
            async def denied(_request, context):
                await abort_async(context, Unauthenticated(DENIED_MESSAGE))
                yield  # pragma: no cover - makes this an async generator like the handler it replaces

            return denied

        return wrap_handler(handler, unary=unary, stream=stream, stream_async=stream_async)
