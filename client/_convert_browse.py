"""Wire conversions for browsing (ListSamples, GetConfusionMatrix, ListFailureModes)."""

from __future__ import annotations

import numpy as np

from parasal.v1 import saliency_pb2 as pb

from ._convert import filter_score_from_proto, filter_score_to_proto, sample_from_proto, sample_to_proto
from .types import (
    ConfusionCount,
    ConfusionMatrix,
    FailureMapPoint,
    FailureMode,
    FailureModes,
    FilterCount,
    SamplePage,
)

__all__ = [
    "CORRECTNESS_TO_PROTO",
    "ORDER_TO_PROTO",
    "confusion_matrix_from_proto",
    "confusion_matrix_to_proto",
    "filter_count_from_proto",
    "filter_count_to_proto",
    "failure_mode_from_proto",
    "failure_mode_to_proto",
    "failure_map_point_from_proto",
    "failure_map_point_to_proto",
    "failure_modes_from_proto",
    "failure_modes_to_proto",
    "sample_page_from_proto",
    "sample_page_to_proto",
]

#: `correct=` of `Client.samples`: None (any), True, False.
CORRECTNESS_TO_PROTO = {
    None: pb.CORRECTNESS_UNSPECIFIED,
    True: pb.CORRECTNESS_CORRECT,
    False: pb.CORRECTNESS_MISCLASSIFIED,
}
ORDER_TO_PROTO = {
    "id": pb.SAMPLE_ORDER_ID,
    "loss": pb.SAMPLE_ORDER_LOSS,
    "true_confidence": pb.SAMPLE_ORDER_TRUE_CONFIDENCE,
    "predicted_confidence": pb.SAMPLE_ORDER_PREDICTED_CONFIDENCE,
    "beta": pb.SAMPLE_ORDER_BETA,
}


def confusion_matrix_from_proto(msg: pb.GetConfusionMatrixResponse) -> ConfusionMatrix:
    c = int(msg.num_classes)
    counts = np.asarray(msg.counts, np.int64)
    return ConfusionMatrix(
        num_classes=c,
        class_names=list(msg.class_names),
        counts=counts.reshape(c, c) if counts.size == c * c else counts.reshape(0, 0),
        per_class_accuracy=np.asarray(msg.per_class_accuracy, np.float32),
        accuracy=msg.accuracy,
        num_samples=msg.num_samples,
    )


def confusion_matrix_to_proto(value: ConfusionMatrix) -> pb.GetConfusionMatrixResponse:
    return pb.GetConfusionMatrixResponse(
        num_classes=value.num_classes,
        class_names=value.class_names,
        counts=np.asarray(value.counts, np.int64).reshape(-1).tolist(),
        per_class_accuracy=np.asarray(value.per_class_accuracy, np.float32).tolist(),
        accuracy=value.accuracy,
        num_samples=value.num_samples,
    )


def filter_count_from_proto(msg: pb.FilterCount) -> FilterCount:
    return FilterCount(msg.layer, msg.filter, msg.count)


def filter_count_to_proto(value: FilterCount) -> pb.FilterCount:
    return pb.FilterCount(layer=value.layer, filter=value.filter, count=value.count)


def failure_mode_from_proto(msg: pb.FailureMode) -> FailureMode:
    return FailureMode(
        id=msg.id,
        size=msg.size,
        confusions=[ConfusionCount(c.label, c.predicted, c.count) for c in msg.confusions],
        top_filters=[filter_score_from_proto(f) for f in msg.top_filters],
        medoid_ids=np.asarray(msg.medoid_ids, np.int64),
        cohesion=msg.cohesion,
        shared_surprise=[filter_count_from_proto(f) for f in msg.shared_surprise],
        shared_expectation=[filter_count_from_proto(f) for f in msg.shared_expectation],
        member_ids=np.asarray(msg.member_ids, np.int64),
    )


def failure_mode_to_proto(value: FailureMode) -> pb.FailureMode:
    return pb.FailureMode(
        id=value.id,
        size=value.size,
        confusions=[pb.ConfusionCount(label=c.label, predicted=c.predicted, count=c.count) for c in value.confusions],
        top_filters=[filter_score_to_proto(f) for f in value.top_filters],
        medoid_ids=value.medoid_ids.tolist(),
        cohesion=value.cohesion,
        shared_surprise=[filter_count_to_proto(f) for f in value.shared_surprise],
        shared_expectation=[filter_count_to_proto(f) for f in value.shared_expectation],
        member_ids=value.member_ids.tolist(),
    )


def failure_map_point_from_proto(msg: pb.FailureMapPoint) -> FailureMapPoint:
    return FailureMapPoint(msg.id, msg.x, msg.y, msg.label, msg.predicted, msg.failure_mode)


def failure_map_point_to_proto(value: FailureMapPoint) -> pb.FailureMapPoint:
    return pb.FailureMapPoint(
        id=value.id, x=value.x, y=value.y, label=value.label, predicted=value.predicted, failure_mode=value.failure_mode
    )


def failure_modes_from_proto(msg: pb.ListFailureModesResponse) -> FailureModes:
    return FailureModes(
        modes=[failure_mode_from_proto(m) for m in msg.modes],
        method=msg.method,
        silhouette=msg.silhouette,
        num_misclassified=msg.num_misclassified,
        num_unassigned=msg.num_unassigned,
        map=[failure_map_point_from_proto(p) for p in msg.map],
        map_method=msg.map_method,
    )


def failure_modes_to_proto(value: FailureModes) -> pb.ListFailureModesResponse:
    return pb.ListFailureModesResponse(
        modes=[failure_mode_to_proto(m) for m in value.modes],
        method=value.method,
        silhouette=value.silhouette,
        num_misclassified=value.num_misclassified,
        num_unassigned=value.num_unassigned,
        map=[failure_map_point_to_proto(p) for p in value.map],
        map_method=value.map_method,
    )


def sample_page_from_proto(msg: pb.ListSamplesResponse) -> SamplePage:
    return SamplePage([sample_from_proto(s) for s in msg.samples], msg.next_page_token, msg.total_size)


def sample_page_to_proto(value: SamplePage) -> pb.ListSamplesResponse:
    return pb.ListSamplesResponse(
        samples=[sample_to_proto(s) for s in value.samples],
        next_page_token=value.next_page_token,
        total_size=value.total_size,
    )
