"""Long-running operations: a bounded pool of worker threads over the operation store.

An operation is a *job* (a callable doing the work, see evaluations.py) plus its record, a
``parasal.v1.Operation`` message. Records of live operations are kept in memory and
written through to the store on every state change and on progress (throttled: when
``progress_interval_s`` passed or progress advanced by ``PROGRESS_STEP``); watchers wait
on one condition variable and see each recorded change.

Limits: at most ``max_operations`` operations are pending or running at once; one more is
refused with :class:`ResourceExhausted`. ``operation_workers`` threads run them in start
order.

Cancelling sets the operation's stop flag, which the job polls (the evaluations'
``should_stop``); the job then raises ``Cancelled`` and the record reads CANCELLED. A
pending operation is cancelled at once. Shutting down sets every stop flag too, but the
records then read ABORTED ("the server stopped while it was running"), as do records a
killed process left behind, which :class:`Operations` marks on start-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from parasal.core import Cancelled
from parasal.v1 import saliency_pb2 as pb

from .conversions import timestamp
from .errors import FailedPrecondition, NotFound, ResourceExhausted, status_for
from .store import ABORTED_CODE, ABORTED_MESSAGE, TERMINAL_STATES, OperationStore, new_operation_id

__all__ = ["Operations", "Job", "Progress", "StopFlag", "TERMINAL_STATES"]

log = logging.getLogger("parasal.server.operations")

Progress = Callable[[float, str], None]
StopFlag = Callable[[], bool]
#: job(progress, should_stop) -> the result message (FinetuneEvaluationResult or PruningEvaluationResult).
Job = Callable[[Progress, StopFlag], object]

#: Progress recorded at least at every this much advance, however quick the job.
PROGRESS_STEP = 0.1
_RESULT_FIELD = {pb.FinetuneEvaluationResult: "finetune", pb.PruningEvaluationResult: "pruning"}


@dataclass
class _Live:
    op: pb.Operation
    stop: threading.Event = field(default_factory=threading.Event)
    future: Future | None = None
    last_write: float = 0.0


class Operations:
    def __init__(
        self,
        store: OperationStore,
        *,
        max_operations: int = 4,
        workers: int = 1,
        progress_interval_s: float = 0.2,
        max_stored: int = 10_000,
    ):
        self.store = store
        self.max_operations = max_operations
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
        self._stopping = False
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parasal-op")

    # -- starting ----------------------------------------------------------------------

    def start(self, kind: int, bundle: str, job: Job) -> pb.Operation:
        """Record a PENDING operation and queue ``job``; ResourceExhausted when the pool is full."""
        with self._lock:
            if self._stopping:
                raise FailedPrecondition("the server is shutting down; no new operations")
            if len(self._live) >= self.max_operations:
                raise ResourceExhausted(
                    f"{len(self._live)} operations are already pending or running "
                    f"(limit {self.max_operations}); wait for one to finish or cancel one"
                )
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
            live = _Live(op)
            self._record(live)
            self._live[op.id] = live
            live.future = self._executor.submit(self._run, live, job)
            return _copy(op)

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
            raise NotFound(f"unknown operation {op_id!r}")
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
            self.store.close()

    def _abort(self, live: _Live) -> None:
        live.op.error.CopyFrom(pb.OperationError(code=ABORTED_CODE, message=ABORTED_MESSAGE))
        self._update(live, state=pb.OPERATION_STATE_ABORTED, message=ABORTED_MESSAGE)
        self._live.pop(live.op.id, None)


def _copy(op: pb.Operation) -> pb.Operation:
    out = pb.Operation()
    out.CopyFrom(op)
    return out
