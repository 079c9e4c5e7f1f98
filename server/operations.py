"""Long-running operations: a bounded pool of worker threads over the operation store.

An operation is a *job* (a callable doing the work, see evaluations.py) plus its record, a
``parasal.v1.Operation`` message. Records of live operations are kept in memory and
written through to the store on every state change and on progress (throttled: when
``progress_interval_s`` passed or progress advanced by ``PROGRESS_STEP``); watchers wait
on one condition variable and see each recorded change; :meth:`Operations.watch_async`
waits on the server's event loop instead, holding no thread.

Limits: at most ``max_operations`` operations are pending or running at once, and at most
``max_per_caller`` of them for one caller (the servicer names the caller with
:func:`acting_for`: its client address), so one caller cannot fill the pool; one more is
refused with :class:`ResourceExhausted`. ``operation_workers`` threads run them in start
order.

Cancelling sets the operation's stop flag, which the job polls (the evaluations'
``should_stop``); the job then raises ``Cancelled`` and the record reads CANCELLED. A
pending operation is cancelled at once. Shutting down sets every stop flag too, but the
records then read ABORTED ("the server stopped while it was running"), as do records a
killed process left behind, which :class:`Operations` marks on start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from parasal.core import Cancelled
from parasal.v1 import saliency_pb2 as pb

from .conversions import timestamp
from .errors import FailedPrecondition, NotFound, ResourceExhausted, shown, status_for
from .store import (
    ABORTED_CODE,
    ABORTED_MESSAGE,
    TERMINAL_STATES,
    OperationStore,
    aborted_message,
    new_operation_id,
)

__all__ = ["Operations", "Job", "Progress", "StopFlag", "TERMINAL_STATES", "acting_for"]

log = logging.getLogger("parasal.server.operations")

Progress = Callable[[float, str], None]
StopFlag = Callable[[], bool]
#: job(progress, should_stop) -> the result message (FinetuneEvaluationResult or PruningEvaluationResult).
Job = Callable[[Progress, StopFlag], object]

#: Progress recorded at least at every this much advance, however quick the job.
PROGRESS_STEP = 0.1
_RESULT_FIELD = {pb.FinetuneEvaluationResult: "finetune", pb.PruningEvaluationResult: "pruning"}
_RESULT_FIELD[pb.ExperimentResult] = "experiment"
_RESULT_FIELD[pb.SuppressionResult] = "suppression"
#: Who starts operations in this context ("" = nobody in particular: no per-caller limit).
_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("parasal_operation_caller", default="")


@contextlib.contextmanager
def acting_for(caller: str):
    """Operations started inside this block count against ``caller``'s share of the pool."""
    token = _CALLER.set(caller)
    try:
        yield
    finally:
        _CALLER.reset(token)


@dataclass
class _Live:
    op: pb.Operation
    stop: threading.Event = field(default_factory=threading.Event)
    future: Future | None = None
    last_write: float = 0.0
    caller: str = ""


