"""Every conversion between parasal.v1 messages and the server's domain values, in one place.

``*_to_proto`` writes a domain value into a message; ``*_from_proto`` reads one back
(requests, and the round-trip tests). Enum names are mapped here and nowhere else. A
request that cannot be read (no query set, an unrequestable selection) raises the domain
:class:`InvalidArgument`, like any other bad input.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from google.protobuf import timestamp_pb2

from parasal.core import LayerSpan
from parasal.core.evaluation import (
    WHOLE_NETWORK,
    FinetuneReport,
    FinetuneRow,
    PruningReport,
    PruningRow,
    ReferenceState,
)
from parasal.indexer import SampleMeta
from parasal.v1 import saliency_pb2 as pb

from .errors import InvalidArgument
from .queries import (
    Confusion,
    Explanation,
    FilterScore,
    ImageQuery,
    Neighbor,
    ProfileResult,
    Query,
    SampleRecord,
    SimilarResult,
)

#: Profile index -> (layer, filter within the layer): ``FilterLayout.locate``.
Locate = Callable[[int], "tuple[LayerSpan, int]"]

# ---------------------------------------------------------------------------------------
# Enums and scalars

SELECTION_TO_PROTO = {
    "most": pb.SELECTION_MOST_SALIENT,
    "random": pb.SELECTION_RANDOM,
    "least": pb.SELECTION_LEAST_SALIENT,
    WHOLE_NETWORK: pb.SELECTION_WHOLE_NETWORK,
}
SELECTION_FROM_PROTO = {v: k for k, v in SELECTION_TO_PROTO.items()}
#: What a request may ask for; the whole-network row is always reported by fine-tuning.
REQUESTABLE = (pb.SELECTION_MOST_SALIENT, pb.SELECTION_RANDOM, pb.SELECTION_LEAST_SALIENT)


def selection_to_proto(name: str) -> int:
    return SELECTION_TO_PROTO[name]


def selection_from_proto(value: int) -> str:
    """A requested selection; InvalidArgument for UNSPECIFIED, WHOLE_NETWORK or unknown values."""
    if value not in REQUESTABLE:
        name = pb.Selection.Name(value) if value in pb.Selection.values() else str(value)
        raise InvalidArgument(f"selection {name} cannot be requested; use MOST_SALIENT, RANDOM or LEAST_SALIENT")
    return SELECTION_FROM_PROTO[value]


def selections_from_proto(values: Iterable[int]) -> tuple[str, ...]:
    """Requested selections in request order, duplicates dropped; empty stays empty (= default)."""
    return tuple(dict.fromkeys(selection_from_proto(v) for v in values))


def timestamp(ns: int | None = None) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(time.time_ns() if ns is None else int(ns))
    return ts


# ---------------------------------------------------------------------------------------
# Queries (requests -> domain)


def image_query_from_proto(message: pb.ImageInput) -> ImageQuery:
    return ImageQuery(bytes(message.data), int(message.label))


def image_query_to_proto(query: ImageQuery) -> pb.ImageInput:
    return pb.ImageInput(data=query.data, label=query.label)


def query_from_proto(request, field: str = "query") -> Query:
    """The oneof ``field`` of a request: sample id (int), ImageQuery or vector (float32 array)."""
    which = request.WhichOneof(field)
    if which is None:
        raise InvalidArgument(f"the request sets no {field} (a sample id or an image)")
    if which == "image":
        return image_query_from_proto(request.image)
    if which == "vector":
        return np.asarray(request.vector.values, np.float32)
    return int(getattr(request, which))


def query_to_proto(query: Query, request, field: str = "query") -> None:
    """Writes a query into ``request``'s oneof (whose id field is sample_id)."""
    if isinstance(query, ImageQuery):
        request.image.CopyFrom(image_query_to_proto(query))
    elif isinstance(query, np.ndarray):
        request.vector.values[:] = query.tolist()
    else:
        request.sample_id = int(query)


# ---------------------------------------------------------------------------------------
# Samples, filters, profiles


def filter_score_to_proto(score: FilterScore) -> pb.FilterScore:
    return pb.FilterScore(index=score.index, layer=score.layer, filter=score.filter, z=score.z)


def filter_score_from_proto(message: pb.FilterScore) -> FilterScore:
    return FilterScore(int(message.index), message.layer, int(message.filter), float(message.z))


def sample_to_proto(
    meta: SampleMeta, locate: Locate, class_names: Sequence[str] = (), top_filters: bool = True
) -> pb.Sample:
    """``locate`` names each top filter's layer; ``class_names`` (may be empty) the labels;
    ``top_filters=False`` leaves the top filters out."""

    def name(label: int) -> str:
        return class_names[label] if 0 <= label < len(class_names) else ""

    message = pb.Sample(
        id=meta.id,
        uri=meta.uri,
        label=meta.label,
        predicted=meta.predicted,
        true_confidence=meta.true_confidence,
        predicted_confidence=meta.predicted_confidence,
        loss=meta.loss,
        correct=meta.correct,
        label_name=name(meta.label),
        predicted_name=name(meta.predicted),
    )
    add = message.top_filters.add  # half the cost of building FilterScore messages and a list
    for index, z in meta.top_filters if top_filters else ():
        span, j = locate(int(index))
        add(index=int(index), layer=span.name, filter=j, z=float(z))
    return message


