"""The operation store: one LMDB environment under the server's state directory.

Records are serialized ``parasal.v1.Operation`` messages (no pickle), keyed by operation
id. Ids start with the creation time in hex, so key order is creation order and listing
newest first is a reverse cursor walk. Writes use LMDB's durable defaults (sync and
metasync): a finished operation's result survives a crash or a kill.

One server per state directory: the store holds an exclusive ``flock`` on ``LOCK`` for its
lifetime (the kernel releases it when the process dies, even by SIGKILL), so a second
server on the same directory fails at start-up instead of marking the first one's running
operations ABORTED.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb
from google.rpc import code_pb2

from parasal.v1 import saliency_pb2 as pb

from .config import ConfigError

__all__ = [
    "OperationStore",
    "new_operation_id",
    "TERMINAL_STATES",
    "ABORTED_MESSAGE",
    "NEVER_STARTED_MESSAGE",
    "aborted_message",
]

TERMINAL_STATES = frozenset(
    {pb.OPERATION_STATE_SUCCEEDED, pb.OPERATION_STATE_FAILED, pb.OPERATION_STATE_CANCELLED, pb.OPERATION_STATE_ABORTED}
)
ABORTED_MESSAGE = "the server stopped while it was running"
#: For an operation that was still queued: nothing of it ran (safe to start again).
NEVER_STARTED_MESSAGE = "the server stopped before it started; it never ran"
#: The error code recorded for aborted operations (google.rpc.Code, as gRPC status codes are).
ABORTED_CODE = code_pb2.ABORTED
#: Address space reserved for the environment (a sparse file; records are a few KB each).
MAP_SIZE = 1 << 30


def aborted_message(state: int) -> str:
    """What an ABORTED record says, given the state it was in when the server stopped."""
    return NEVER_STARTED_MESSAGE if state == pb.OPERATION_STATE_PENDING else ABORTED_MESSAGE


def new_operation_id() -> str:
    """24 hex digits: creation time in ns (16, so ids sort by time), then 8 random."""
    return f"{time.time_ns():016x}{secrets.token_hex(4)}"


class OperationStore:
    def __init__(self, state_dir: str | os.PathLike, *, map_size: int = MAP_SIZE):
        self.dir = Path(state_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.dir / "LOCK", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise ConfigError(f"state dir {self.dir} is in use by another parasal server") from None
        try:
            self._env = lmdb.open(
                str(self.dir / "operations.lmdb"),
                map_size=map_size,
                max_dbs=0,
                sync=True,
                metasync=True,
                readahead=False,
            )
        except lmdb.Error as exc:
            self._release_lock()
            raise ConfigError(f"cannot open the operation store in {self.dir}: {exc}") from None

    # -- records -----------------------------------------------------------------------

    def put(self, op: pb.Operation) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(op.id.encode(), op.SerializeToString(deterministic=True))

    def get(self, op_id: str) -> pb.Operation | None:
        with self._env.begin() as txn:
            value = txn.get(op_id.encode())
        return None if value is None else pb.Operation.FromString(value)

    def list(self, limit: int, state: int = pb.OPERATION_STATE_UNSPECIFIED) -> list[pb.Operation]:
        """At most ``limit`` operations, newest first, optionally only those in ``state``."""
        out: list[pb.Operation] = []
        for op in self._walk(newest_first=True):
            if len(out) >= limit:
                break
            if state == pb.OPERATION_STATE_UNSPECIFIED or op.state == state:
                out.append(op)
        return out

    def _walk(self, newest_first: bool) -> Iterator[pb.Operation]:
        with self._env.begin() as txn:
            cursor = txn.cursor()
            items = cursor.iterprev() if newest_first else cursor.iternext()
            for _, value in items:
                yield pb.Operation.FromString(value)

    def __len__(self) -> int:
        return int(self._env.stat()["entries"])

    # -- start-up housekeeping -----------------------------------------------------------

    def abort_unfinished(self) -> list[str]:
        """Mark every PENDING/RUNNING record ABORTED (a previous process died with them),
        saying whether it was running or never started; returns their ids. Called before
        any new operation starts."""
        aborted = []
        with self._env.begin(write=True) as txn:
            for key, value in txn.cursor():
                op = pb.Operation.FromString(value)
                if op.state in TERMINAL_STATES:
                    continue
                message = aborted_message(op.state)
                op.state = pb.OPERATION_STATE_ABORTED
                op.message = message
                op.error.code, op.error.message = ABORTED_CODE, message
                op.updated_at.GetCurrentTime()
                txn.put(key, op.SerializeToString(deterministic=True))
                aborted.append(op.id)
        return aborted

    def prune(self, keep: int) -> int:
        """Delete the oldest finished records beyond ``keep``; returns how many went."""
        excess = len(self) - keep
        if excess <= 0:
            return 0
        removed = 0
        with self._env.begin(write=True) as txn:
            for key, value in txn.cursor():
                if removed >= excess:
                    break
                if pb.Operation.FromString(value).state in TERMINAL_STATES:
                    txn.delete(key)
                    removed += 1
        return removed

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
            self._release_lock()

    def _release_lock(self) -> None:
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    def __enter__(self) -> OperationStore:
        return self

    def __exit__(self, *exc_info) -> bool:
        self.close()
        return False
