"""Fine-tuning and pruning evaluations (Levin et al. §3.3, §3.1) as operations, and the
export of one row's edited model.

Starting one checks everything that can be checked at once (bundles, sample id, image,
counts and count fractions, selections, step size, neighbour, draw and collateral counts,
the size caps), so those errors come back as the rpc's status; the rest runs in an operation:

1. the reference: an indexed sample's stored image through the bundle's preprocessing and
   its stored profile, or an upload and its freshly computed profile;
2. its ``num_neighbors`` nearest neighbors among the misclassified samples of the
   neighbor bundle (the reference itself excluded), their images loaded the same way;
3. ``num_collateral`` correctly classified samples of the neighbour bundle, drawn with the
   seed (:func:`collateral_ids`);
4. parasal.core's evaluation on the serving model, which works on its own private copy
   (the serving model is never modified), reporting progress and polling the stop flag.
   Random draws are seeded with the request seed mixed with the reference: ``"id:<n>"``
   for an indexed sample, the SHA-256 of the uploaded bytes for an upload.

Export (:meth:`Evaluations.export_edit`) recomputes a finished evaluation's row from what
the operation recorded (selection, count, seed, step size, the reference) with
:func:`parasal.core.apply_edit`. An indexed reference is reloaded from the bundle; an
upload is kept in memory for the last ``UPLOADS_KEPT`` evaluations of this process only, so
after a restart (or beyond that) exporting an upload's row is FAILED_PRECONDITION.
"""

from __future__ import annotations

import collections
import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from parasal.core import WHOLE_NETWORK, apply_edit, reference_key, row_filters, select_filters
from parasal.core.evaluation import (
    DEFAULT_RANDOM_DRAWS,
    SELECTIONS,
    Cancelled,
    counts_from_fractions,
    default_counts,
    finetune_evaluation,
    pruning_evaluation,
)
from parasal.v1 import saliency_pb2 as pb

from .config import ServerConfig
from .conversions import SELECTION_FROM_PROTO, finetune_result_to_proto, pruning_result_to_proto
from .errors import FailedPrecondition, InvalidArgument
from .limits import MAX_COUNTS
from .operations import Operations, Progress, StopFlag
from .queries import ImageQuery, PreparedImage, Queries, check_range
from .registry import Registry, ServedBundle

__all__ = [
    "FinetuneParams",
    "PruningParams",
    "Evaluations",
    "ExportedEdit",
    "collateral_ids",
    "DEFAULT_STEP_SIZE",
    "DEFAULT_NEIGHBORS",
    "DEFAULT_COLLATERAL",
    "MAX_COUNTS",
    "MAX_RANDOM_DRAWS",
    "MAX_COLLATERAL",
    "MAX_EVALUATION_SIZE",
    "MAX_EVALUATION_IMAGES",
    "MAX_EVALUATION_INPUT_BYTES",
    "EXPORT_CHUNK_BYTES",
]

