"""`parasal index --reference-data`: filter importance α over a reference set, and what it gives each row.

Hartley et al. (§3) compare a sample's α (one score per filter of one conv layer,
``parasal.core.filter_importance``) with the distributions of α per (class, filter) over
a reference set, the training split in the paper. The indexer computes that set's α in
shards exactly like the profiles (shards.py: fixed position ranges, atomic files in
``<out>.partial/reference/``, shard ``j`` on rank ``j % world_size``, resumable; rank 0
merges), then assembles (rank 0, assemble.py):

* ``reference.npz`` (reference_data.py): ``ClassFilterStats`` of every reference α (exact,
  each class's columns sorted), the top ``k`` exemplars per filter overall and per class
  (ids = the reference samples' dataset indices), and the reference rows' ids, labels and uris;
* per indexed row, from its α (computed with its profile, ``alpha.npy``): β (eq. 2) and
  the numbers of surprise (α > P_cn(99.9)) and expectation (α < P_cn(0.1) with µ_cn above
  the class's mean µ) filters, as table columns (:func:`surprise_counts`).

Every reference sample counts with its ground-truth label, correctly classified or not
(the paper's distributions are "over the training samples of class c"). A reference
sample that cannot be read is skipped with its reason, as indexed ones are, and the same
``--max-skipped`` applies. An append keeps the statistics frozen: new rows are compared
with the base generation's ``reference.npz``, which the new generation links unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from parasal.core import ClassFilterStats, top_exemplars

from .errors import DistributedError
from .profiling import Preflight, ProfileEngine, _batches, _Decoded
from .reference_data import REFERENCE_FORMAT
from .shards import SHARD_FORMAT, Shard, ShardPlan, WorkDir

__all__ = [
    "DEFAULT_HIGH",
    "DEFAULT_LOW",
    "DEFAULT_EXEMPLARS",
    "ReferenceJob",
    "ReferenceShardResult",
    "compute_reference_shard",
    "reference_arrays",
    "surprise_counts",
    "SurpriseTables",
]

DEFAULT_HIGH = 99.9  # the paper's surprise percentile
DEFAULT_LOW = 0.1  # the paper's expectation percentile
DEFAULT_EXEMPLARS = 6  # exemplars per filter (Fig. 7-8 show six)


@dataclass
class ReferenceJob:
    """What a generation needs to write its reference files and columns (GenerationInputs.reference)."""

    layer: str
    method: str
    num_filters: int  # filters of that layer
    exemplars_per_filter: int
    num_classes: int
    high: float = DEFAULT_HIGH
    low: float = DEFAULT_LOW
    #: the reference set's description for the manifest: dataset, description, limit, sample
    entry: dict | None = None
    plan: ShardPlan | None = None  # None: frozen (an append links the base generation's reference.npz)
    work: WorkDir | None = None
    ds: Any = None

    @property
    def frozen(self) -> bool:
        return self.plan is None


@dataclass
class ReferenceShardResult:
    """One reference shard: α of its readable samples. Rows align with ``ids`` (dataset indices, ascending)."""

    shard: Shard
    ids: np.ndarray  # (n,) int64
    label: np.ndarray  # (n,) int64
    alpha: np.ndarray  # (n, N) float32
    skipped_ids: np.ndarray  # (m,) int64
    skipped_reasons: list[str]

    def check(self, plan: ShardPlan, num_filters: int) -> None:
        """Every position of the shard appears once, as a row or a skipped sample; α has N columns."""
        expected = plan.ids_of(np.arange(self.shard.start, self.shard.stop))
        seen = np.concatenate([self.ids, self.skipped_ids])
        if len(seen) != len(expected) or not np.array_equal(np.sort(seen), expected):
            raise DistributedError(f"reference shard {self.shard.index} does not cover its samples exactly once")
        if self.alpha.shape != (len(self.ids), num_filters) or len(self.label) != len(self.ids):
            raise DistributedError(
                f"reference shard {self.shard.index} has α of shape {self.alpha.shape}, "
                f"expected ({len(self.ids)}, {num_filters})"
            )

    def to_arrays(self, job_key: str) -> dict[str, np.ndarray]:
        return {
            "header": np.array([SHARD_FORMAT, self.shard.index, self.shard.start, self.shard.stop], np.int64),
            "job": np.array(job_key),
            "ids": self.ids.astype(np.int64),
            "label": self.label.astype(np.int64),
            "alpha": self.alpha.astype(np.float32),
            "skipped_ids": self.skipped_ids.astype(np.int64),
            "skipped_reasons": np.array(self.skipped_reasons, dtype=np.str_).reshape(-1),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> ReferenceShardResult:
        _, index, start, stop = (int(v) for v in a["header"])
        return cls(
            shard=Shard(index, start, stop),
            ids=a["ids"],
            label=a["label"],
            alpha=a["alpha"],
            skipped_ids=a["skipped_ids"],
            skipped_reasons=[str(r) for r in a["skipped_reasons"]],
        )


def compute_reference_shard(
    engine: ProfileEngine,
    ds,
    shard: Shard,
    plan: ShardPlan,
    check: Preflight,
    *,
    batch_size: int,
    workers: int = 0,
    on_samples: Callable[[int], None] | None = None,
) -> ReferenceShardResult:
    """α (``engine.importance_of``) of one reference shard, batch by fixed position ranges."""
    decoded = _Decoded(ds, engine.preprocessing, check.input_shape, check.num_classes, plan.indices)
    ids, labels, alphas, skipped = [], [], [], []
    for batch in _batches(decoded, shard, batch_size, workers):
        good = [(i, x, y) for i, x, y, reason in batch if reason is None]
        skipped += [(i, reason) for i, x, y, reason in batch if reason is not None]
        if good:
            index = np.array([i for i, _, _ in good], np.int64)
            x = torch.stack([x for _, x, _ in good])  # (B, C, H, W)
            y = torch.tensor([y for _, _, y in good], dtype=torch.int64)  # (B,)
            alpha = engine.importance(x, y, seed=int(plan.ids_of(index[:1])[0]))  # (B, N)
            finite = np.isfinite(alpha).all(axis=1)
            skipped += [(int(i), "non-finite filter importance") for i in index[~finite]]
            ids.append(plan.ids_of(index[finite]))
            labels.append(y.numpy()[finite])
            alphas.append(alpha[finite])
        if on_samples is not None:
            on_samples(len(batch))
    skipped.sort()
    n_filters = engine.importance_n
    return ReferenceShardResult(
        shard=shard,
        ids=np.concatenate(ids) if ids else np.zeros(0, np.int64),
        label=np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
        alpha=np.concatenate(alphas).astype(np.float32) if alphas else np.zeros((0, n_filters), np.float32),
        skipped_ids=plan.ids_of(np.array([i for i, _ in skipped], np.int64)),
        skipped_reasons=[r for _, r in skipped],
    )


def reference_arrays(ref: ReferenceJob) -> tuple[dict[str, np.ndarray], ClassFilterStats, list]:
    """Rank 0: every reference shard -> (reference.npz's members, the statistics, [(id, reason)] skipped).

    The shards are concatenated in shard order (ids ascending); the statistics and the
    exemplars do not depend on how the set was sharded (ClassFilterStats sorts each column,
    exemplar ties go to the lower id), so any world size gives the same bytes."""
    ids, labels, alphas, skipped = [], [], [], []
    for shard in ref.plan.shards:
        res = ref.work.load(shard)
        res.check(ref.plan, ref.num_filters)
        ids.append(res.ids)
        labels.append(res.label)
        alphas.append(res.alpha)
        skipped += [(int(i), r) for i, r in zip(res.skipped_ids, res.skipped_reasons)]
    ids, labels, alpha = np.concatenate(ids), np.concatenate(labels), np.concatenate(alphas)  # (M,), (M,), (M, N)
    stats = ClassFilterStats.of(alpha, labels, ref.num_classes)
    ex = top_exemplars(alpha, labels, ref.num_classes, k=ref.exemplars_per_filter, ids=ids)
    arrays = {
        "format": np.array([REFERENCE_FORMAT], np.int64),
        **stats.to_arrays(),
        "ids": ids.astype(np.int64),
        "labels": labels.astype(np.int64),
        "uris": np.array([ref.ds.uri(int(i)) for i in ids], dtype=np.str_).reshape(-1),
        "overall_ids": ex.overall_ids,
        "overall_alpha": ex.overall_alpha,
        "class_ids": ex.class_ids,
        "class_alpha": ex.class_alpha,
    }
    return arrays, stats, skipped


class SurpriseTables:
    """The per-class tables :func:`surprise_counts` compares rows with, computed once per generation."""

    def __init__(self, stats: ClassFilterStats, high: float, low: float):
        self.mean = stats.mean  # (K, N) float64 µ_cn (NaN rows: classes without reference samples)
        self.upper = stats.percentile(high)  # (K, N) P_cn(high)
        self.lower = stats.percentile(low)  # (K, N) P_cn(low)
        self.floor = self.mean.mean(axis=1)  # (K,) mean over filters of µ_cn
        self.num_classes = stats.num_classes


def surprise_counts(alpha: np.ndarray, labels: np.ndarray, tables: SurpriseTables):
    """β (float32), number of surprise and of expectation filters (int32) per row, vectorised.

    ``alpha`` (B, N), ``labels`` (B,) ground truth. The same comparisons as
    core.surprise_expectation (strict; expectation among filters with µ_cn above the class's
    mean µ). A row whose class has no reference samples gets β NaN and counts 0."""
    a = np.asarray(alpha, np.float64)  # (B, N)
    y = np.asarray(labels, np.int64)
    if len(y) and (y.min() < 0 or y.max() >= tables.num_classes):
        raise ValueError(f"labels must lie in [0, {tables.num_classes})")
    mu = tables.mean[y]  # (B, N)
    with np.errstate(invalid="ignore"):  # NaN rows compare False: counts 0
        beta = (a - mu).mean(axis=1)
        surprise = (a > tables.upper[y]).sum(axis=1)
        expectation = ((a < tables.lower[y]) & (mu > tables.floor[y][:, None])).sum(axis=1)
    return beta.astype(np.float32), surprise.astype(np.int32), expectation.astype(np.int32)