class Operations:
    def __init__(
        self,
        store: OperationStore,
        *,
        max_operations: int = 4,
        max_per_caller: int | None = None,
        workers: int = 1,
        progress_interval_s: float = 0.2,
        max_stored: int = 10_000,
    ):
        self.store = store
        self.max_operations = max_operations
        self.max_per_caller = max_operations if max_per_caller is None else max_per_caller
        self.progress_interval_s = progress_interval_s
        aborted = store.abort_unfinished()
        if aborted:
            log.warning(
                "marked %d operation(s) left running by a previous server ABORTED: %s", len(aborted), ", ".join(aborted)
            )
        store.prune(max_stored)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._live: dict[str, _Live] = {}
        # Watchers on an event loop: each (loop, event) is set on every recorded change.
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._stopping = False
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parasal-op")

    # -- starting ----------------------------------------------------------------------

    def start(self, kind: int, bundle: str, job: Job) -> pb.Operation:
        """Record a PENDING operation and queue ``job``; ResourceExhausted when the pool is full."""
        with self._lock:
            if self._stopping:
                raise FailedPrecondition("the server is shutting down; no new operations")
            self._check_room(_CALLER.get())
            now = timestamp()
            op = pb.Operation(
                id=new_operation_id(),
                kind=kind,
                state=pb.OPERATION_STATE_PENDING,
                progress=0.0,
                message="queued",
                bundle=bundle,
                created_at=now,
                updated_at=now,
            )
            live = _Live(op, caller=_CALLER.get())
            self._record(live)
            self._live[op.id] = live
            live.future = self._executor.submit(self._run, live, job)
            return _copy(op)

    def _check_room(self, caller: str) -> None:
        """ResourceExhausted when the pool, or ``caller``'s share of it, is full (hold the lock)."""
        if len(self._live) >= self.max_operations:
            raise ResourceExhausted(
                f"{len(self._live)} operations are already pending or running "
                f"(limit {self.max_operations}); wait for one to finish or cancel one"
            )
        mine = sum(1 for live in self._live.values() if caller and live.caller == caller)
        if caller and mine >= self.max_per_caller:
            raise ResourceExhausted(
                f"{mine} operations of this caller ({caller}) are already pending or running "
                f"(limit {self.max_per_caller} per caller); wait for one to finish or cancel one"
            )

    def _run(self, live: _Live, job: Job) -> None:
        with self._lock:
            if live.op.state != pb.OPERATION_STATE_PENDING:
                return  # cancelled or aborted while queued
            self._update(live, state=pb.OPERATION_STATE_RUNNING, message="started")

        def progress(fraction: float, message: str) -> None:
            fraction = min(max(float(fraction), 0.0), 1.0)
            with self._lock:
                # Record when enough time passed or enough progress was made, so a slow job
                # still reports often and a quick one still shows a few steps.
                if (
                    time.monotonic() - live.last_write >= self.progress_interval_s
                    or fraction - live.op.progress >= PROGRESS_STEP
                ):
                    self._update(live, progress=fraction, message=message)

        try:
            result = job(progress, live.stop.is_set)
        except Cancelled:
            self._finish(live, *self._stopped_state())
        except Exception as exc:  # noqa: BLE001 - recorded on the operation, logged by status_for
            if live.stop.is_set():  # asked to stop: whatever broke on the way out is moot
                self._finish(live, *self._stopped_state())
                return
            code, message = status_for(exc)
            self._finish(
                live, pb.OPERATION_STATE_FAILED, message, pb.OperationError(code=code.value[0], message=message)
            )
        else:

            def set_result(op):
                getattr(op, _RESULT_FIELD[type(result)]).CopyFrom(result)

            self._finish(live, pb.OPERATION_STATE_SUCCEEDED, "done", None, progress=1.0, extra=set_result)

    def _stopped_state(self) -> tuple:
        if self._stopping:
            return (
                pb.OPERATION_STATE_ABORTED,
                ABORTED_MESSAGE,
                pb.OperationError(code=ABORTED_CODE, message=ABORTED_MESSAGE),
            )
        return pb.OPERATION_STATE_CANCELLED, "cancelled", None

    def _finish(
        self,
        live: _Live,
        state: int,
        message: str,
        error: pb.OperationError | None,
        *,
        progress: float | None = None,
        extra: Callable[[pb.Operation], None] | None = None,
    ) -> None:
        with self._lock:
            if live.op.state in TERMINAL_STATES:
                return
            if extra is not None:
                extra(live.op)
            if error is not None:
                live.op.error.CopyFrom(error)
            self._update(live, state=state, message=message, progress=progress)
            self._live.pop(live.op.id, None)
            log.info("operation %s %s: %s", live.op.id, pb.OperationState.Name(state), message)

    # -- recording (hold self._lock) -----------------------------------------------------

    def _update(
        self, live: _Live, *, state: int | None = None, progress: float | None = None, message: str | None = None
    ) -> None:
        if state is not None:
            live.op.state = state
        if progress is not None:
            live.op.progress = progress
        if message is not None:
            live.op.message = message
        live.op.updated_at.CopyFrom(timestamp())
        self._record(live)

    def _record(self, live: _Live) -> None:
        if not self._closed:
            self.store.put(live.op)
        live.last_write = time.monotonic()
        self._changed.notify_all()
        self._wake_async()

    def _wake_async(self) -> None:
        for loop, event in self._async_waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: the server has stopped
                pass

    # -- reading -----------------------------------------------------------------------

    def get(self, op_id: str) -> pb.Operation:
        with self._lock:
            return self._get(op_id)

    def _get(self, op_id: str) -> pb.Operation:
        live = self._live.get(op_id)
        if live is not None:
            return _copy(live.op)
        op = self.store.get(op_id) if op_id and not self._closed else None
        if op is None:
            raise NotFound(f"unknown operation {shown(op_id)}")
        return op

    def list(self, page_size: int = 100, state: int = pb.OPERATION_STATE_UNSPECIFIED) -> list[pb.Operation]:
        with self._lock:
            ops = [] if self._closed else self.store.list(page_size, state)
            return [_copy(self._live[op.id].op) if op.id in self._live else op for op in ops]

    def cancel(self, op_id: str) -> pb.Operation:
        """Ask an operation to stop; finished ones come back unchanged."""
        with self._lock:
            live = self._live.get(op_id)
            if live is None:
                return self._get(op_id)
            live.stop.set()
            if live.op.state == pb.OPERATION_STATE_PENDING:
                live.future.cancel()
                self._update(live, state=pb.OPERATION_STATE_CANCELLED, message="cancelled before it started")
                self._live.pop(op_id, None)
            else:
                self._update(live, message="cancelling")
            return _copy(live.op)

    def watch(
        self, op_id: str, is_active: Callable[[], bool] = lambda: True, poll_s: float = 1.0
    ) -> Iterator[pb.Operation]:
        """The operation now and after each recorded change, until a terminal state (or until
        ``is_active()`` turns false: the client went away)."""
        sent = None
        while True:
            with self._changed:
                op = self._get(op_id)
                while op.SerializeToString(deterministic=True) == sent and is_active() and not self._closed:
                    self._changed.wait(poll_s)
                    op = self._get(op_id)
            if not is_active():
                return
            sent = op.SerializeToString(deterministic=True)
            yield op
            if op.state in TERMINAL_STATES or self._closed:
                return

    async def watch_async(self, op_id: str, poll_s: float = 5.0) -> AsyncIterator[pb.Operation]:
        """:meth:`watch` for an event loop: the same snapshots, waiting without a thread. The
        caller bounds how long it lasts (the server ends streams after ``stream_max_s``)."""
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._async_waiters.add(entry)
        try:
            sent = None
            while True:
                event.clear()
                with self._lock:  # writers hold it around one store put: a short wait
                    op = self._get(op_id)
                    closed = self._closed
                data = op.SerializeToString(deterministic=True)
                if data != sent:
                    sent = data
                    yield op
                if op.state in TERMINAL_STATES or closed:
                    return
                try:
                    await asyncio.wait_for(event.wait(), poll_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            with self._lock:
                self._async_waiters.discard(entry)

    def wake(self) -> None:
        """Wake every watcher (e.g. because a client cancelled its watch)."""
        with self._changed:
            self._changed.notify_all()

    # -- shutting down -------------------------------------------------------------------

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every operation: each job is asked to stop and recorded ABORTED when it does;
        pending ones, and those still going after ``timeout`` seconds, are recorded ABORTED
        at once. Reading keeps working until :meth:`close`."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            for live in list(self._live.values()):
                live.stop.set()
                if live.op.state == pb.OPERATION_STATE_PENDING and live.future.cancel():
                    self._abort(live)
            running = list(self._live.values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for live in running:
            try:
                live.future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - timeouts; the job's own errors were recorded by _run
                pass
        with self._lock:
            for live in list(self._live.values()):
                self._abort(live)

    def close(self) -> None:
        """Shut down (if not yet) and close the store; watchers end."""
        self.shutdown(timeout=0.0)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
            self._wake_async()
            self.store.close()

    def _abort(self, live: _Live) -> None:
        message = aborted_message(live.op.state)  # a pending one never ran: say so
        live.op.error.CopyFrom(pb.OperationError(code=ABORTED_CODE, message=message))
        self._update(live, state=pb.OPERATION_STATE_ABORTED, message=message)
        self._live.pop(live.op.id, None)


def _copy(op: pb.Operation) -> pb.Operation:
    out = pb.Operation()
    out.CopyFrom(op)
    return out