# What 0 / empty on the wire means (the proto); counts: parasal.core.default_counts(F).
DEFAULT_STEP_SIZE = 1e-3
DEFAULT_NEIGHBORS = 10
DEFAULT_COLLATERAL = 500
MAX_RANDOM_DRAWS = 100
MAX_COLLATERAL = 10_000
#: counts x selections x max(1, neighbours evaluated), as the proto states: the old defaults
#: (4 counts x 3 selections) over 1000 neighbours. MAX_COUNTS (limits.py) caps the counts.
MAX_EVALUATION_SIZE = 12_000
#: Images one evaluation may put through the model: every draw forwards the reference and
#: its neighbours, every row's first draw also the collateral samples. The defaults on the
#: demo model (5 counts, 5 draws, 10 neighbours, 500 collateral) take ~8,400 (~30 s on one
#: loaded core of the 2-core dev CPU); this cap is ~18x that, ~10 minutes there.
MAX_EVALUATION_IMAGES = 150_000
#: Bytes of model input one evaluation may hold: the reference, neighbours and collateral
#: samples (float32). 2 GiB: 3,500 images of 3x224x224; the demo's 28x28 never comes close.
MAX_EVALUATION_INPUT_BYTES = 2 << 30
#: Share of the progress bar for preparing reference, neighbors and collateral samples.
PREPARE_SHARE = 0.1
#: Uploaded references kept (in memory) for exporting their rows.
UPLOADS_KEPT = 32
#: ExportEditedModelResponse.data is at most this long.
EXPORT_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class FinetuneParams:
    bundle: str
    reference: int | ImageQuery | None  # None: failure_mode
    counts: Sequence[int] = ()
    selections: Sequence[str] = ()
    step_size: float = 0.0
    num_neighbors: int = 0
    neighbor_bundle: str = ""
    seed: int = 0
    count_fractions: Sequence[float] = ()
    random_draws: int = 0  # 0: DEFAULT_RANDOM_DRAWS
    num_collateral: int = 0  # 0: DEFAULT_COLLATERAL
    skip_collateral: bool = False
    # A failure mode of `bundle` (server/browse.py) instead of a reference: the step on its
    # medoid, measured on its other members (closest to the mode's mean first).
    failure_mode: int | None = None


@dataclass(frozen=True)
class PruningParams:
    bundle: str
    reference: int | ImageQuery
    counts: Sequence[int] = ()
    selections: Sequence[str] = ()
    num_neighbors: int = 0  # 0: DEFAULT_NEIGHBORS, as for fine-tuning
    seed: int = 0
    count_fractions: Sequence[float] = ()
    random_draws: int = 0
    num_collateral: int = 0
    skip_collateral: bool = False


@dataclass(frozen=True)
class ExportedEdit:
    """A row's edited model: ``data`` is one torch.save(state_dict) file (CPU tensors)."""

    data: bytes
    filters: list[int]
    step_size: float
    seed: int


@dataclass(frozen=True)
class _Reference:
    sample_id: int | None
    image: PreparedImage | None  # uploads are decoded and checked up front
    key: str  # what its random draws are seeded with
    members: tuple[int, ...] | None = None  # a failure mode's other members: the neighbours


@dataclass
class _Resolved:
    """A reference as evaluated: what export needs to replay a row."""

    input: torch.Tensor  # (C, H, W)
    label: int
    profile: np.ndarray  # (F,)
    key: str


@dataclass(frozen=True)
class _Plan:
    counts: tuple[int, ...]
    selections: tuple[str, ...]
    draws: int
    neighbors: int
    collateral: int  # 0: none


@dataclass
class _Uploads:
    """The uploaded references of the last UPLOADS_KEPT evaluations by operation id
    (thread-safe). Each is a holder its job fills once it has resolved the reference."""

    entries: collections.OrderedDict = field(default_factory=collections.OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, op_id: str, holder: list[_Resolved]) -> None:
        with self.lock:
            self.entries[op_id] = holder
            while len(self.entries) > UPLOADS_KEPT:
                self.entries.popitem(last=False)

    def get(self, op_id: str) -> _Resolved | None:
        with self.lock:
            holder = self.entries.get(op_id)
        return holder[0] if holder else None