def sample_from_proto(message: pb.Sample) -> SampleMeta:
    return SampleMeta(
        id=int(message.id),
        uri=message.uri,
        label=int(message.label),
        predicted=int(message.predicted),
        true_confidence=float(message.true_confidence),
        predicted_confidence=float(message.predicted_confidence),
        loss=float(message.loss),
        correct=bool(message.correct),
        top_filters=[(int(f.index), float(f.z)) for f in message.top_filters],
    )


class SampleMessages:
    """``pb.Sample`` by sample id for one bundle, each built once.

    Bundles never change while served, and a neighbour answer names ten samples (with ten
    named top filters each, when asked): building those messages was the largest part of
    its cost. Cached messages are shared, so they are only ever copied into responses
    (protobuf copies a message assigned to a field), never changed. ``top_filters=False``
    builds them without their top filters.
    """

    def __init__(
        self,
        meta: Callable[[int], SampleMeta],
        locate: Locate,
        class_names: Sequence[str] = (),
        maxsize: int = 100_000,
        top_filters: bool = True,
    ):
        self._meta, self._locate, self._class_names = meta, locate, list(class_names)
        self._top_filters = top_filters
        self._cached = functools.lru_cache(maxsize=maxsize)(self._build)

    def __call__(self, sample_id: int) -> pb.Sample:
        return self._cached(int(sample_id))

    def warm(self, ids: Iterable[int]) -> None:
        """Build (and cache) the messages of ``ids`` now rather than on first use."""
        for i in ids:
            self._cached(int(i))

    def _build(self, sample_id: int) -> pb.Sample:
        return sample_to_proto(self._meta(sample_id), self._locate, self._class_names, self._top_filters)


def sample_response(record: SampleRecord, samples: Callable[[int], pb.Sample]) -> pb.GetSampleResponse:
    return pb.GetSampleResponse(sample=samples(record.sample.id), image_png=record.image_png)


def profile_to_proto(result: ProfileResult, include_vector: bool) -> pb.GetProfileResponse:
    response = pb.GetProfileResponse(
        label=result.label,
        predicted=result.predicted,
        true_confidence=result.true_confidence,
        predicted_confidence=result.predicted_confidence,
        loss=result.loss,
        top_filters=[filter_score_to_proto(f) for f in result.top_filters],
    )
    if result.sample_id is not None:
        response.sample_id = result.sample_id
    if include_vector:
        response.vector[:] = result.vector.tolist()
    return response


def profile_from_proto(message: pb.GetProfileResponse) -> ProfileResult:
    return ProfileResult(
        sample_id=message.sample_id if message.HasField("sample_id") else None,
        label=int(message.label),
        predicted=int(message.predicted),
        true_confidence=float(message.true_confidence),
        predicted_confidence=float(message.predicted_confidence),
        loss=float(message.loss),
        top_filters=[filter_score_from_proto(f) for f in message.top_filters],
        vector=np.asarray(message.vector, np.float32),
    )


def similar_to_proto(result: SimilarResult, samples: Callable[[int], pb.Sample]) -> pb.FindSimilarFailuresResponse:
    """``samples``: sample id -> its message (e.g. a :class:`SampleMessages`)."""
    response = pb.FindSimilarFailuresResponse(
        confusions=[pb.ConfusionCount(label=c.label, predicted=c.predicted, count=c.count) for c in result.confusions]
    )
    add = response.neighbors.add
    for n in result.neighbors:
        add(id=n.id, similarity=n.similarity).sample.CopyFrom(samples(n.id))  # faster than add(sample=...)
    return response


def similar_from_proto(message: pb.FindSimilarFailuresResponse) -> SimilarResult:
    return SimilarResult(
        neighbors=[Neighbor(int(n.id), float(n.similarity), sample_from_proto(n.sample)) for n in message.neighbors],
        confusions=[Confusion(int(c.label), int(c.predicted), int(c.count)) for c in message.confusions],
    )


def explanation_to_proto(result: Explanation) -> pb.ExplainInputResponse:
    height, width = result.heatmap.shape
    return pb.ExplainInputResponse(
        height=height,
        width=width,
        heatmap=result.heatmap.reshape(-1).tolist(),
        overlay_png=result.overlay_png,
        filters=[filter_score_to_proto(f) for f in result.filters],
        label=result.label,
        predicted=result.predicted,
    )


def explanation_from_proto(message: pb.ExplainInputResponse) -> Explanation:
    heatmap = np.asarray(message.heatmap, np.float32).reshape(message.height, message.width)
    return Explanation(
        heatmap,
        bytes(message.overlay_png),
        [filter_score_from_proto(f) for f in message.filters],
        int(message.label),
        int(message.predicted),
    )


