"""Per-sample metadata in LMDB: one JSON record per sample id.

Key: the id as 8 big-endian bytes (so keys sort numerically). Value: compact JSON with
sorted keys (no pickle; readable from any language)::

    {"correct": false, "label": 3, "loss": 2.31, "predicted": 6, "predicted_confidence": 0.81,
     "top_filters": [[412, 9.75], ...], "true_confidence": 0.09, "uri": "fashion-mnist:test/17"}

``top_filters`` are the ten filters with the largest standardized saliency (z-score),
largest first, as (profile index, z).

The environment is a single file (``subdir=False``). Writers commit every
``RECORDS_PER_TXN`` records in id order, so the same records give a byte-identical file.
py-lmdb refuses to open one environment twice in a process, and several
:class:`~parasal.indexer.bundle.Bundle` objects may share a file, so readers go through a
reference-counted per-process registry (:func:`acquire_reader` / :func:`release_reader`),
read-only and with ``lock=False`` (bundles are immutable, so there is no writer to
coordinate with and nothing is written next to the file).
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

__all__ = [
    "SampleMeta",
    "MetadataWriter",
    "encode_key",
    "decode_key",
    "encode_meta",
    "decode_meta",
    "acquire_reader",
    "release_reader",
    "stored_uris",
    "RECORDS_PER_TXN",
    "TOP_FILTERS",
]

RECORDS_PER_TXN = 1024
TOP_FILTERS = 10
_KEY = struct.Struct(">q")


@dataclass(frozen=True)
class SampleMeta:
    id: int
    uri: str
    label: int
    predicted: int
    true_confidence: float  # softmax probability of the true class
    predicted_confidence: float  # softmax probability of the predicted class
    loss: float  # cross-entropy of this sample
    correct: bool
    top_filters: list[tuple[int, float]] = field(default_factory=list)  # (filter index, z), largest z first


def encode_key(sample_id: int) -> bytes:
    return _KEY.pack(int(sample_id))


def decode_key(key: bytes) -> int:
    return _KEY.unpack(key)[0]


def encode_meta(meta: SampleMeta) -> bytes:
    record = {
        "uri": meta.uri,
        "label": int(meta.label),
        "predicted": int(meta.predicted),
        "true_confidence": float(meta.true_confidence),
        "predicted_confidence": float(meta.predicted_confidence),
        "loss": float(meta.loss),
        "correct": bool(meta.correct),
        "top_filters": [[int(i), float(z)] for i, z in meta.top_filters],
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def decode_meta(sample_id: int, value: bytes) -> SampleMeta:
    r = json.loads(value)
    return SampleMeta(
        id=int(sample_id),
        uri=r["uri"],
        label=r["label"],
        predicted=r["predicted"],
        true_confidence=r["true_confidence"],
        predicted_confidence=r["predicted_confidence"],
        loss=r["loss"],
        correct=r["correct"],
        top_filters=[(int(i), float(z)) for i, z in r["top_filters"]],
    )


def map_size_for(num_records: int) -> int:
    """Generous and deterministic (LMDB records the map size in its meta pages): 1 GiB, or
    16 KiB per record when larger. On 64-bit Linux this reserves address space, not disk."""
    return max(1 << 30, 16384 * int(num_records))


class MetadataWriter:
    """Writes records in increasing id order into a new single-file environment."""

    def __init__(self, path: str | os.PathLike, expected_records: int):
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(self.path)
        self._env = lmdb.open(
            str(self.path),
            subdir=False,
            map_size=map_size_for(expected_records),
            metasync=True,
            sync=True,
            readahead=False,
            meminit=True,
            max_dbs=0,
        )
        self._pending: list[tuple[bytes, bytes]] = []
        self._last_id: int | None = None
        self.count = 0

    def put(self, sample_id: int, value: bytes) -> None:
        if self._last_id is not None and sample_id <= self._last_id:
            raise ValueError(f"metadata ids must increase: {sample_id} after {self._last_id}")
        self._last_id = sample_id
        self._pending.append((encode_key(sample_id), value))
        if len(self._pending) >= RECORDS_PER_TXN:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        with self._env.begin(write=True) as txn:
            for key, value in self._pending:
                if not txn.put(key, value, overwrite=False):
                    raise ValueError(f"duplicate sample id {decode_key(key)}")
        self.count += len(self._pending)
        self._pending = []

    def close(self) -> None:
        """Commit, sync, close, and remove the lock file (bundles ship the data file only)."""
        self._flush()
        self._env.sync(True)
        self._env.close()
        lock = self.path.with_name(self.path.name + "-lock")
        if lock.exists():
            lock.unlink()


# ---------------------------------------------------------------------------------------
# Per-process reader registry

_readers: dict[str, list] = {}  # realpath -> [env, refcount]
_readers_lock = threading.Lock()


def acquire_reader(path: str | os.PathLike) -> lmdb.Environment:
    key = os.path.realpath(path)
    with _readers_lock:
        entry = _readers.get(key)
        if entry is None:
            env = lmdb.open(key, subdir=False, readonly=True, lock=False, readahead=False, max_readers=1024)
            entry = _readers[key] = [env, 0]
        entry[1] += 1
        return entry[0]


def release_reader(path: str | os.PathLike) -> None:
    key = os.path.realpath(path)
    with _readers_lock:
        entry = _readers.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            entry[0].close()
            del _readers[key]


def iter_records(env: lmdb.Environment) -> Iterator[tuple[int, bytes]]:
    """Every (id, raw JSON value) in id order."""
    with env.begin(buffers=False) as txn:
        for key, value in txn.cursor():
            yield decode_key(key), value


def stored_uris(path: str | os.PathLike) -> set[str]:
    """The uri of every record of the LMDB file at ``path`` (an append's duplicate check)."""
    env = acquire_reader(path)
    try:
        return {decode_meta(sample_id, value).uri for sample_id, value in iter_records(env)}
    finally:
        release_reader(path)


def get_records(env: lmdb.Environment, ids: Iterable[int]) -> list[bytes | None]:
    with env.begin(buffers=False) as txn:
        return [txn.get(encode_key(i)) for i in ids]