class Evaluations:
    def __init__(self, registry: Registry, queries: Queries, operations: Operations, config: ServerConfig):
        self.registry, self.queries, self.operations, self.config = registry, queries, operations, config
        self._uploads = _Uploads()

    def start_finetune(self, params: FinetuneParams):
        served = self.registry.get(params.bundle)
        neighbors = self.registry.get(params.neighbor_bundle or params.bundle)
        if neighbors.fingerprint != served.fingerprint:
            raise InvalidArgument(
                f"neighbor_bundle {neighbors.name!r} was indexed with a different model than {served.name!r}"
            )
        # The step as the wire carries it (float32), so the result's step_size replays exactly.
        step = float(np.float32(params.step_size or DEFAULT_STEP_SIZE))
        if not math.isfinite(step) or step <= 0:
            raise InvalidArgument(f"step_size must be a positive finite number, got {params.step_size}")
        if params.failure_mode is None:
            plan = self._plan(params, served, neighbors, whole_network=True)
            reference = self._reference(served, params.reference)
        else:
            if params.reference is not None or neighbors is not served:
                raise InvalidArgument("failure_mode replaces the reference and the neighbour bundle: set neither")
            reference = self._mode_reference(served, params.failure_mode)
            plan = self._plan(params, served, neighbors, whole_network=True, members=len(reference.members))
        holder: list[_Resolved] = []

        def job(progress: Progress, should_stop: StopFlag) -> pb.FinetuneEvaluationResult:
            resolved = self._resolve(served, reference, progress)
            holder.append(resolved)
            ids, inputs, labels = self._neighbors(
                neighbors, served, reference, resolved.profile, plan, progress, should_stop
            )
            collateral = self._collateral(neighbors, served, reference, plan, params.seed, progress, should_stop)
            report = finetune_evaluation(
                served.master,
                served.layout,
                resolved.input,
                resolved.label,
                resolved.profile,
                neighbor_inputs=inputs,
                neighbor_labels=labels,
                counts=plan.counts,
                selections=plan.selections,
                step_size=step,
                seed=params.seed,
                reference=resolved.key,
                random_draws=plan.draws,
                collateral_inputs=collateral[0],
                collateral_labels=collateral[1],
                progress=_scaled(progress),
                should_stop=should_stop,
            )
            result = finetune_result_to_proto(report, reference.sample_id, ids)
            if params.failure_mode is not None:
                result.failure_mode = params.failure_mode
            return result

        op = self.operations.start(pb.OPERATION_KIND_FINETUNE_EVALUATION, served.name, job)
        if reference.image is not None:  # export replays an upload from memory (see the module doc)
            self._uploads.put(op.id, holder)
        return op

    def start_pruning(self, params: PruningParams):
        served = self.registry.get(params.bundle)
        plan = self._plan(params, served, served, whole_network=False)
        reference = self._reference(served, params.reference)
        holder: list[_Resolved] = []

        def job(progress: Progress, should_stop: StopFlag) -> pb.PruningEvaluationResult:
            resolved = self._resolve(served, reference, progress)
            holder.append(resolved)
            ids, inputs, labels = self._neighbors(
                served, served, reference, resolved.profile, plan, progress, should_stop
            )
            collateral = self._collateral(served, served, reference, plan, params.seed, progress, should_stop)
            report = pruning_evaluation(
                served.master,
                served.layout,
                resolved.input,
                resolved.label,
                resolved.profile,
                neighbor_inputs=inputs,
                neighbor_labels=labels,
                counts=plan.counts,
                selections=plan.selections,
                seed=params.seed,
                reference=resolved.key,
                random_draws=plan.draws,
                collateral_inputs=collateral[0],
                collateral_labels=collateral[1],
                progress=_scaled(progress),
                should_stop=should_stop,
            )
            return pruning_result_to_proto(report, reference.sample_id, ids)

        op = self.operations.start(pb.OPERATION_KIND_PRUNING_EVALUATION, served.name, job)
        if reference.image is not None:  # export replays an upload from memory (see the module doc)
            self._uploads.put(op.id, holder)
        return op

    # -- export ------------------------------------------------------------------------

    def export_edit(self, op_id: str, selection: int, count: int, draw: int) -> ExportedEdit:
        """The edited model of one row of a finished evaluation, recomputed (see the module doc)."""
        op = self.operations.get(op_id)  # NotFound
        which = op.WhichOneof("result")
        if op.state != pb.OPERATION_STATE_SUCCEEDED or which not in ("finetune", "pruning"):
            state = pb.OperationState.Name(op.state).removeprefix("OPERATION_STATE_").lower()
            raise FailedPrecondition(f"operation {op.id} is not a finished fine-tuning or pruning evaluation ({state})")
        result = getattr(op, which)
        name = SELECTION_FROM_PROTO.get(selection)
        row = next((r for r in result.rows if r.selection == selection and r.count == count), None)
        if name is None or row is None:
            shown = pb.Selection.Name(selection) if selection in pb.Selection.values() else str(selection)
            raise InvalidArgument(f"operation {op.id} has no row with selection {shown} and count {count}")
        draws = max(1, result.random_draws) if name == "random" else 1
        check_range("draw", draw, 0, draws - 1)
        served = self.registry.get(op.bundle)
        resolved = self._recorded_reference(op.id, served, result.reference)
        filters: list[int] = []
        if name != WHOLE_NETWORK:
            filters = row_filters(resolved.profile, count, name, seed=result.seed, key=resolved.key, draw=draw)
            if draw == 0 and sorted(filters) != list(row.filters):
                raise FailedPrecondition(
                    f"the reference's profile no longer gives the evaluated filters (the bundle changed since "
                    f"operation {op.id}); run the evaluation again"
                )
        step = float(result.step_size) if which == "finetune" else 0.0
        edited = apply_edit(
            served.master,
            served.layout,
            kind=which,
            selection=name,
            filters=filters,
            reference_input=resolved.input,
            label=resolved.label,
            step_size=step,
            salient_filters=select_filters(resolved.profile, count, "most") if count else None,
        )
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in edited.state_dict().items()}, buffer)
        return ExportedEdit(data=buffer.getvalue(), filters=sorted(filters), step_size=step, seed=int(result.seed))

    def _recorded_reference(self, op_id: str, served: ServedBundle, state: pb.ReferenceState) -> _Resolved:
        if state.HasField("sample_id"):
            sample = int(state.sample_id)
            return _Resolved(*self._load(served, sample), key=reference_key(sample))
        kept = self._uploads.get(op_id)
        if kept is None:
            raise FailedPrecondition(
                f"operation {op_id} evaluated an uploaded image, which this server keeps only in memory for its "
                f"last {UPLOADS_KEPT} evaluations (not across restarts): evaluate it again, or index the image "
                "and evaluate it by sample id"
            )
        return kept

    # -- steps -------------------------------------------------------------------------

    def _plan(
        self, params, served: ServedBundle, neighbors: ServedBundle, *, whole_network: bool, members: int | None = None
    ) -> _Plan:
        """Counts, selections, draws, neighbour and collateral counts; InvalidArgument beyond the caps
        (``members``: a failure mode's other members, the most neighbours there can be)."""
        counts = _counts(params.counts, params.count_fractions, served.layout.num_filters)
        selections = tuple(params.selections) or SELECTIONS
        k = check_range("num_neighbors", params.num_neighbors or DEFAULT_NEIGHBORS, 1, self.config.max_neighbors)
        draws = check_range("random_draws", params.random_draws or DEFAULT_RANDOM_DRAWS, 1, MAX_RANDOM_DRAWS)
        collateral = 0
        if not params.skip_collateral:
            collateral = check_range("num_collateral", params.num_collateral or DEFAULT_COLLATERAL, 1, MAX_COLLATERAL)
        plan = _Plan(counts, selections, draws, k, collateral)
        _check_size(plan, neighbors, whole_network, members)
        _check_input_bytes(plan, served)
        return plan

    @staticmethod
    def _mode_reference(served: ServedBundle, mode_id: int) -> _Reference:
        """A failure mode as the reference: its medoid, and its other members as the neighbours
        (the medoid list's order first: closest to the mode's mean profile)."""
        from .browse import failure_modes  # computed once per bundle generation (seconds the first time)

        modes = failure_modes(served).modes
        if not 0 <= mode_id < len(modes):
            raise InvalidArgument(
                f"unknown failure_mode {mode_id}: bundle {served.name!r} has modes 0..{len(modes) - 1}"
            )
        mode = modes[mode_id]
        medoid = int(mode.medoid_ids[0])
        ordered = [int(i) for i in mode.medoid_ids[1:]]
        seen = {medoid, *ordered}
        ordered += [int(i) for i in mode.member_ids if int(i) not in seen]
        return _Reference(medoid, None, reference_key(medoid), members=tuple(ordered))

    def _reference(self, served: ServedBundle, query: int | ImageQuery) -> _Reference:
        if isinstance(query, ImageQuery):
            return _Reference(None, self.queries.prepare(served, query), reference_key(bytes(query.data)))
        served.meta(query)  # NotFound now rather than a failed operation later
        return _Reference(int(query), None, reference_key(int(query)))

    def _resolve(self, served: ServedBundle, reference: _Reference, progress: Progress) -> _Resolved:
        progress(0.0, "preparing the reference")
        if reference.image is not None:
            profile = self.queries.upload_profile(served, reference.image).vector
            return _Resolved(reference.image.tensor, reference.image.label, profile, reference.key)
        return _Resolved(*self._load(served, reference.sample_id), key=reference.key)

    @staticmethod
    def _load(served: ServedBundle, sample_id: int) -> tuple[torch.Tensor, int, np.ndarray]:
        """(input (C, H, W), label, standardized profile (F,)) of an indexed sample."""
        meta = served.meta(sample_id)
        x = served.preprocessing(served.bundle.load_image(sample_id))
        return x, int(meta.label), served.profile(sample_id)

    def _neighbors(
        self,
        neighbors: ServedBundle,
        served: ServedBundle,
        reference: _Reference,
        profile: np.ndarray,
        plan: _Plan,
        progress: Progress,
        should_stop: StopFlag,
    ):
        """(ids, inputs (N, C, H, W), labels (N,)) of the nearest misclassified samples."""
        k = plan.neighbors
        if reference.members is not None:  # a failure mode: its members are the neighbours
            ids = list(reference.members[:k])
            return (ids, *_load_images(neighbors, ids, should_stop, "failure-mode member"))
        progress(PREPARE_SHARE / 3, f"finding {k} nearest misclassified neighbors")
        exclude = [reference.sample_id] if reference.sample_id is not None and neighbors is served else None
        allowed = neighbors.bundle.rows_where(misclassified=True)
        hits = neighbors.bundle.search(np.asarray(profile, np.float32)[None], k, allowed=allowed, exclude_ids=exclude)[
            0
        ]
        ids = [int(i) for i, _ in hits]
        inputs, labels = _load_images(neighbors, ids, should_stop, "neighbor")
        return ids, inputs, labels

    def _collateral(
        self,
        neighbors: ServedBundle,
        served: ServedBundle,
        reference: _Reference,
        plan: _Plan,
        seed: int,
        progress: Progress,
        should_stop: StopFlag,
    ):
        """(inputs (C, ...), labels (C,)) of the collateral samples; (None, None) when skipped."""
        if plan.collateral == 0:
            return None, None
        progress(2 * PREPARE_SHARE / 3, f"loading {plan.collateral} correctly classified samples (collateral)")
        exclude = reference.sample_id if neighbors is served else None
        ids = collateral_ids(neighbors.bundle.ids, neighbors.bundle.correct, plan.collateral, seed, exclude)
        return _load_images(neighbors, ids, should_stop, "collateral")  # none correct: (None, None)


