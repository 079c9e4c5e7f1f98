"""The one error table: each domain exception -> its status code; bugs -> INTERNAL without traceback."""

import logging

import grpc
import pytest

from parasal.indexer import BundleCorrupt, CorruptSample, SampleNotFound
from parasal.server.errors import (
    DeadlineExceeded,
    ErrorInterceptor,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    status_for,
)


@pytest.mark.parametrize(
    "exc, code",
    [
        (NotFound("unknown bundle 'x'"), grpc.StatusCode.NOT_FOUND),
        (SampleNotFound("no sample with id 5"), grpc.StatusCode.NOT_FOUND),
        (InvalidArgument("k 0 outside 1..1000"), grpc.StatusCode.INVALID_ARGUMENT),
        (ResourceExhausted("pool full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (FailedPrecondition("shutting down"), grpc.StatusCode.FAILED_PRECONDITION),
        (DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (Unauthenticated("no token"), grpc.StatusCode.UNAUTHENTICATED),
        (BundleCorrupt("profiles.npy changed"), grpc.StatusCode.DATA_LOSS),
        (CorruptSample("/data/x.png", "truncated"), grpc.StatusCode.DATA_LOSS),
    ],
)
def test_domain_exceptions_map_to_their_code_with_their_message(exc, code):
    got, message = status_for(exc)
    assert got == code
    assert message == str(exc)  # SampleNotFound is a KeyError: no repr quotes


@pytest.mark.parametrize("exc", [ValueError("x"), KeyError("k"), RuntimeError("boom"), AssertionError()])
def test_anything_else_is_internal_with_a_generic_message(exc, caplog):
    with caplog.at_level(logging.ERROR, logger="parasal.server"):
        code, message = status_for(exc)
    assert code == grpc.StatusCode.INTERNAL
    assert "internal error" in message and "Traceback" not in message and "boom" not in message
    ref = message.split("reference ")[1].split(";")[0]
    assert any(ref in r.getMessage() for r in caplog.records)  # the log has the reference to match


def test_interceptor_applies_the_table_to_unary_and_streaming_calls(make_bytes_server):
    def missing(request, context):
        raise NotFound("unknown operation 'abc'")

    def bug(request, context):
        raise ZeroDivisionError("secret internals /home/x.py line 3")

    def streaming_bug(request, context):
        yield b"first"
        raise InvalidArgument("bad in the middle")

    with make_bytes_server(
        {"Missing": missing, "Bug": bug, "BugStream": streaming_bug}, interceptors=[ErrorInterceptor()]
    ) as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/test.Svc/Missing")(b"")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "abc" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/test.Svc/Bug")(b"")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in err.value.details() and "Traceback" not in err.value.details()
        stream = channel.unary_stream("/test.Svc/BugStream")(b"")
        assert next(stream) == b"first"
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
