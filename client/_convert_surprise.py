"""Conversions between the surprise/suppression messages and `_surprise_types`, both ways.

Part of `_convert.py`'s job (which calls these for BundleInfo.reference and the
suppression operation result), kept apart so that module stays one screenful per topic.
"""

from __future__ import annotations

import numpy as np

from parasal.v1 import saliency_pb2 as pb

from ._convert import _float32_array, reference_from_proto, reference_to_proto
from ._surprise_types import (
    Exemplar,
    FilterDeviation,
    ReferenceDataInfo,
    SuppressionResult,
    SuppressionRow,
    Surprise,
)
from .errors import Internal

# ---------------------------------------------------------------------------------------
# BundleInfo.reference


def reference_info_from_proto(msg: pb.ReferenceDataInfo) -> ReferenceDataInfo:
    return ReferenceDataInfo(
        dataset=msg.dataset,
        num_samples=msg.num_samples,
        layer=msg.layer,
        method=msg.method,
        num_filters=msg.num_filters,
        exemplars_per_filter=msg.exemplars_per_filter,
    )


def reference_info_to_proto(value: ReferenceDataInfo) -> pb.ReferenceDataInfo:
    return pb.ReferenceDataInfo(
        dataset=value.dataset,
        num_samples=value.num_samples,
        layer=value.layer,
        method=value.method,
        num_filters=value.num_filters,
        exemplars_per_filter=value.exemplars_per_filter,
    )


# ---------------------------------------------------------------------------------------
# ExplainSurprise


def exemplar_from_proto(msg: pb.Exemplar) -> Exemplar:
    return Exemplar(
        id=msg.id,
        uri=msg.uri,
        label=msg.label,
        label_name=msg.label_name,
        activation=msg.activation,
        image_png=msg.image_png or None,
    )


def exemplar_to_proto(value: Exemplar) -> pb.Exemplar:
    return pb.Exemplar(
        id=value.id,
        uri=value.uri,
        label=value.label,
        label_name=value.label_name,
        activation=value.activation,
        image_png=value.image_png or b"",
    )


def region_mask_from_proto(msg: pb.Region) -> np.ndarray:
    """(H, W) bool from the row-major byte mask (1 inside)."""
    if msg.height < 0 or msg.width < 0 or len(msg.mask) != msg.height * msg.width:
        raise Internal(f"malformed response: region mask has {len(msg.mask)} bytes for {msg.height}x{msg.width}")
    return np.frombuffer(msg.mask, dtype=np.uint8).reshape(msg.height, msg.width) != 0


def filter_deviation_from_proto(msg: pb.FilterDeviation) -> FilterDeviation:
    has_region = msg.HasField("region")
    return FilterDeviation(
        layer=msg.layer,
        filter=msg.filter,
        alpha=msg.alpha,
        mean=msg.mean,
        threshold=msg.threshold,
        deviation=msg.deviation,
        region_png=msg.region.png if has_region else None,
        region_mask=region_mask_from_proto(msg.region) if has_region else None,
        exemplars=[exemplar_from_proto(m) for m in msg.exemplars],
    )


def filter_deviation_to_proto(value: FilterDeviation) -> pb.FilterDeviation:
    msg = pb.FilterDeviation(
        layer=value.layer,
        filter=value.filter,
        alpha=value.alpha,
        mean=value.mean,
        threshold=value.threshold,
        deviation=value.deviation,
        exemplars=[exemplar_to_proto(e) for e in value.exemplars],
    )
    if value.region_mask is not None or value.region_png is not None:
        mask = np.zeros((0, 0), bool) if value.region_mask is None else np.asarray(value.region_mask, bool)
        msg.region.CopyFrom(
            pb.Region(
                png=value.region_png or b"",
                height=mask.shape[0],
                width=mask.shape[1],
                mask=mask.astype(np.uint8).tobytes(),
            )
        )
    return msg


def surprise_from_proto(msg: pb.ExplainSurpriseResponse) -> Surprise:
    return Surprise(
        sample_id=msg.sample_id if msg.HasField("sample_id") else None,
        label=msg.label,
        predicted=msg.predicted,
        true_confidence=msg.true_confidence,
        predicted_confidence=msg.predicted_confidence,
        beta=msg.beta,
        layer=msg.layer,
        method=msg.method,
        high_percentile=msg.high_percentile,
        low_percentile=msg.low_percentile,
        surprise=[filter_deviation_from_proto(m) for m in msg.surprise],
        expectation=[filter_deviation_from_proto(m) for m in msg.expectation],
        alpha=_float32_array(msg.alpha) if len(msg.alpha) else None,
        class_mean=_float32_array(msg.class_mean) if len(msg.class_mean) else None,
    )


def surprise_to_proto(value: Surprise) -> pb.ExplainSurpriseResponse:
    msg = pb.ExplainSurpriseResponse(
        label=value.label,
        predicted=value.predicted,
        true_confidence=value.true_confidence,
        predicted_confidence=value.predicted_confidence,
        beta=value.beta,
        layer=value.layer,
        method=value.method,
        high_percentile=value.high_percentile,
        low_percentile=value.low_percentile,
        surprise=[filter_deviation_to_proto(d) for d in value.surprise],
        expectation=[filter_deviation_to_proto(d) for d in value.expectation],
    )
    if value.sample_id is not None:
        msg.sample_id = value.sample_id
    if value.alpha is not None:
        msg.alpha.extend(np.asarray(value.alpha, np.float32).tolist())
    if value.class_mean is not None:
        msg.class_mean.extend(np.asarray(value.class_mean, np.float32).tolist())
    return msg


# ---------------------------------------------------------------------------------------
# The suppression operation's result


def suppression_row_from_proto(msg: pb.SuppressionRow) -> SuppressionRow:
    return SuppressionRow(
        method=msg.method,
        segments=msg.segments,
        blanked=msg.blanked,
        predicted=msg.predicted,
        true_confidence=msg.true_confidence,
        corrected=msg.corrected,
    )


def suppression_row_to_proto(value: SuppressionRow) -> pb.SuppressionRow:
    return pb.SuppressionRow(
        method=value.method,
        segments=value.segments,
        blanked=value.blanked,
        predicted=value.predicted,
        true_confidence=value.true_confidence,
        corrected=value.corrected,
    )


def suppression_result_from_proto(msg: pb.SuppressionResult) -> SuppressionResult:
    return SuppressionResult(
        reference=reference_from_proto(msg.reference),
        layer=msg.layer,
        filter=msg.filter,
        rows=[suppression_row_from_proto(m) for m in msg.rows],
        fixed_by_surprise=msg.fixed_by_surprise,
        fixed_by_vanilla=msg.fixed_by_vanilla,
    )


def suppression_result_to_proto(value: SuppressionResult) -> pb.SuppressionResult:
    return pb.SuppressionResult(
        reference=reference_to_proto(value.reference),
        layer=value.layer,
        filter=value.filter,
        rows=[suppression_row_to_proto(r) for r in value.rows],
        fixed_by_surprise=value.fixed_by_surprise,
        fixed_by_vanilla=value.fixed_by_vanilla,
    )