def collateral_ids(ids: np.ndarray, correct: np.ndarray, n: int, seed: int, exclude: int | None = None) -> list[int]:
    """``n`` sample ids (ascending) drawn without replacement, with ``numpy.random.default_rng(seed mod 2**64)``,
    from the correctly classified rows (``exclude``: an id never drawn); all of them when fewer."""
    candidates = np.asarray(ids)[np.asarray(correct, bool)]
    if exclude is not None:
        candidates = candidates[candidates != exclude]
    if len(candidates) <= n:
        return sorted(int(i) for i in candidates)
    rng = np.random.default_rng(int(seed) % (1 << 64))
    return sorted(int(i) for i in candidates[rng.choice(len(candidates), size=n, replace=False)])


def _load_images(bundle: ServedBundle, ids: list[int], should_stop: StopFlag, what: str):
    """(inputs (N, C, H, W), labels (N,)) of indexed samples, or (None, None) for no ids."""
    if not ids:
        return None, None
    images = []
    for i in ids:
        if should_stop():
            raise Cancelled(f"cancelled while loading {what} images")
        images.append(bundle.preprocessing(bundle.bundle.load_image(i)))
    labels = [int(m.label) for m in bundle.metas(ids)]
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _counts(counts: Sequence[int], fractions: Sequence[float], num_filters: int) -> tuple[int, ...]:
    """Distinct counts in request order (counts, then fractions of F), each 1..F; none: the default."""
    if not counts and not fractions:
        return default_counts(num_filters)
    if len(counts) + len(fractions) > MAX_COUNTS:
        raise InvalidArgument(
            f"counts and count_fractions have {len(counts) + len(fractions)} entries; at most {MAX_COUNTS}"
        )
    try:
        from_fractions = counts_from_fractions(fractions, num_filters)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    distinct = tuple(dict.fromkeys([int(c) for c in counts] + list(from_fractions)))
    for count in distinct:
        check_range("count", count, 1, num_filters)
    return distinct


