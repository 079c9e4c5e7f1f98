"""Fine-tuning and pruning evaluations (paper §3.3, §3.1) as operations.

Starting one checks everything that can be checked at once (bundles, sample id, image,
counts, selections, step size, neighbor count), so those errors come back as the rpc's
status; the rest runs in an operation:

1. the reference: an indexed sample's stored image through the bundle's preprocessing and
   its stored profile, or an upload and its freshly computed profile;
2. its ``num_neighbors`` nearest neighbors among the misclassified samples of the
   neighbor bundle (the reference itself excluded), their images loaded the same way;
3. parasal.core's evaluation on the serving model, which works on its own private copy
   (the serving model is never modified), reporting progress and polling the stop flag.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from parasal.core.evaluation import DEFAULT_COUNTS, SELECTIONS, Cancelled, finetune_evaluation, pruning_evaluation
from parasal.v1 import saliency_pb2 as pb

from .config import ServerConfig
from .conversions import finetune_result_to_proto, pruning_result_to_proto
from .errors import InvalidArgument
from .limits import MAX_COUNTS
from .operations import Operations, Progress, StopFlag
from .queries import ImageQuery, PreparedImage, Queries, check_range
from .registry import Registry, ServedBundle

__all__ = [
    "FinetuneParams",
    "PruningParams",
    "Evaluations",
    "DEFAULT_COUNTS",
    "DEFAULT_STEP_SIZE",
    "DEFAULT_NEIGHBORS",
    "MAX_COUNTS",
    "MAX_EVALUATION_SIZE",
]

# DEFAULT_COUNTS is core's (re-exported here): what an empty ``counts`` on the wire means.
DEFAULT_STEP_SIZE = 1e-3
DEFAULT_NEIGHBORS = 10
#: counts x selections x max(1, neighbours evaluated) one evaluation may ask for, its
#: cost in forward(+backward) passes: the defaults (4 counts x 3 selections) over 1000
#: neighbours. MAX_COUNTS (limits.py) caps the counts of a request.
MAX_EVALUATION_SIZE = 12_000
#: Share of the progress bar for preparing reference and neighbors.
PREPARE_SHARE = 0.1


@dataclass(frozen=True)
class FinetuneParams:
    bundle: str
    reference: int | ImageQuery
    counts: Sequence[int] = ()
    selections: Sequence[str] = ()
    step_size: float = 0.0
    num_neighbors: int = 0
    neighbor_bundle: str = ""
    seed: int = 0


@dataclass(frozen=True)
class PruningParams:
    bundle: str
    reference: int | ImageQuery
    counts: Sequence[int] = ()
    selections: Sequence[str] = ()
    num_neighbors: int = 0  # 0: DEFAULT_NEIGHBORS, as for fine-tuning
    seed: int = 0


@dataclass(frozen=True)
class _Reference:
    sample_id: int | None
    image: PreparedImage | None  # uploads are decoded and checked up front


class Evaluations:
    def __init__(self, registry: Registry, queries: Queries, operations: Operations, config: ServerConfig):
        self.registry, self.queries, self.operations, self.config = registry, queries, operations, config

    def start_finetune(self, params: FinetuneParams):
        served = self.registry.get(params.bundle)
        neighbors = self.registry.get(params.neighbor_bundle or params.bundle)
        if neighbors.fingerprint != served.fingerprint:
            raise InvalidArgument(
                f"neighbor_bundle {neighbors.name!r} was indexed with a different model than {served.name!r}"
            )
        counts = _counts(params.counts, served.layout.num_filters)
        selections = tuple(params.selections) or SELECTIONS
        step = params.step_size or DEFAULT_STEP_SIZE
        if not math.isfinite(step) or step <= 0:
            raise InvalidArgument(f"step_size must be a positive finite number, got {step}")
        k = check_range("num_neighbors", params.num_neighbors or DEFAULT_NEIGHBORS, 1, self.config.max_neighbors)
        _check_size(counts, selections, k, neighbors)
        reference = self._reference(served, params.reference)

        def job(progress: Progress, should_stop: StopFlag) -> pb.FinetuneEvaluationResult:
            x, label, profile = self._resolve(served, reference, progress)
            ids, inputs, labels = self._neighbors(neighbors, served, reference, profile, k, progress, should_stop)
            report = finetune_evaluation(
                served.master,
                served.layout,
                x,
                label,
                profile,
                neighbor_inputs=inputs,
                neighbor_labels=labels,
                counts=counts,
                selections=selections,
                step_size=step,
                seed=params.seed,
                progress=_scaled(progress),
                should_stop=should_stop,
            )
            return finetune_result_to_proto(report, reference.sample_id, ids)

        return self.operations.start(pb.OPERATION_KIND_FINETUNE_EVALUATION, served.name, job)

    def start_pruning(self, params: PruningParams):
        served = self.registry.get(params.bundle)
        counts = _counts(params.counts, served.layout.num_filters)
        selections = tuple(params.selections) or SELECTIONS
        # The same default as fine-tuning: an evaluation on the sample alone says little
        # about the failure mode, and "0 means 10" is what the proto says of both.
        k = check_range("num_neighbors", params.num_neighbors or DEFAULT_NEIGHBORS, 1, self.config.max_neighbors)
        _check_size(counts, selections, k, served)
        reference = self._reference(served, params.reference)

        def job(progress: Progress, should_stop: StopFlag) -> pb.PruningEvaluationResult:
            x, label, profile = self._resolve(served, reference, progress)
            ids, inputs, labels = self._neighbors(served, served, reference, profile, k, progress, should_stop)
            report = pruning_evaluation(
                served.master,
                served.layout,
                x,
                label,
                profile,
                neighbor_inputs=inputs,
                neighbor_labels=labels,
                counts=counts,
                selections=selections,
                seed=params.seed,
                progress=_scaled(progress),
                should_stop=should_stop,
            )
            return pruning_result_to_proto(report, reference.sample_id, ids)

        return self.operations.start(pb.OPERATION_KIND_PRUNING_EVALUATION, served.name, job)

    # -- steps -------------------------------------------------------------------------

    def _reference(self, served: ServedBundle, query: int | ImageQuery) -> _Reference:
        if isinstance(query, ImageQuery):
            return _Reference(None, self.queries.prepare(served, query))
        served.meta(query)  # NotFound now rather than a failed operation later
        return _Reference(int(query), None)

    def _resolve(self, served: ServedBundle, reference: _Reference, progress: Progress):
        """(input (C, H, W), label, standardized profile (F,)) of the reference."""
        progress(0.0, "preparing the reference")
        if reference.image is not None:
            profile = self.queries.upload_profile(served, reference.image).vector
            return reference.image.tensor, reference.image.label, profile
        meta = served.meta(reference.sample_id)
        x = served.preprocessing(served.bundle.load_image(reference.sample_id))
        return x, int(meta.label), served.profile(reference.sample_id)

    def _neighbors(
        self,
        neighbors: ServedBundle,
        served: ServedBundle,
        reference: _Reference,
        profile: np.ndarray,
        k: int,
        progress: Progress,
        should_stop: StopFlag,
    ):
        """(ids, inputs (N, C, H, W), labels (N,)) of the nearest misclassified samples."""
        progress(PREPARE_SHARE / 2, f"finding {k} nearest misclassified neighbors")
        exclude = [reference.sample_id] if reference.sample_id is not None and neighbors is served else None
        allowed = neighbors.bundle.rows_where(misclassified=True)
        hits = neighbors.bundle.search(np.asarray(profile, np.float32)[None], k, allowed=allowed, exclude_ids=exclude)[
            0
        ]
        ids = [int(i) for i, _ in hits]
        images = []
        for i in ids:
            if should_stop():
                raise Cancelled("cancelled while loading neighbor images")
            images.append(neighbors.preprocessing(neighbors.bundle.load_image(i)))
        labels = [int(m.label) for m in neighbors.metas(ids)]
        if not ids:
            return ids, None, None
        return ids, torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _counts(counts: Sequence[int], num_filters: int) -> tuple[int, ...]:
    """Distinct counts in request order, each 1..F; the default keeps those within F."""
    if not counts:
        return tuple(c for c in DEFAULT_COUNTS if c <= num_filters) or (num_filters,)
    if len(counts) > MAX_COUNTS:
        raise InvalidArgument(f"counts has {len(counts)} entries; at most {MAX_COUNTS}")
    distinct = tuple(dict.fromkeys(int(c) for c in counts))
    for count in distinct:
        check_range("count", count, 1, num_filters)
    return distinct


def _check_size(counts: Sequence[int], selections: Sequence[str], k: int, neighbors: ServedBundle) -> None:
    """InvalidArgument when an evaluation would exceed MAX_EVALUATION_SIZE. Neighbours are
    counted as evaluated: at most the misclassified samples the neighbour bundle has."""
    evaluated = min(k, int(neighbors.bundle.num_misclassified))
    size = len(counts) * len(selections) * max(1, evaluated)
    if size > MAX_EVALUATION_SIZE:
        raise InvalidArgument(
            f"evaluation too large: {len(counts)} counts x {len(selections)} selections x {max(1, evaluated)} "
            f"neighbors = {size}; at most {MAX_EVALUATION_SIZE} (ask for fewer counts or neighbors)"
        )


def _scaled(progress: Progress) -> Progress:
    """The evaluation's own 0..1 mapped after the preparation share."""
    return lambda fraction, message: progress(PREPARE_SHARE + (1 - PREPARE_SHARE) * fraction, message)
