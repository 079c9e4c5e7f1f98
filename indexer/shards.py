"""Shards: the unit of work, of crash recovery and of distribution.

A job's samples are positions ``0..n-1`` in its selection: the dataset indices
themselves, or, for a sample (``--limit``) or an append that skips images already in the
bundle, ``indices[position]``; the id is always ``id_offset + dataset index``. Positions
are cut into fixed-size shards of consecutive positions. Shard ``j`` belongs to rank ``j % world_size``,
so every sample is computed exactly once whatever the world size, with no padding.

Each finished shard is one ``.npz`` in the work directory (``<out>.partial/``), written
atomically (see durable.py): raw float32 profiles, prediction-derived values, the shard's
RunningStats and its skipped samples. The work directory's ``job.json`` records every
parameter that changes shard contents (model fingerprint, preprocessing, data description,
limit, id offset, batch and shard size, device kind, base bundle for appends); a job
whose parameters differ discards the old shards instead of reusing them. World size is
not among them: a job may resume with a different number of ranks. Neither is the index
type: a failed index build can be retried with another ``--index-type`` from the same shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from parasal.core import RunningStats

from .durable import atomic_write_bytes, read_npz, write_npz
from .errors import DistributedError, IndexerError

__all__ = ["Shard", "ShardPlan", "ShardResult", "WorkDir", "SHARD_FORMAT"]

log = logging.getLogger(__name__)

SHARD_FORMAT = 1
JOB_FILE = "job.json"


@dataclass(frozen=True)
class Shard:
    index: int  # position in the global shard list
    start: int  # first position (see ShardPlan.indices)
    stop: int  # one past the last position

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ShardPlan:
    num_samples: int
    shard_size: int
    id_offset: int = 0
    #: (num_samples,) sorted dataset indices of the positions; None: position = dataset index
    indices: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.shard_size < 1:
            raise ValueError("shard size must be positive")
        if self.indices is not None and len(self.indices) != self.num_samples:
            raise ValueError("a selection needs one dataset index per sample")

    def dataset_index(self, position: int) -> int:
        return int(position) if self.indices is None else int(self.indices[position])

    def ids_of(self, positions: np.ndarray) -> np.ndarray:
        """Sample ids of ``positions`` (int64)."""
        positions = np.asarray(positions, dtype=np.int64)
        index = positions if self.indices is None else np.asarray(self.indices, np.int64)[positions]
        return index + self.id_offset

    @property
    def id_span(self) -> int:
        """How many ids the plan reserves from ``id_offset`` on (the next job's offset follows)."""
        if self.indices is None:
            return self.num_samples
        return int(self.indices[-1]) + 1 if len(self.indices) else 0

    @property
    def shards(self) -> list[Shard]:
        s = self.shard_size
        return [Shard(j, a, min(a + s, self.num_samples)) for j, a in enumerate(range(0, self.num_samples, s))]

    def for_rank(self, rank: int, world_size: int) -> list[Shard]:
        return [sh for sh in self.shards if sh.index % world_size == rank]


@dataclass
class ShardResult:
    """What one shard produced. Arrays are row-aligned with ``ids`` (global sample ids, ascending)."""

    shard: Shard
    ids: np.ndarray  # (n,) int64
    raw: np.ndarray  # (n, F) float32 raw filter saliency
    label: np.ndarray  # (n,) int64
    predicted: np.ndarray  # (n,) int64
    true_confidence: np.ndarray  # (n,) float64
    predicted_confidence: np.ndarray  # (n,) float64
    loss: np.ndarray  # (n,) float64
    stats: RunningStats  # of raw
    skipped_ids: np.ndarray  # (m,) int64
    skipped_reasons: list[str]
    #: (n, N) float32 filter importance of the reference layer (jobs with reference data), else None
    alpha: np.ndarray | None = None

    def check(self, plan: ShardPlan, num_filters: int) -> None:
        """Every id of the shard appears exactly once, as a row or as a skipped sample."""
        expected = plan.ids_of(np.arange(self.shard.start, self.shard.stop))
        seen = np.concatenate([self.ids, self.skipped_ids])
        if len(seen) != len(expected) or not np.array_equal(np.sort(seen), expected):
            raise DistributedError(
                f"shard {self.shard.index} does not cover ids {expected[0]}..{expected[-1]} exactly once"
            )
        if self.raw.shape != (len(self.ids), num_filters) or self.stats.count != len(self.ids):
            raise DistributedError(
                f"shard {self.shard.index} has profiles of shape {self.raw.shape}, "
                f"expected ({len(self.ids)}, {num_filters})"
            )
        if self.alpha is not None and len(self.alpha) != len(self.ids):
            raise DistributedError(f"shard {self.shard.index} has {len(self.alpha)} rows of α for {len(self.ids)} ids")

    def to_arrays(self, job_key: str) -> dict[str, np.ndarray]:
        alpha = {} if self.alpha is None else {"alpha": self.alpha.astype(np.float32)}
        return {
            **alpha,
            "header": np.array([SHARD_FORMAT, self.shard.index, self.shard.start, self.shard.stop], np.int64),
            "job": np.array(job_key),
            "ids": self.ids.astype(np.int64),
            "raw": self.raw.astype(np.float32),
            "label": self.label.astype(np.int64),
            "predicted": self.predicted.astype(np.int64),
            "true_confidence": self.true_confidence.astype(np.float64),
            "predicted_confidence": self.predicted_confidence.astype(np.float64),
            "loss": self.loss.astype(np.float64),
            "stats_count": np.array(self.stats.count, np.int64),
            "stats_mean": self.stats.mean,
            "stats_m2": self.stats.m2,
            "skipped_ids": self.skipped_ids.astype(np.int64),
            "skipped_reasons": np.array(self.skipped_reasons, dtype=np.str_).reshape(-1),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> ShardResult:
        _, index, start, stop = (int(v) for v in a["header"])
        return cls(
            shard=Shard(index, start, stop),
            ids=a["ids"],
            raw=a["raw"],
            label=a["label"],
            predicted=a["predicted"],
            true_confidence=a["true_confidence"],
            predicted_confidence=a["predicted_confidence"],
            loss=a["loss"],
            stats=RunningStats(int(a["stats_count"]), a["stats_mean"], a["stats_m2"]),
            skipped_ids=a["skipped_ids"],
            skipped_reasons=[str(r) for r in a["skipped_reasons"]],
            alpha=a.get("alpha"),
        )


def job_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class WorkDir:
    """``<out>.partial/``: ``job.json`` + ``shard-NNNNNN.npz`` files (see module docstring).

    ``result_type``: what a shard file holds (``to_arrays(key)`` / ``from_arrays``):
    profile shards by default; the reference pass keeps its own in ``<out>.partial/reference/``."""

    def __init__(self, path: str | os.PathLike, params: dict, result_type=ShardResult):
        self.path = Path(path)
        self.params = params
        self.key = job_key(params)
        self.result_type = result_type

    def shard_path(self, index: int) -> Path:
        return self.path / f"shard-{index:06d}.npz"

    def prepare(self) -> None:
        """Rank 0, before any rank works: keep the directory if it is for this job, else clear it."""
        job = self.path / JOB_FILE
        if self.path.exists():
            if not self.path.is_dir():
                raise IndexerError(f"work directory {self.path} exists and is not a directory")
            old = _read_json(job)
            if old is not None and old.get("key") == self.key:
                for stale in self.path.glob(".*.tmp-*"):  # temp files of a killed run
                    stale.unlink(missing_ok=True)
                return
            changed = sorted(
                k
                for k in set(self.params) | set((old or {}).get("params", {}))
                if (old or {}).get("params", {}).get(k) != self.params.get(k)
            )
            shards = list(self.path.glob("shard-*.npz"))
            log.warning(
                "discarding %d shard(s) in %s from a different job (%s differ)",
                len(shards),
                self.path,
                ", ".join(changed) or "format",
            )
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        atomic_write_bytes(job, json.dumps({"key": self.key, "params": self.params}, indent=2, sort_keys=True).encode())

    def check(self) -> None:
        """Any rank, after the barrier: the directory was prepared for this same job."""
        old = _read_json(self.path / JOB_FILE)
        if old is None or old.get("key") != self.key:
            raise DistributedError(
                f"{self.path / JOB_FILE} is not this job's: ranks disagree on the job parameters "
                "(same model, data and options on every rank?)"
            )

    def is_done(self, shard: Shard) -> bool:
        """True when the shard's file exists, is a readable npz and belongs to this job."""
        path = self.shard_path(shard.index)
        if not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as z:
                header, key = z["header"], str(z["job"])
        except Exception as e:  # noqa: BLE001 - any unreadable file is simply redone
            log.warning("recomputing shard %d: %s is unreadable (%s)", shard.index, path, e)
            return False
        return key == self.key and [int(v) for v in header[1:]] == [shard.index, shard.start, shard.stop]

    def write(self, result: ShardResult) -> None:
        write_npz(self.shard_path(result.shard.index), result.to_arrays(self.key))

    def load(self, shard: Shard) -> ShardResult:
        if not self.is_done(shard):
            raise DistributedError(
                f"shard {shard.index} (samples {shard.start}..{shard.stop - 1}) is missing from "
                f"{self.path}: a rank did not finish; rerun the same command to resume"
            )
        return self.result_type.from_arrays(read_npz(self.shard_path(shard.index)))

    def load_summary(self, shard: Shard) -> ShardResult:
        """The shard without its profiles (``raw`` is an empty (n, 0) array, ``alpha`` None):
        ids, skipped samples and statistics, read without loading the large members."""
        if not self.is_done(shard):
            self.load(shard)  # raises the "missing shard" error
        with np.load(self.shard_path(shard.index), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k not in ("raw", "alpha")}
        arrays["raw"] = np.zeros((len(arrays["ids"]), 0), np.float32)
        return ShardResult.from_arrays(arrays)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
