"""The status-code -> exception table, and the mapping context manager."""

from __future__ import annotations

import pickle

import grpc
import pytest

from parasal import client as pc
from parasal.client import errors

EXPECTED = {
    grpc.StatusCode.CANCELLED: pc.Cancelled,
    grpc.StatusCode.UNKNOWN: pc.Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: pc.InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: pc.DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: pc.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: pc.AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: pc.PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: pc.ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: pc.FailedPrecondition,
    grpc.StatusCode.ABORTED: pc.Aborted,
    grpc.StatusCode.OUT_OF_RANGE: pc.OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: pc.Unimplemented,
    grpc.StatusCode.INTERNAL: pc.Internal,
    grpc.StatusCode.UNAVAILABLE: pc.Unavailable,
    grpc.StatusCode.DATA_LOSS: pc.DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: pc.Unauthenticated,
}


class FakeRpcError(grpc.RpcError, grpc.Call):
    """What a failed call raises: an RpcError that is also a Call (code(), details())."""

    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details

    # The rest of grpc.Call / grpc.RpcContext, unused here.
    def initial_metadata(self):
        return None

    def trailing_metadata(self):
        return None

    def is_active(self):
        return False

    def time_remaining(self):
        return None

    def cancel(self):
        return False

    def add_callback(self, callback):
        return False


def test_every_error_code_has_its_exception():
    assert set(EXPECTED) == {c for c in grpc.StatusCode if c != grpc.StatusCode.OK}
    for code, cls in EXPECTED.items():
        with pytest.raises(cls) as info:
            with errors.map_grpc_errors():
                raise FakeRpcError(code, f"details of {code.name}")
        exc = info.value
        assert type(exc) is cls and isinstance(exc, pc.ParasalError)
        assert exc.code is code and exc.details == f"details of {code.name}"
        assert str(exc) == f"details of {code.name}"
        assert isinstance(exc.__cause__, grpc.RpcError)  # the original stays reachable
        assert errors.error_for_status(code).code is code


def test_python_families_and_defaults():
    assert isinstance(pc.InvalidArgument("x"), ValueError)
    assert isinstance(pc.DeadlineExceeded("x"), TimeoutError)
    assert isinstance(pc.NotFound("x"), LookupError)
    assert pc.InvalidArgument("x").code is grpc.StatusCode.INVALID_ARGUMENT
    assert str(pc.Unavailable()) == "UNAVAILABLE"
    timeout = pc.OperationTimeout("late")
    assert isinstance(timeout, TimeoutError) and isinstance(timeout, pc.DeadlineExceeded)
    assert isinstance(timeout, pc.OperationError) and timeout.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert pc.OperationCancelled().code is grpc.StatusCode.CANCELLED
    assert pc.OperationAborted().code is grpc.StatusCode.ABORTED
    failed = pc.OperationFailed("bad label", grpc.StatusCode.INVALID_ARGUMENT)
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT and failed.operation is None
    for cls in (pc.OperationFailed, pc.OperationCancelled, pc.OperationAborted, pc.OperationTimeout):
        assert issubclass(cls, pc.ParasalError)


def test_errors_pickle_with_their_code():
    exc = pickle.loads(pickle.dumps(pc.NotFound("no sample 9")))
    assert type(exc) is pc.NotFound and exc.code is grpc.StatusCode.NOT_FOUND and exc.details == "no sample 9"


def test_non_grpc_errors_pass_through_and_odd_rpc_errors_are_unknown():
    with pytest.raises(KeyError):
        with errors.map_grpc_errors():
            raise KeyError("x")
    with pytest.raises(pc.Unknown) as info:
        with errors.map_grpc_errors():
            raise grpc.RpcError()  # no code() or details()
    assert info.value.details == ""


def test_status_code_numbers():
    assert errors.status_code_from_number(3) is grpc.StatusCode.INVALID_ARGUMENT
    assert errors.status_code_from_number(16) is grpc.StatusCode.UNAUTHENTICATED
    assert errors.status_code_from_number(999) is grpc.StatusCode.UNKNOWN