def _check_size(plan: _Plan, neighbors: ServedBundle, whole_network: bool, members: int | None = None) -> None:
    """InvalidArgument when an evaluation would exceed MAX_EVALUATION_SIZE or MAX_EVALUATION_IMAGES.
    Neighbours and collateral samples are counted as evaluated: at most what the bundle has."""
    evaluated = min(plan.neighbors, int(neighbors.bundle.num_misclassified) if members is None else members)
    size = len(plan.counts) * len(plan.selections) * max(1, evaluated)
    if size > MAX_EVALUATION_SIZE:
        raise InvalidArgument(
            f"evaluation too large: {len(plan.counts)} counts x {len(plan.selections)} selections x "
            f"{max(1, evaluated)} neighbors = {size}; at most {MAX_EVALUATION_SIZE} (ask for fewer counts or neighbors)"
        )
    collateral = 0
    if plan.collateral:
        collateral = min(plan.collateral, int(neighbors.bundle.num_samples - neighbors.bundle.num_misclassified))
    per_count = sum(plan.draws if s == "random" else 1 for s in plan.selections)
    draws = len(plan.counts) * per_count + int(whole_network)
    rows = len(plan.counts) * len(plan.selections) + int(whole_network)
    images = draws * (1 + evaluated) + rows * collateral
    if images > MAX_EVALUATION_IMAGES:
        raise InvalidArgument(
            f"evaluation too large: {draws} draws x {1 + evaluated} images + {rows} rows x {collateral} collateral "
            f"samples = {images} images; at most {MAX_EVALUATION_IMAGES} (ask for fewer counts, random_draws, "
            "neighbors or num_collateral)"
        )


def _check_input_bytes(plan: _Plan, served: ServedBundle) -> None:
    """InvalidArgument when the reference, neighbours and collateral samples would not fit in
    MAX_EVALUATION_INPUT_BYTES (only for models with a fixed input shape)."""
    shape = served.preprocessing.input_shape
    if not shape:
        return
    per_image = 4 * math.prod(shape)
    images = 1 + plan.neighbors + plan.collateral
    if images * per_image > MAX_EVALUATION_INPUT_BYTES:
        raise InvalidArgument(
            f"evaluation too large: {images} inputs of {tuple(shape)} take {images * per_image / 2**20:.0f} MiB; "
            f"at most {MAX_EVALUATION_INPUT_BYTES >> 20} MiB (ask for fewer neighbors or num_collateral)"
        )


def _scaled(progress: Progress) -> Progress:
    """The evaluation's own 0..1 mapped after the preparation share."""
    return lambda fraction, message: progress(PREPARE_SHARE + (1 - PREPARE_SHARE) * fraction, message)
