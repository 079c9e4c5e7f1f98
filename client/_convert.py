"""Every conversion between parasal.v1 messages and the SDK's dataclasses, both ways.

`*_from_proto` reads a message into a value of `types.py`; `*_to_proto` writes it back
(used by the round-trip tests). Enum names are mapped here and nowhere else.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
from google.protobuf import timestamp_pb2

from parasal.v1 import saliency_pb2 as pb

from ._experiment_types import ExperimentResult
from ._images import encode_image
from .errors import Internal, InvalidArgument, status_code_from_number
from .types import (
    BundleInfo,
    Collateral,
    ConfusionCount,
    DrawSpread,
    Explanation,
    FilterScore,
    FinetuneResult,
    FinetuneRow,
    Layer,
    Neighbor,
    Operation,
    OperationErrorInfo,
    Profile,
    PruningResult,
    PruningRow,
    ReferenceState,
    Sample,
    SimilarFailures,
    SuppressionResult,
)

# ---------------------------------------------------------------------------------------
# Enums

_SELECTION_TO_PROTO = {
    "most": pb.SELECTION_MOST_SALIENT,
    "random": pb.SELECTION_RANDOM,
    "least": pb.SELECTION_LEAST_SALIENT,
    "whole_network": pb.SELECTION_WHOLE_NETWORK,
}
_SELECTION_FROM_PROTO = {v: k for k, v in _SELECTION_TO_PROTO.items()}
# What callers may request (the whole-network row is the server's own baseline).
REQUESTABLE_SELECTIONS = ("most", "random", "least")

_STATE_TO_PROTO = {
    "pending": pb.OPERATION_STATE_PENDING,
    "running": pb.OPERATION_STATE_RUNNING,
    "succeeded": pb.OPERATION_STATE_SUCCEEDED,
    "failed": pb.OPERATION_STATE_FAILED,
    "cancelled": pb.OPERATION_STATE_CANCELLED,
    "aborted": pb.OPERATION_STATE_ABORTED,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}

_KIND_TO_PROTO = {
    "finetune": pb.OPERATION_KIND_FINETUNE_EVALUATION,
    "pruning": pb.OPERATION_KIND_PRUNING_EVALUATION,
    "suppression": pb.OPERATION_KIND_SUPPRESSION,
    "experiment": pb.OPERATION_KIND_EXPERIMENT,
}
_KIND_FROM_PROTO = {v: k for k, v in _KIND_TO_PROTO.items()}


def selection_to_proto(name: str) -> int:
    """ "most" / "random" / "least" (case-insensitive) -> `Selection`; InvalidArgument otherwise."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in REQUESTABLE_SELECTIONS:
        raise InvalidArgument(f"unknown selection {name!r}; choose from {', '.join(REQUESTABLE_SELECTIONS)}")
    return _SELECTION_TO_PROTO[key]


def selection_from_proto(value: int) -> str:
    return _SELECTION_FROM_PROTO.get(value, "unspecified")


def state_to_proto(name: str | None) -> int:
    """Operation state name -> `OperationState`; None means any (UNSPECIFIED)."""
    if name is None or name == "":
        return pb.OPERATION_STATE_UNSPECIFIED
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _STATE_TO_PROTO:
        raise InvalidArgument(f"unknown operation state {name!r}; choose from {', '.join(_STATE_TO_PROTO)}")
    return _STATE_TO_PROTO[key]


def state_from_proto(value: int) -> str:
    return _STATE_FROM_PROTO.get(value, "unspecified")


def kind_from_proto(value: int) -> str:
    return _KIND_FROM_PROTO.get(value, "")


def kind_to_proto(name: str) -> int:
    return _KIND_TO_PROTO.get(name, pb.OPERATION_KIND_UNSPECIFIED)


# ---------------------------------------------------------------------------------------
# Small pieces


