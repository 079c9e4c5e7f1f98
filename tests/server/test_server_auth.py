"""Bearer-token interceptor: constant-time check, health/reflection open, token never logged."""

import logging

import grpc
import pytest

from parasal.server.auth import DENIED_MESSAGE, BearerTokenInterceptor
from parasal.server.interceptors import LoggingInterceptor

TOKEN = "s3cret-token"


def test_authorized_needs_the_exact_bearer_value():
    auth = BearerTokenInterceptor(TOKEN)
    assert auth.authorized((("authorization", f"Bearer {TOKEN}"),))
    assert auth.authorized((("x-other", "1"), ("Authorization", f"Bearer {TOKEN}")))
    for metadata in [
        (),
        None,
        (("authorization", TOKEN),),
        (("authorization", f"Bearer {TOKEN}x"),),
        (("authorization", "Bearer "),),
        (("authorization", f"bearer{TOKEN}"),),
    ]:
        assert not auth.authorized(metadata)
    with pytest.raises(ValueError):
        BearerTokenInterceptor("")


def test_calls_without_the_token_are_unauthenticated_and_open_methods_stay_open(make_bytes_server, caplog):
    def echo(request, context):
        return request

    def echo_stream(request, context):
        yield request

    interceptors = [LoggingInterceptor(), BearerTokenInterceptor(TOKEN)]
    with caplog.at_level(logging.INFO, logger="parasal.server.requests"):
        with (
            make_bytes_server({"Echo": echo, "EchoStream": echo_stream}, interceptors) as channel,
            make_bytes_server({"Check": echo}, interceptors, service="grpc.health.v1.Health") as health,
        ):
            call = channel.unary_unary("/test.Svc/Echo")
            for metadata in (None, (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as err:
                    call(b"x", metadata=metadata)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert err.value.details() == DENIED_MESSAGE  # through the error table, as given
                with pytest.raises(grpc.RpcError) as err:
                    list(channel.unary_stream("/test.Svc/EchoStream")(b"x", metadata=metadata))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            good = (("authorization", f"Bearer {TOKEN}"),)
            assert call(b"hi", metadata=good) == b"hi"
            assert list(channel.unary_stream("/test.Svc/EchoStream")(b"yo", metadata=good)) == [b"yo"]
            assert health.unary_unary("/grpc.health.v1.Health/Check")(b"ok") == b"ok"  # no token needed
    lines = [r.getMessage() for r in caplog.records]
    assert any("/test.Svc/Echo UNAUTHENTICATED" in line for line in lines)
    assert any("/test.Svc/Echo OK" in line and "ms" in line for line in lines)
    assert not any(TOKEN in line for line in lines)
