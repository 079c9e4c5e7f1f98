"""`OperationHandle`: follow, wait for and cancel one long-running evaluation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from parasal.v1 import saliency_pb2 as pb

from . import _convert
from .errors import (
    DeadlineExceeded,
    Internal,
    OperationAborted,
    OperationCancelled,
    OperationFailed,
    OperationTimeout,
    Unavailable,
    map_grpc_errors,
)
from .types import FinetuneResult, Operation, PruningResult

if TYPE_CHECKING:
    from ._client import Client

# When a watch stream ends before a terminal state (the server restarting), wait this
# long before watching again.
_REWATCH_DELAY = 0.5
#: Every WatchOperation stream carries a deadline of at most this many seconds (the server
#: also ends streams itself, after its --stream-max); the wait then goes on with a new one.
WATCH_STREAM_S = 60.0
#: While the server cannot be reached (a restart, the network), keep trying this long
#: before raising `Unavailable`, however long the overall timeout.
RECONNECT_S = 60.0


class OperationHandle:
    """A started operation. `result()` waits for it; iterating yields progress snapshots.

    handle = client.start_finetune_evaluation(sample_id=7)
    for op in tqdm(handle):          # Operation snapshots until a terminal state
        ...
    result = handle.result()         # FinetuneResult, or a typed error
    """

    def __init__(self, client: Client, operation: Operation | str) -> None:
        self._client = client
        if isinstance(operation, Operation):
            self._id = operation.id
            self._last: Operation | None = operation
        else:
            self._id = str(operation)
            self._last = None

    @property
    def id(self) -> str:
        return self._id

    @property
    def operation(self) -> Operation | None:
        """The latest snapshot seen (None before the first refresh of a handle made from an id)."""
        return self._last

    def __repr__(self) -> str:
        state = self._last.state if self._last is not None else "?"
        return f"OperationHandle(id={self._id!r}, state={state!r})"

    def refresh(self) -> Operation:
        """The operation now (GetOperation)."""
        self._last = self._client.operation(self._id)
        return self._last

    def cancel(self) -> Operation:
        """Asks the server to stop it; returns the operation as the server then reports it."""
        self._last = self._client.cancel(self._id)
        return self._last

    def __iter__(self) -> Iterator[Operation]:
        return self.watch()

    def watch(self, timeout: float | None = None) -> Iterator[Operation]:
        """Yields a snapshot on every state or progress change, ending after a terminal one.

        Each stream has a deadline (`WATCH_STREAM_S`). A stream that ends early, or a server
        that is briefly unreachable (a restart), is followed by looking again and watching
        again; `Unavailable` is raised only after `RECONNECT_S` without contact. Raises
        `OperationTimeout` (a `TimeoutError`) when `timeout` seconds pass first.
        """
        if self._last is not None and self._last.done:
            yield self._last
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        contact = time.monotonic()  # the last time the server answered
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise self._timeout_error(timeout)
            try:
                for op in self._watch_once(WATCH_STREAM_S if remaining is None else min(remaining, WATCH_STREAM_S)):
                    contact = time.monotonic()
                    yield op
                    if op.done:
                        return
                op = self.refresh()  # the stream ended without a terminal state: look once
                contact = time.monotonic()
                if op.done:
                    yield op
                    return
            except DeadlineExceeded as exc:  # this stream's own deadline, unless the wait's passed
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timeout_error(timeout) from exc
                continue  # a stream that lasted its deadline: watch again at once
            except Unavailable:
                if time.monotonic() - contact > RECONNECT_S:
                    raise
            pause = _REWATCH_DELAY if deadline is None else min(_REWATCH_DELAY, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def _watch_once(self, stream_s: float) -> Iterator[Operation]:
        """One WatchOperation stream with a deadline of ``stream_s`` seconds."""
        stream = self._client._operations_stub.WatchOperation(
            pb.WatchOperationRequest(id=self._id), timeout=stream_s, metadata=self._client._metadata
        )
        try:
            with map_grpc_errors():
                for response in stream:
                    op = _convert.operation_from_proto(response.operation)
                    self._last = op
                    yield op
        finally:
            stream.cancel()  # no-op once finished; stops the RPC if the caller stops early

    def result(self, timeout: float | None = None) -> FinetuneResult | PruningResult:
        """Waits (streaming WatchOperation) and returns the result.

        Raises `OperationFailed` (with the operation's own error code and message),
        `OperationCancelled`, `OperationAborted`, or `OperationTimeout` (a `TimeoutError`;
        the operation keeps running) when `timeout` seconds pass first. `timeout=None`
        waits as long as it takes, over streams that each carry a deadline, watching again
        after a server restart (`Unavailable` only after `RECONNECT_S` without contact).
        """
        op = self._last
        if op is None or not op.done:
            for op in self.watch(timeout):  # noqa: B007 - the last snapshot is the outcome
                pass
        return _outcome(op)

    def _timeout_error(self, timeout) -> OperationTimeout:
        state = self._last.state if self._last is not None else "unknown"
        return OperationTimeout(f"operation {self._id} is still {state} after {timeout:g} s", operation=self._last)


def _outcome(op: Operation) -> FinetuneResult | PruningResult:
    if op.state == "succeeded":
        if op.result is None:
            raise Internal(f"operation {op.id} succeeded without a result")
        return op.result
    if op.state == "failed":
        if op.error is not None:
            raise OperationFailed(op.error.message or op.message, op.error.code, operation=op)
        raise OperationFailed(op.message or f"operation {op.id} failed", operation=op)
    if op.state == "cancelled":
        raise OperationCancelled(f"operation {op.id} was cancelled", operation=op)
    if op.state == "aborted":
        details = op.error.message if op.error is not None and op.error.message else ""
        raise OperationAborted(
            details or f"operation {op.id} was aborted: the server stopped while it was running", operation=op
        )
    raise Internal(f"operation {op.id} ended in state {op.state!r}")