def timestamp_from_proto(parent, field: str) -> datetime | None:
    """A Timestamp field as an aware UTC datetime, None when unset."""
    if not parent.HasField(field):
        return None
    return getattr(parent, field).ToDatetime(tzinfo=timezone.utc)


def timestamp_to_proto(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _float32_array(values) -> np.ndarray:
    return np.fromiter(values, dtype=np.float32, count=len(values))


def _int64_array(values) -> np.ndarray:
    return np.fromiter(values, dtype=np.int64, count=len(values))


def image_input(image, label) -> pb.ImageInput:
    """`ImageInput` from any image argument `encode_image` accepts and its true label."""
    if label is None:
        raise InvalidArgument("an image query needs its true label (label=...)")
    return pb.ImageInput(data=encode_image(image), label=as_int(label, "label"))


#: Wire ranges of the proto's integer types: int32 for labels, counts, k and the like,
#: int64 for sample ids and seeds.
INT_RANGES = {32: (-(2**31), 2**31 - 1), 64: (-(2**63), 2**63 - 1)}


def as_int(value, name: str, bits: int = 32) -> int:
    """``value`` as an int that fits the field's proto type (int32, or int64 with bits=64);
    InvalidArgument naming the field otherwise (protobuf's own ValueError never escapes)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{name} must be an integer, got {_shown(value)}")
    low, high = INT_RANGES[bits]
    if not low <= int(value) <= high:
        raise InvalidArgument(f"{name} {value} does not fit an int{bits} ({low}..{high})")
    return int(value)


def _shown(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def layer_from_proto(msg: pb.Layer) -> Layer:
    return Layer(name=msg.name, kind=msg.kind, filters=msg.filters, offset=msg.offset)


def layer_to_proto(value: Layer) -> pb.Layer:
    return pb.Layer(name=value.name, kind=value.kind, filters=value.filters, offset=value.offset)


# Neighbour answers carry ten samples with ten filter scores each, so these two run ~110
# times per answer: positional arguments build a frozen dataclass in half the time of
# keywords (order as declared in types.py; the round-trip tests check it).
def filter_score_from_proto(msg: pb.FilterScore) -> FilterScore:
    return FilterScore(msg.index, msg.layer, msg.filter, msg.z)


def filter_score_to_proto(value: FilterScore) -> pb.FilterScore:
    return pb.FilterScore(index=value.index, layer=value.layer, filter=value.filter, z=value.z)


# ---------------------------------------------------------------------------------------
# SaliencyService


def bundle_info_from_proto(msg: pb.BundleInfo) -> BundleInfo:
    from ._convert_surprise import reference_info_from_proto

    return BundleInfo(
        name=msg.name,
        model=msg.model,
        model_fingerprint=msg.model_fingerprint,
        dataset=msg.dataset,
        num_samples=msg.num_samples,
        num_misclassified=msg.num_misclassified,
        num_filters=msg.num_filters,
        layers=[layer_from_proto(m) for m in msg.layers],
        index_type=msg.index_type,
        class_names=list(msg.class_names),
        created_at=timestamp_from_proto(msg, "created_at"),
        input_shape=tuple(msg.input_shape),
        reference=reference_info_from_proto(msg.reference) if msg.HasField("reference") else None,
    )


def bundle_info_to_proto(value: BundleInfo) -> pb.BundleInfo:
    from ._convert_surprise import reference_info_to_proto

    return pb.BundleInfo(
        name=value.name,
        model=value.model,
        model_fingerprint=value.model_fingerprint,
        dataset=value.dataset,
        num_samples=value.num_samples,
        num_misclassified=value.num_misclassified,
        num_filters=value.num_filters,
        layers=[layer_to_proto(v) for v in value.layers],
        index_type=value.index_type,
        class_names=value.class_names,
        created_at=timestamp_to_proto(value.created_at),
        input_shape=value.input_shape,
        reference=reference_info_to_proto(value.reference) if value.reference is not None else None,
    )


def sample_from_proto(msg: pb.Sample, image_png: bytes | None = None) -> Sample:
    return Sample(
        msg.id,
        msg.uri,
        msg.label,
        msg.predicted,
        msg.correct,
        msg.true_confidence,
        msg.predicted_confidence,
        msg.loss,
        [FilterScore(m.index, m.layer, m.filter, m.z) for m in msg.top_filters],
        msg.label_name,
        msg.predicted_name,
        image_png or None,
        beta=msg.beta if msg.HasField("beta") else None,
        num_surprise=msg.num_surprise,
        num_expectation=msg.num_expectation,
        failure_mode=msg.failure_mode if msg.HasField("failure_mode") else None,
    )


def sample_to_proto(value: Sample) -> pb.Sample:
    return pb.Sample(
        id=value.id,
        uri=value.uri,
        label=value.label,
        predicted=value.predicted,
        correct=value.correct,
        true_confidence=value.true_confidence,
        predicted_confidence=value.predicted_confidence,
        loss=value.loss,
        top_filters=[filter_score_to_proto(v) for v in value.top_filters],
        label_name=value.label_name,
        predicted_name=value.predicted_name,
        beta=value.beta,
        num_surprise=value.num_surprise,
        num_expectation=value.num_expectation,
        failure_mode=value.failure_mode,
    )


def get_sample_response_from_proto(msg: pb.GetSampleResponse) -> Sample:
    return sample_from_proto(msg.sample, image_png=msg.image_png)


def get_sample_response_to_proto(value: Sample) -> pb.GetSampleResponse:
    return pb.GetSampleResponse(sample=sample_to_proto(value), image_png=value.image_png or b"")


def profile_from_proto(msg: pb.GetProfileResponse) -> Profile:
    return Profile(
        sample_id=msg.sample_id if msg.HasField("sample_id") else None,
        label=msg.label,
        predicted=msg.predicted,
        true_confidence=msg.true_confidence,
        predicted_confidence=msg.predicted_confidence,
        loss=msg.loss,
        top_filters=[filter_score_from_proto(m) for m in msg.top_filters],
        vector=_float32_array(msg.vector) if len(msg.vector) else None,
    )


def profile_to_proto(value: Profile) -> pb.GetProfileResponse:
    msg = pb.GetProfileResponse(
        label=value.label,
        predicted=value.predicted,
        true_confidence=value.true_confidence,
        predicted_confidence=value.predicted_confidence,
        loss=value.loss,
        top_filters=[filter_score_to_proto(v) for v in value.top_filters],
    )
    if value.sample_id is not None:
        msg.sample_id = value.sample_id
    if value.vector is not None:
        msg.vector.extend(np.asarray(value.vector, dtype=np.float32).tolist())
    return msg


def similar_failures_from_proto(msg: pb.FindSimilarFailuresResponse) -> SimilarFailures:
    return SimilarFailures(
        neighbors=[Neighbor(m.id, m.similarity, sample_from_proto(m.sample)) for m in msg.neighbors],
        confusions=[ConfusionCount(label=m.label, predicted=m.predicted, count=m.count) for m in msg.confusions],
    )


def similar_failures_to_proto(value: SimilarFailures) -> pb.FindSimilarFailuresResponse:
    return pb.FindSimilarFailuresResponse(
        neighbors=[
            pb.Neighbor(id=n.id, similarity=n.similarity, sample=sample_to_proto(n.sample)) for n in value.neighbors
        ],
        confusions=[pb.ConfusionCount(label=c.label, predicted=c.predicted, count=c.count) for c in value.confusions],
    )


def explanation_from_proto(msg: pb.ExplainInputResponse) -> Explanation:
    if msg.height < 0 or msg.width < 0 or len(msg.heatmap) != msg.height * msg.width:
        raise Internal(f"malformed response: heatmap has {len(msg.heatmap)} values for {msg.height}x{msg.width}")
    return Explanation(
        heatmap=_float32_array(msg.heatmap).reshape(msg.height, msg.width),
        overlay_png=msg.overlay_png,
        filters=[filter_score_from_proto(m) for m in msg.filters],
        label=msg.label,
        predicted=msg.predicted,
    )


def explanation_to_proto(value: Explanation) -> pb.ExplainInputResponse:
    heatmap = np.asarray(value.heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {heatmap.shape}")
    return pb.ExplainInputResponse(
        height=heatmap.shape[0],
        width=heatmap.shape[1],
        heatmap=heatmap.ravel().tolist(),
        overlay_png=value.overlay_png,
        filters=[filter_score_to_proto(v) for v in value.filters],
        label=value.label,
        predicted=value.predicted,
    )


# ---------------------------------------------------------------------------------------
# Evaluations and operations


def reference_from_proto(msg: pb.ReferenceState) -> ReferenceState:
    return ReferenceState(
        sample_id=msg.sample_id if msg.HasField("sample_id") else None,
        label=msg.label,
        predicted=msg.predicted,
        true_confidence=msg.true_confidence,
        predicted_confidence=msg.predicted_confidence,
    )


def reference_to_proto(value: ReferenceState) -> pb.ReferenceState:
    msg = pb.ReferenceState(
        label=value.label,
        predicted=value.predicted,
        true_confidence=value.true_confidence,
        predicted_confidence=value.predicted_confidence,
    )
    if value.sample_id is not None:
        msg.sample_id = value.sample_id
    return msg


def measured(value: float, evaluated: int = 1) -> float | None:
    """A measurement as the SDK gives it: None ("not measured") when nothing was evaluated
    or the wire carries NaN (the server's "no value"), so JSON never sees NaN."""
    return None if evaluated <= 0 or math.isnan(value) else value


def _wire_float(value: float | None) -> float:
    return math.nan if value is None else value


def collateral_from_proto(msg: pb.Collateral) -> Collateral | None:
    """None when not measured (evaluated 0: skip_collateral, or no correct sample to measure on)."""
    if msg.evaluated == 0:
        return None
    n = msg.evaluated
    return Collateral(
        evaluated=n,
        accuracy_delta=measured(msg.accuracy_delta, n),
        flips=msg.flips,
        true_confidence_delta=measured(msg.true_confidence_delta, n),
    )


def collateral_to_proto(value: Collateral | None) -> pb.Collateral:
    if value is None:
        return pb.Collateral(evaluated=0, accuracy_delta=math.nan, flips=0, true_confidence_delta=math.nan)
    return pb.Collateral(
        evaluated=value.evaluated,
        accuracy_delta=_wire_float(value.accuracy_delta),
        flips=value.flips,
        true_confidence_delta=_wire_float(value.true_confidence_delta),
    )


def spread_from_proto(msg: pb.DrawSpread) -> DrawSpread | None:
    """None for rows without draws (most / least / whole network)."""
    if msg.draws == 0:
        return None
    return DrawSpread(
        draws=msg.draws,
        reference_true_confidence_delta_std=measured(msg.reference_true_confidence_delta_std),
        neighbors_true_confidence_delta_std=measured(msg.neighbors_true_confidence_delta_std),
        neighbors_corrected_fraction_std=measured(msg.neighbors_corrected_fraction_std),
        incorrect_confidence_delta_std=measured(msg.incorrect_confidence_delta_std),
    )


def spread_to_proto(value: DrawSpread | None) -> pb.DrawSpread | None:
    if value is None:
        return None
    return pb.DrawSpread(
        draws=value.draws,
        reference_true_confidence_delta_std=_wire_float(value.reference_true_confidence_delta_std),
        neighbors_true_confidence_delta_std=_wire_float(value.neighbors_true_confidence_delta_std),
        neighbors_corrected_fraction_std=_wire_float(value.neighbors_corrected_fraction_std),
        incorrect_confidence_delta_std=_wire_float(value.incorrect_confidence_delta_std),
    )


def finetune_row_from_proto(msg: pb.FinetuneRow) -> FinetuneRow:
    n = msg.neighbors_evaluated
    return FinetuneRow(
        selection=selection_from_proto(msg.selection),
        count=msg.count,
        reference_corrected=msg.reference_corrected,
        reference_true_confidence_delta=msg.reference_true_confidence_delta,
        neighbors_corrected_fraction=measured(msg.neighbors_corrected_fraction, n),
        neighbors_true_confidence_delta=measured(msg.neighbors_true_confidence_delta, n),
        neighbors_evaluated=n,
        parameters=msg.parameters,
        filters=tuple(msg.filters),
        collateral=collateral_from_proto(msg.collateral),
        spread=spread_from_proto(msg.spread),
        reference_corrected_fraction=msg.reference_corrected_fraction,
    )


def finetune_row_to_proto(value: FinetuneRow) -> pb.FinetuneRow:
    return pb.FinetuneRow(
        selection=_SELECTION_TO_PROTO.get(value.selection, pb.SELECTION_UNSPECIFIED),
        count=value.count,
        reference_corrected=value.reference_corrected,
        reference_true_confidence_delta=value.reference_true_confidence_delta,
        neighbors_corrected_fraction=_wire_float(value.neighbors_corrected_fraction),
        neighbors_true_confidence_delta=_wire_float(value.neighbors_true_confidence_delta),
        neighbors_evaluated=value.neighbors_evaluated,
        parameters=value.parameters,
        filters=list(value.filters),
        collateral=collateral_to_proto(value.collateral),
        spread=spread_to_proto(value.spread),
        reference_corrected_fraction=value.reference_corrected_fraction,
    )


def pruning_row_from_proto(msg: pb.PruningRow) -> PruningRow:
    n = msg.neighbors_evaluated
    return PruningRow(
        selection=selection_from_proto(msg.selection),
        count=msg.count,
        corrected=msg.corrected,
        incorrect_confidence_delta=msg.incorrect_confidence_delta,
        true_confidence_delta=msg.true_confidence_delta,
        neighbors_corrected_fraction=measured(msg.neighbors_corrected_fraction, n),
        neighbors_incorrect_confidence_delta=measured(msg.neighbors_incorrect_confidence_delta, n),
        neighbors_true_confidence_delta=measured(msg.neighbors_true_confidence_delta, n),
        neighbors_evaluated=n,
        filters=tuple(msg.filters),
        collateral=collateral_from_proto(msg.collateral),
        spread=spread_from_proto(msg.spread),
        reference_corrected_fraction=msg.reference_corrected_fraction,
    )


def pruning_row_to_proto(value: PruningRow) -> pb.PruningRow:
    return pb.PruningRow(
        selection=_SELECTION_TO_PROTO.get(value.selection, pb.SELECTION_UNSPECIFIED),
        count=value.count,
        corrected=value.corrected,
        incorrect_confidence_delta=value.incorrect_confidence_delta,
        true_confidence_delta=value.true_confidence_delta,
        neighbors_corrected_fraction=_wire_float(value.neighbors_corrected_fraction),
        neighbors_incorrect_confidence_delta=_wire_float(value.neighbors_incorrect_confidence_delta),
        neighbors_true_confidence_delta=_wire_float(value.neighbors_true_confidence_delta),
        neighbors_evaluated=value.neighbors_evaluated,
        filters=list(value.filters),
        collateral=collateral_to_proto(value.collateral),
        spread=spread_to_proto(value.spread),
        reference_corrected_fraction=value.reference_corrected_fraction,
    )


def finetune_result_from_proto(msg: pb.FinetuneEvaluationResult) -> FinetuneResult:
    return FinetuneResult(
        reference=reference_from_proto(msg.reference),
        neighbor_ids=_int64_array(msg.neighbor_ids),
        rows=[finetune_row_from_proto(m) for m in msg.rows],
        step_size=msg.step_size,
        seed=msg.seed,
        random_draws=msg.random_draws,
        failure_mode=msg.failure_mode if msg.HasField("failure_mode") else None,
    )


def finetune_result_to_proto(value: FinetuneResult) -> pb.FinetuneEvaluationResult:
    msg = pb.FinetuneEvaluationResult(
        reference=reference_to_proto(value.reference),
        neighbor_ids=np.asarray(value.neighbor_ids, dtype=np.int64).tolist(),
        rows=[finetune_row_to_proto(r) for r in value.rows],
        step_size=value.step_size,
        seed=value.seed,
        random_draws=value.random_draws,
    )
    if value.failure_mode is not None:
        msg.failure_mode = value.failure_mode
    return msg


def pruning_result_from_proto(msg: pb.PruningEvaluationResult) -> PruningResult:
    return PruningResult(
        reference=reference_from_proto(msg.reference),
        neighbor_ids=_int64_array(msg.neighbor_ids),
        rows=[pruning_row_from_proto(m) for m in msg.rows],
        seed=msg.seed,
        random_draws=msg.random_draws,
    )


def pruning_result_to_proto(value: PruningResult) -> pb.PruningEvaluationResult:
    return pb.PruningEvaluationResult(
        reference=reference_to_proto(value.reference),
        neighbor_ids=np.asarray(value.neighbor_ids, dtype=np.int64).tolist(),
        rows=[pruning_row_to_proto(r) for r in value.rows],
        seed=value.seed,
        random_draws=value.random_draws,
    )


def operation_from_proto(msg: pb.Operation) -> Operation:
    which = msg.WhichOneof("result")
    if which == "finetune":
        result = finetune_result_from_proto(msg.finetune)
    elif which == "pruning":
        result = pruning_result_from_proto(msg.pruning)
    elif which == "suppression":
        from ._convert_surprise import suppression_result_from_proto

        result = suppression_result_from_proto(msg.suppression)
    elif which == "experiment":
        from ._convert_experiment import experiment_result_from_proto

        result = experiment_result_from_proto(msg.experiment)
    else:
        result = None
    error = None
    if msg.HasField("error"):
        error = OperationErrorInfo(code=status_code_from_number(msg.error.code), message=msg.error.message)
    return Operation(
        id=msg.id,
        kind=kind_from_proto(msg.kind),
        state=state_from_proto(msg.state),
        progress=msg.progress,
        message=msg.message,
        bundle=msg.bundle,
        created_at=timestamp_from_proto(msg, "created_at"),
        updated_at=timestamp_from_proto(msg, "updated_at"),
        result=result,
        error=error,
    )


def operation_to_proto(value: Operation) -> pb.Operation:
    msg = pb.Operation(
        id=value.id,
        kind=kind_to_proto(value.kind),
        state=_STATE_TO_PROTO.get(value.state, pb.OPERATION_STATE_UNSPECIFIED),
        progress=value.progress,
        message=value.message,
        bundle=value.bundle,
        created_at=timestamp_to_proto(value.created_at),
        updated_at=timestamp_to_proto(value.updated_at),
    )
    if isinstance(value.result, FinetuneResult):
        msg.finetune.CopyFrom(finetune_result_to_proto(value.result))
    elif isinstance(value.result, PruningResult):
        msg.pruning.CopyFrom(pruning_result_to_proto(value.result))
    elif isinstance(value.result, SuppressionResult):
        from ._convert_surprise import suppression_result_to_proto

        msg.suppression.CopyFrom(suppression_result_to_proto(value.result))
    elif isinstance(value.result, ExperimentResult):
        from ._convert_experiment import experiment_result_to_proto

        msg.experiment.CopyFrom(experiment_result_to_proto(value.result))
    if value.error is not None:
        msg.error.code = value.error.code.value[0]
        msg.error.message = value.error.message
    return msg
