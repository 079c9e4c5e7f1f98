"""Every conversion between parasal.v1 messages and the server's domain values, in one place.

``*_to_proto`` writes a domain value into a message; ``*_from_proto`` reads one back
(requests, and the round-trip tests). Enum names are mapped here and nowhere else. A
request that cannot be read (no query set, an unrequestable selection) raises the domain
:class:`InvalidArgument`, like any other bad input.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from google.protobuf import timestamp_pb2

from parasal.core import LayerSpan, SuppressionReport
from parasal.core.evaluation import (
    WHOLE_NETWORK,
    Collateral,
    DrawSpread,
    FinetuneReport,
    FinetuneRow,
    PruningReport,
    PruningRow,
    ReferenceState,
)
from parasal.indexer import SampleMeta
from parasal.indexer.failure_modes import FailureModes
from parasal.v1 import saliency_pb2 as pb

from .browse import ConfusionMatrix, SampleFilter, SamplePage
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
from .surprise import Deviation, SurpriseParams, SurpriseResult

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
    meta: SampleMeta,
    locate: Locate,
    class_names: Sequence[str] = (),
    top_filters: bool = True,
    surprise: tuple[float, int, int] | None = None,
) -> pb.Sample:
    """``locate`` names each top filter's layer; ``class_names`` (may be empty) the labels;
    ``top_filters=False`` leaves the top filters out; ``surprise`` (beta, num_surprise,
    num_expectation) is set where the bundle has reference data."""

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
    if surprise is not None:
        message.beta, message.num_surprise, message.num_expectation = surprise
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
        surprise: Callable[[int], tuple[float, int, int] | None] | None = None,
    ):
        self._meta, self._locate, self._class_names = meta, locate, list(class_names)
        self._top_filters = top_filters
        self._surprise = surprise  # sample id -> (beta, num_surprise, num_expectation) or None
        self._cached = functools.lru_cache(maxsize=maxsize)(self._build)

    def __call__(self, sample_id: int) -> pb.Sample:
        return self._cached(int(sample_id))

    def warm(self, ids: Iterable[int]) -> None:
        """Build (and cache) the messages of ``ids`` now rather than on first use."""
        for i in ids:
            self._cached(int(i))

    def _build(self, sample_id: int) -> pb.Sample:
        meta = self._meta(sample_id)  # NotFound first
        surprise = self._surprise(sample_id) if self._surprise is not None else None
        return sample_to_proto(meta, self._locate, self._class_names, self._top_filters, surprise)


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
    reference = bundle.reference if getattr(bundle, "has_reference", False) else None
    if reference is not None:
        info.reference.CopyFrom(reference_info_to_proto(reference))
    created = manifest.created
    if created:
        try:
            info.created_at.FromJsonString(str(created))
        except ValueError:
            pass  # informative only; a manifest with an odd date still serves
    return info


# ---------------------------------------------------------------------------------------
# Evaluation results


def collateral_to_proto(value: Collateral | None) -> pb.Collateral:
    """None (not measured) is evaluated 0 with NaN figures, as the proto says."""
    if value is None:
        return pb.Collateral(evaluated=0, accuracy_delta=math.nan, flips=0, true_confidence_delta=math.nan)
    return pb.Collateral(
        evaluated=value.evaluated,
        accuracy_delta=value.accuracy_delta,
        flips=value.flips,
        true_confidence_delta=value.true_confidence_delta,
    )


def collateral_from_proto(message: pb.Collateral) -> Collateral | None:
    if message.evaluated == 0:  # not measured (the proto)
        return None
    return Collateral(
        evaluated=int(message.evaluated),
        accuracy_delta=float(message.accuracy_delta),
        flips=int(message.flips),
        true_confidence_delta=float(message.true_confidence_delta),
    )


def spread_to_proto(value: DrawSpread | None) -> pb.DrawSpread | None:
    if value is None:
        return None
    return pb.DrawSpread(
        draws=value.draws,
        reference_true_confidence_delta_std=value.reference_true_confidence_delta_std,
        neighbors_true_confidence_delta_std=value.neighbors_true_confidence_delta_std,
        neighbors_corrected_fraction_std=value.neighbors_corrected_fraction_std,
        incorrect_confidence_delta_std=value.incorrect_confidence_delta_std,
    )


def spread_from_proto(message: pb.DrawSpread) -> DrawSpread | None:
    if message.draws == 0:
        return None
    return DrawSpread(
        draws=int(message.draws),
        reference_true_confidence_delta_std=float(message.reference_true_confidence_delta_std),
        neighbors_true_confidence_delta_std=float(message.neighbors_true_confidence_delta_std),
        neighbors_corrected_fraction_std=float(message.neighbors_corrected_fraction_std),
        incorrect_confidence_delta_std=float(message.incorrect_confidence_delta_std),
    )


def finetune_row_to_proto(row: FinetuneRow) -> pb.FinetuneRow:
    return pb.FinetuneRow(
        selection=selection_to_proto(row.selection),
        count=row.count,
        reference_corrected=row.reference_corrected,
        reference_true_confidence_delta=row.reference_true_confidence_delta,
        neighbors_corrected_fraction=row.neighbors_corrected_fraction,
        neighbors_true_confidence_delta=row.neighbors_true_confidence_delta,
        neighbors_evaluated=row.neighbors_evaluated,
        parameters=row.parameters,
        filters=[int(f) for f in row.filters],
        collateral=collateral_to_proto(row.collateral),
        spread=spread_to_proto(row.spread),
        reference_corrected_fraction=row.reference_corrected_fraction,
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
        parameters=int(message.parameters),
        filters=tuple(int(f) for f in message.filters),
        collateral=collateral_from_proto(message.collateral),
        spread=spread_from_proto(message.spread),
        reference_corrected_fraction=float(message.reference_corrected_fraction),
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
        filters=[int(f) for f in row.filters],
        collateral=collateral_to_proto(row.collateral),
        spread=spread_to_proto(row.spread),
        reference_corrected_fraction=row.reference_corrected_fraction,
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
        filters=tuple(int(f) for f in message.filters),
        collateral=collateral_from_proto(message.collateral),
        spread=spread_from_proto(message.spread),
        reference_corrected_fraction=float(message.reference_corrected_fraction),
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
        seed=report.seed,
        random_draws=report.random_draws,
    )


def pruning_result_to_proto(
    report: PruningReport, sample_id: int | None, neighbor_ids: Sequence[int]
) -> pb.PruningEvaluationResult:
    return pb.PruningEvaluationResult(
        reference=reference_state_to_proto(report.reference, sample_id),
        neighbor_ids=[int(i) for i in neighbor_ids],
        rows=[pruning_row_to_proto(r) for r in report.rows],
        seed=report.seed,
        random_draws=report.random_draws,
    )


def exported_edit_to_proto(edit, chunk_bytes: int) -> list[pb.ExportEditedModelResponse]:
    """An evaluations.ExportedEdit as consecutive chunks of at most ``chunk_bytes``; the first
    also says what the edit was (filters, step size, seed, total size)."""
    pieces = [edit.data[i : i + chunk_bytes] for i in range(0, len(edit.data), chunk_bytes)] or [b""]
    messages = [pb.ExportEditedModelResponse(data=piece) for piece in pieces]
    first = messages[0]
    first.filters.extend(int(f) for f in edit.filters)
    first.step_size = edit.step_size
    first.seed = edit.seed
    first.total_bytes = len(edit.data)
    return messages


# ---------------------------------------------------------------------------------------
# Browsing (server/browse.py)

CORRECTNESS_FROM_PROTO = {
    pb.CORRECTNESS_UNSPECIFIED: None,
    pb.CORRECTNESS_CORRECT: True,
    pb.CORRECTNESS_MISCLASSIFIED: False,
}
CORRECTNESS_TO_PROTO = {v: k for k, v in CORRECTNESS_FROM_PROTO.items()}
ORDER_FROM_PROTO = {
    pb.SAMPLE_ORDER_UNSPECIFIED: "id",
    pb.SAMPLE_ORDER_ID: "id",
    pb.SAMPLE_ORDER_LOSS: "loss",
    pb.SAMPLE_ORDER_TRUE_CONFIDENCE: "true_confidence",
    pb.SAMPLE_ORDER_PREDICTED_CONFIDENCE: "predicted_confidence",
    pb.SAMPLE_ORDER_BETA: "beta",
}
ORDER_TO_PROTO = {name: value for value, name in ORDER_FROM_PROTO.items() if value != pb.SAMPLE_ORDER_UNSPECIFIED}


def _optional(message, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


def sample_filter_from_proto(request: pb.ListSamplesRequest) -> SampleFilter:
    """InvalidArgument for an unknown correctness or order value."""
    if request.correctness not in CORRECTNESS_FROM_PROTO:
        raise InvalidArgument(f"correctness {request.correctness} is not a Correctness value")
    if request.order_by not in ORDER_FROM_PROTO:
        raise InvalidArgument(f"order_by {request.order_by} is not a SampleOrder value")
    return SampleFilter(
        true_labels=tuple(int(v) for v in request.true_labels),
        predicted_labels=tuple(int(v) for v in request.predicted_labels),
        correct=CORRECTNESS_FROM_PROTO[request.correctness],
        min_true_confidence=_optional(request, "min_true_confidence"),
        max_true_confidence=_optional(request, "max_true_confidence"),
        min_loss=_optional(request, "min_loss"),
        max_loss=_optional(request, "max_loss"),
        beta_below=_optional(request, "beta_below"),
        beta_above=_optional(request, "beta_above"),
        only_with_surprise=bool(request.only_with_surprise),
        only_with_expectation=bool(request.only_with_expectation),
        failure_mode=int(request.failure_mode) if request.HasField("failure_mode") else None,
        order_by=ORDER_FROM_PROTO[request.order_by],
        descending=bool(request.descending),
    )


def sample_filter_to_proto(query: SampleFilter, request: pb.ListSamplesRequest) -> pb.ListSamplesRequest:
    """Writes ``query`` into ``request`` (tests; the SDK builds its own requests)."""
    request.true_labels[:] = list(query.true_labels)
    request.predicted_labels[:] = list(query.predicted_labels)
    request.correctness = CORRECTNESS_TO_PROTO[query.correct]
    for name in ("min_true_confidence", "max_true_confidence", "min_loss", "max_loss", "beta_below", "beta_above"):
        if getattr(query, name) is not None:
            setattr(request, name, getattr(query, name))
    request.only_with_surprise = query.only_with_surprise
    request.only_with_expectation = query.only_with_expectation
    if query.failure_mode is not None:
        request.failure_mode = query.failure_mode
    request.order_by = ORDER_TO_PROTO[query.order_by]
    request.descending = query.descending
    return request


def sample_page_to_proto(page: SamplePage, samples: Callable[[int], pb.Sample]) -> pb.ListSamplesResponse:
    """``samples``: id -> its cached message (copied; the copy gets the sample's failure mode)."""
    response = pb.ListSamplesResponse(next_page_token=page.next_page_token, total_size=page.total_size)
    add = response.samples.add
    modes = page.failure_modes
    for i, sample_id in enumerate(page.ids.tolist()):
        message = add()
        message.CopyFrom(samples(sample_id))
        if modes is not None and modes[i] >= 0:
            message.failure_mode = int(modes[i])
    return response


def set_failure_mode(message: pb.Sample, modes: FailureModes | None) -> None:
    """Sets ``message.failure_mode`` (a response's own copy, never a cached message) when the
    modes are computed and the sample is in one."""
    set_failure_modes([message], modes)


def set_failure_modes(messages: Sequence[pb.Sample], modes: FailureModes | None) -> None:
    """:func:`set_failure_mode` for several messages with one lookup."""
    if modes is None or not messages:
        return
    for message, mode in zip(messages, modes.mode_of([m.id for m in messages])):
        if mode >= 0:
            message.failure_mode = int(mode)


def confusion_matrix_to_proto(matrix: ConfusionMatrix) -> pb.GetConfusionMatrixResponse:
    return pb.GetConfusionMatrixResponse(
        num_classes=matrix.num_classes,
        class_names=list(matrix.class_names),
        counts=matrix.counts.reshape(-1).tolist(),
        per_class_accuracy=matrix.per_class_accuracy.tolist(),
        accuracy=matrix.accuracy,
        num_samples=matrix.num_samples,
    )


def failure_modes_to_proto(
    modes: FailureModes,
    locate: Locate,
    *,
    medoids: int,
    top_filters: int,
    include_map: bool = False,
    include_members: bool = False,
) -> pb.ListFailureModesResponse:
    """``medoids`` / ``top_filters``: how many of each mode's (kept in rank order) to send."""
    response = pb.ListFailureModesResponse(
        method=modes.method,
        silhouette=modes.silhouette,
        num_misclassified=modes.num_misclassified,
        num_unassigned=modes.num_unassigned,
    )
    for mode in modes.modes:
        message = response.modes.add(
            id=mode.id,
            size=mode.size,
            medoid_ids=mode.medoid_ids[:medoids].tolist(),
            cohesion=mode.cohesion,
            member_ids=mode.member_ids.tolist() if include_members else [],
        )
        for label, predicted, count in mode.confusions:
            message.confusions.add(label=label, predicted=predicted, count=count)
        for index, z in mode.top_filters[:top_filters]:
            span, j = locate(int(index))
            message.top_filters.add(index=int(index), layer=span.name, filter=j, z=float(z))
        for layer, filter_, count in mode.shared_surprise:
            message.shared_surprise.add(layer=layer, filter=filter_, count=count)
        for layer, filter_, count in mode.shared_expectation:
            message.shared_expectation.add(layer=layer, filter=filter_, count=count)
    if include_map and modes.map is not None:
        m = modes.map
        response.map_method = m.method
        add = response.map.add
        columns = (m.ids, m.xy[:, 0], m.xy[:, 1], m.labels, m.predicted, m.modes)
        for i, x, y, label, predicted, mode in zip(*(c.tolist() for c in columns)):
            add(id=i, x=x, y=y, label=label, predicted=predicted, failure_mode=mode)
    return response


# ---------------------------------------------------------------------------------------
# Surprise and expectation (surprise.py, suppression.py)


def reference_info_to_proto(reference) -> pb.ReferenceDataInfo:
    """A bundle's ReferenceData (parasal.indexer) as ReferenceDataInfo."""
    return pb.ReferenceDataInfo(
        dataset=str(reference.dataset),
        num_samples=int(reference.num_samples),
        layer=str(reference.layer),
        method=str(reference.method),
        num_filters=int(reference.num_filters),
        exemplars_per_filter=int(reference.exemplars_per_filter),
    )


def surprise_params_from_proto(request: pb.ExplainSurpriseRequest) -> SurpriseParams:
    return SurpriseParams(
        high_percentile=float(request.high_percentile),
        low_percentile=float(request.low_percentile),
        max_filters=int(request.max_filters),
        detailed=int(request.detailed),
        exemplars=int(request.exemplars),
        exemplars_any_class=bool(request.exemplars_any_class),
        segments=int(request.segments),
        include_alpha=bool(request.include_alpha),
        include_exemplar_images=bool(request.include_exemplar_images),
    )


def deviation_to_proto(d: Deviation) -> pb.FilterDeviation:
    message = pb.FilterDeviation(
        layer=d.layer, filter=d.filter, alpha=d.alpha, mean=d.mean, threshold=d.threshold, deviation=d.deviation
    )
    if d.region is not None:
        height, width = d.region.mask.shape
        mask = np.ascontiguousarray(d.region.mask, np.uint8).tobytes()  # row-major, 1 inside
        message.region.CopyFrom(pb.Region(png=d.region.png, height=height, width=width, mask=mask))
    add = message.exemplars.add
    for e in d.exemplars:
        add(id=e.id, uri=e.uri, label=e.label, label_name=e.label_name, activation=e.activation, image_png=e.image_png)
    return message


def surprise_to_proto(result: SurpriseResult) -> pb.ExplainSurpriseResponse:
    response = pb.ExplainSurpriseResponse(
        label=result.label,
        predicted=result.predicted,
        true_confidence=result.true_confidence,
        predicted_confidence=result.predicted_confidence,
        beta=result.beta,
        layer=result.layer,
        method=result.method,
        high_percentile=result.high_percentile,
        low_percentile=result.low_percentile,
        surprise=[deviation_to_proto(d) for d in result.surprise],
        expectation=[deviation_to_proto(d) for d in result.expectation],
    )
    if result.sample_id is not None:
        response.sample_id = result.sample_id
    if result.alpha is not None:
        response.alpha[:] = np.asarray(result.alpha, np.float32).tolist()
    if result.class_mean is not None:
        response.class_mean[:] = np.asarray(result.class_mean, np.float32).tolist()
    return response


def suppression_to_proto(report: SuppressionReport, state: ReferenceState, sample_id: int | None):
    """A core SuppressionReport (filter -1: none, vanilla rows only) as SuppressionResult."""
    return pb.SuppressionResult(
        reference=reference_state_to_proto(state, sample_id),
        layer=report.layer,
        filter=report.filter,
        rows=[
            pb.SuppressionRow(
                method=r.method,
                segments=r.segments,
                blanked=r.blanked,
                predicted=r.predicted,
                true_confidence=r.label_confidence,
                corrected=r.fixed,
            )
            for r in report.rows
        ],
        fixed_by_surprise=any(r.fixed for r in report.rows if r.method == "surprise"),
        fixed_by_vanilla=any(r.fixed for r in report.rows if r.method == "vanilla"),
    )


def experiment_result_to_proto(output) -> pb.ExperimentResult:
    """A ``parasal.server.experiments.ExperimentOutput`` as ExperimentResult (points as the
    JSON has them: a CI not measured is NaN on the wire, null in the JSON)."""

    def wire(value) -> float:
        return float("nan") if value is None else float(value)

    return pb.ExperimentResult(
        name=output.name,
        references=output.references,
        seed=output.seed,
        points=[
            pb.ExperimentPoint(
                selection=p.selection,
                count=p.count,
                metric=p.metric,
                mean=wire(p.mean),
                ci_low=wire(p.ci_low),
                ci_high=wire(p.ci_high),
                n=p.n,
            )
            for p in output.points
        ],
        json=output.json,
        plot_png=output.plot_png,
        seconds=output.seconds,
    )