def bundle_info_to_proto(served) -> pb.BundleInfo:
    """A registry.ServedBundle as BundleInfo."""
    bundle = served.bundle
    manifest = bundle.manifest  # a parasal.indexer.Manifest
    info = pb.BundleInfo(
        name=served.name,
        model=served.spec,
        model_fingerprint=served.fingerprint,
        dataset=", ".join(manifest.dataset_specs),
        num_samples=int(bundle.num_samples),
        num_misclassified=int(bundle.num_misclassified),
        num_filters=int(served.layout.num_filters),
        layers=[pb.Layer(name=s.name, kind=s.kind, filters=s.filters, offset=s.offset) for s in served.layout],
        index_type=str(bundle.index_type),
        class_names=list(served.class_names),
        input_shape=list(served.preprocessing.input_shape or ()),
    )
    created = manifest.created
    if created:
        try:
            info.created_at.FromJsonString(str(created))
        except ValueError:
            pass  # informative only; a manifest with an odd date still serves
    return info


# ---------------------------------------------------------------------------------------
# Evaluation results


def finetune_row_to_proto(row: FinetuneRow) -> pb.FinetuneRow:
    return pb.FinetuneRow(
        selection=selection_to_proto(row.selection),
        count=row.count,
        reference_corrected=row.reference_corrected,
        reference_true_confidence_delta=row.reference_true_confidence_delta,
        neighbors_corrected_fraction=row.neighbors_corrected_fraction,
        neighbors_true_confidence_delta=row.neighbors_true_confidence_delta,
        neighbors_evaluated=row.neighbors_evaluated,
    )


def finetune_row_from_proto(message: pb.FinetuneRow) -> FinetuneRow:
    """The fields the proto carries (requested_count and the norms are not sent)."""
    return FinetuneRow(
        selection=SELECTION_FROM_PROTO[message.selection],
        count=int(message.count),
        reference_corrected=bool(message.reference_corrected),
        reference_true_confidence_delta=float(message.reference_true_confidence_delta),
        neighbors_corrected_fraction=float(message.neighbors_corrected_fraction),
        neighbors_true_confidence_delta=float(message.neighbors_true_confidence_delta),
        neighbors_evaluated=int(message.neighbors_evaluated),
    )


def pruning_row_to_proto(row: PruningRow) -> pb.PruningRow:
    return pb.PruningRow(
        selection=selection_to_proto(row.selection),
        count=row.count,
        corrected=row.corrected,
        incorrect_confidence_delta=row.incorrect_confidence_delta,
        true_confidence_delta=row.true_confidence_delta,
        neighbors_corrected_fraction=row.neighbors_corrected_fraction,
        neighbors_incorrect_confidence_delta=row.neighbors_incorrect_confidence_delta,
        neighbors_true_confidence_delta=row.neighbors_true_confidence_delta,
        neighbors_evaluated=row.neighbors_evaluated,
    )


def pruning_row_from_proto(message: pb.PruningRow) -> PruningRow:
    return PruningRow(
        selection=SELECTION_FROM_PROTO[message.selection],
        count=int(message.count),
        requested_count=int(message.count),
        corrected=bool(message.corrected),
        incorrect_confidence_delta=float(message.incorrect_confidence_delta),
        true_confidence_delta=float(message.true_confidence_delta),
        neighbors_corrected_fraction=float(message.neighbors_corrected_fraction),
        neighbors_incorrect_confidence_delta=float(message.neighbors_incorrect_confidence_delta),
        neighbors_true_confidence_delta=float(message.neighbors_true_confidence_delta),
        neighbors_evaluated=int(message.neighbors_evaluated),
    )


def reference_state_to_proto(state: ReferenceState, sample_id: int | None) -> pb.ReferenceState:
    """``sample_id`` is set only for an indexed reference (None: an upload)."""
    message = pb.ReferenceState(
        label=state.label,
        predicted=state.predicted,
        true_confidence=state.true_confidence,
        predicted_confidence=state.predicted_confidence,
    )
    if sample_id is not None:
        message.sample_id = int(sample_id)
    return message


def reference_state_from_proto(message: pb.ReferenceState) -> ReferenceState:
    return ReferenceState(
        label=int(message.label),
        predicted=int(message.predicted),
        true_confidence=float(message.true_confidence),
        predicted_confidence=float(message.predicted_confidence),
    )


def finetune_result_to_proto(
    report: FinetuneReport, sample_id: int | None, neighbor_ids: Sequence[int]
) -> pb.FinetuneEvaluationResult:
    """A core FinetuneReport (plus the reference's id and the neighbor ids) as a result message."""
    return pb.FinetuneEvaluationResult(
        reference=reference_state_to_proto(report.reference, sample_id),
        neighbor_ids=[int(i) for i in neighbor_ids],
        rows=[finetune_row_to_proto(r) for r in report.rows],
        step_size=report.step_size,
    )


def pruning_result_to_proto(
    report: PruningReport, sample_id: int | None, neighbor_ids: Sequence[int]
) -> pb.PruningEvaluationResult:
    return pb.PruningEvaluationResult(
        reference=reference_state_to_proto(report.reference, sample_id),
        neighbor_ids=[int(i) for i in neighbor_ids],
        rows=[pruning_row_to_proto(r) for r in report.rows],
    )
