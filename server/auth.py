"""Bearer-token authentication as a server interceptor.

Clients send metadata ``authorization: Bearer <token>``. A missing or wrong token ends
the call with UNAUTHENTICATED before any servicer runs. The comparison is constant-time
(``hmac.compare_digest``) and the token is never logged.

Health checking and server reflection stay open: load balancers and Kubernetes probes
cannot send tokens, and neither reveals data (reflection lists the service schema, which
is the public proto anyway).
"""

from __future__ import annotations

import hmac

import grpc

from .interceptors import wrap_handler

__all__ = ["BearerTokenInterceptor", "OPEN_METHOD_PREFIXES"]

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

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler_call_details.method.startswith(OPEN_METHOD_PREFIXES) or self.authorized(
                handler_call_details.invocation_metadata):
            return handler

        def deny(context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token "
                          "(send metadata 'authorization: Bearer <token>')")

        def unary(_behavior):
            return lambda _request, context: deny(context)

        def stream(_behavior):
            def denied(_request, context):
                deny(context)
                yield  # pragma: no cover - makes this a generator like the handler it replaces
            return denied

        return wrap_handler(handler, unary=unary, stream=stream)
