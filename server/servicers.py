"""The three parasal.v1 services. Each method only translates: request -> domain call ->
response (conversions.py). Errors are raised as domain exceptions and mapped to status
codes by errors.ErrorInterceptor; nothing here catches them."""

from __future__ import annotations

import asyncio

import grpc

from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

from . import conversions as cv
from .browse import Browse, cached_failure_modes
from .errors import DeadlineExceeded, InvalidArgument
from .evaluations import EXPORT_CHUNK_BYTES, Evaluations, FinetuneParams, PruningParams
from .experiments.service import ExperimentParams, Experiments
from .operations import Operations, acting_for
from .queries import Queries
from .registry import Registry
from .suppression import SuppressionParams, Suppressions
from .surprise import Surprises, sample_surprise_lookup

__all__ = [
    "SaliencyServicer",
    "EvaluationServicer",
    "OperationsServicer",
    "BrowseServicer",
    "MAX_PAGE_SIZE",
    "INLINE_METHODS",
]

MAX_PAGE_SIZE = 1000

#: Methods whose by-id answers come from memory in ~0.1 ms: the dispatcher tries them on the
#: event loop first (server/inline.py); anything in them that waits (batched searches and
#: saliency, image decodes and reads) hands the call over to a worker.
INLINE_METHODS = frozenset(
    f"/parasal.v1.SaliencyService/{name}" for name in ("ListBundles", "GetSample", "GetProfile", "FindSimilarFailures")
)


def _alive(context: grpc.ServicerContext) -> None:
    """Refuse work whose deadline passed while the call waited for a thread."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded("the deadline passed before the call started")


class SaliencyServicer(pb_grpc.SaliencyServiceServicer):
    def __init__(self, registry: Registry, queries: Queries):
        self.registry, self.queries = registry, queries
        # Per bundle: sample messages with their top filters (GetSample, asked-for neighbours)
        # and without (plain neighbour answers).
        # Both carry beta and the surprise / expectation counts where a bundle has reference data.
        self._samples = {
            b.name: cv.SampleMessages(
                b.meta, b.layout.locate, b.class_names, maxsize=b.cache_size, surprise=sample_surprise_lookup(b)
            )
            for b in registry
        }
        self._plain_samples = {
            b.name: cv.SampleMessages(
                b.meta,
                b.layout.locate,
                b.class_names,
                maxsize=b.cache_size,
                top_filters=False,
                surprise=sample_surprise_lookup(b),
            )
            for b in registry
        }
        self.surprises = Surprises(registry, queries)

    def warm(self) -> None:
        """Fill every bundle's metadata and plain neighbour messages with its hot ids (the
        messages with top filters fill as GetSample and asking callers need them)."""
        for served in self.registry:
            self._plain_samples[served.name].warm(served.hot_ids())
        self.surprises.warm()

    def sample_messages(self, bundle: str, top_filters: bool) -> cv.SampleMessages:
        """The cached Sample messages of a served bundle (with or without top filters): other
        services answering with samples share them."""
        return (self._samples if top_filters else self._plain_samples)[bundle]

    def ListBundles(self, request, context):
        return pb.ListBundlesResponse(bundles=[cv.bundle_info_to_proto(b) for b in self.registry])

    def GetSample(self, request, context):
        served = self.registry.get(request.bundle)
        record = self.queries.sample(request.bundle, request.id, request.include_image)
        response = cv.sample_response(record, self._samples[served.name])
        cv.set_failure_mode(response.sample, cached_failure_modes(served))  # once ListFailureModes computed them
        return response

    def GetProfile(self, request, context):
        _alive(context)
        result = self.queries.profile(request.bundle, cv.query_from_proto(request), request.top_k)
        return cv.profile_to_proto(result, request.include_vector)

    def FindSimilarFailures(self, request, context):
        _alive(context)
        served = self.registry.get(request.bundle)
        result = self.queries.find_similar(
            request.bundle,
            cv.query_from_proto(request),
            k=request.k,
            only_misclassified=request.only_misclassified,
            true_labels=list(request.true_labels),
            predicted_labels=list(request.predicted_labels),
            include_query=request.include_query,
            layers=list(request.layers),
            beta_below=request.beta_below if request.HasField("beta_below") else None,
            beta_above=request.beta_above if request.HasField("beta_above") else None,
            only_with_surprise=request.only_with_surprise,
        )
        samples = self._samples if request.include_top_filters else self._plain_samples
        response = cv.similar_to_proto(result, samples[served.name])
        cv.set_failure_modes([n.sample for n in response.neighbors], cached_failure_modes(served))  # as GetSample
        return response

    def ExplainInput(self, request, context):
        _alive(context)
        result = self.queries.explain(
            request.bundle,
            cv.query_from_proto(request),
            top_k=request.top_k,
            filters=list(request.filters),
            boost=request.boost,
        )
        return cv.explanation_to_proto(result)

    def ExplainSurprise(self, request, context):
        _alive(context)
        query, params = cv.query_from_proto(request), cv.surprise_params_from_proto(request)
        return cv.surprise_to_proto(self.surprises.explain(request.bundle, query, params))


class BrowseServicer(pb_grpc.BrowseServiceServicer):
    def __init__(self, registry: Registry, browse: Browse, saliency: SaliencyServicer):
        self.registry, self.browse, self.saliency = registry, browse, saliency

    def ListSamples(self, request, context):
        _alive(context)
        served = self.registry.get(request.bundle)
        query = cv.sample_filter_from_proto(request)
        page = self.browse.list_samples(request.bundle, query, request.page_size, request.page_token)
        samples = self.saliency.sample_messages(served.name, top_filters=request.include_top_filters)
        return cv.sample_page_to_proto(page, samples)

    def GetConfusionMatrix(self, request, context):
        return cv.confusion_matrix_to_proto(self.browse.confusion_matrix(request.bundle))

    def ListFailureModes(self, request, context):
        _alive(context)
        served = self.registry.get(request.bundle)
        medoids, top_filters = self.browse.check_mode_counts(request.medoids, request.top_filters)
        return cv.failure_modes_to_proto(
            self.browse.failure_modes(request.bundle),
            served.layout.locate,
            medoids=medoids,
            top_filters=top_filters,
            include_map=request.include_map,
            include_members=request.include_members,
        )


def caller(context: grpc.ServicerContext) -> str:
    """Who is calling, for the per-caller operation limit: the client's address without its
    port (``ipv4:10.0.0.7``); every connection from one machine is one caller."""
    peer = context.peer() or ""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        address = address.rsplit(":", 1)[0]
        return f"{kind}:{address}"
    return peer


class EvaluationServicer(pb_grpc.EvaluationServiceServicer):
    def __init__(self, evaluations: Evaluations):
        self.evaluations = evaluations
        self.suppressions = Suppressions(evaluations.registry, evaluations.queries, evaluations.operations)
        self.experiments = Experiments(evaluations.registry, evaluations.operations)

    def StartFinetuneEvaluation(self, request, context):
        by_mode = request.HasField("failure_mode") and request.WhichOneof("reference") is None
        params = FinetuneParams(
            bundle=request.bundle,
            reference=None if by_mode else cv.query_from_proto(request, "reference"),
            counts=list(request.counts),
            selections=cv.selections_from_proto(request.selections),
            step_size=request.step_size,
            num_neighbors=request.num_neighbors,
            neighbor_bundle=request.neighbor_bundle,
            seed=request.seed,
            count_fractions=list(request.count_fractions),
            random_draws=request.random_draws,
            num_collateral=request.num_collateral,
            skip_collateral=request.skip_collateral,
            failure_mode=request.failure_mode if request.HasField("failure_mode") else None,
        )
        with acting_for(caller(context)):
            return pb.StartFinetuneEvaluationResponse(operation=self.evaluations.start_finetune(params))

    def StartPruningEvaluation(self, request, context):
        params = PruningParams(
            bundle=request.bundle,
            reference=cv.query_from_proto(request, "reference"),
            counts=list(request.counts),
            selections=cv.selections_from_proto(request.selections),
            num_neighbors=request.num_neighbors,
            seed=request.seed,
            count_fractions=list(request.count_fractions),
            random_draws=request.random_draws,
            num_collateral=request.num_collateral,
            skip_collateral=request.skip_collateral,
        )
        with acting_for(caller(context)):
            return pb.StartPruningEvaluationResponse(operation=self.evaluations.start_pruning(params))

    async def ExportEditedModel(self, request, context):
        # A response stream is an async generator (dispatch.py); the edit is recomputed off the loop.
        edit = await asyncio.to_thread(
            self.evaluations.export_edit, request.operation_id, request.selection, request.count, request.draw
        )
        for message in cv.exported_edit_to_proto(edit, EXPORT_CHUNK_BYTES):
            yield message

    def StartSuppression(self, request, context):
        params = SuppressionParams(
            bundle=request.bundle,
            reference=cv.query_from_proto(request, "reference"),
            segments=list(request.segments),
            blank_counts=list(request.blank_counts),
        )
        with acting_for(caller(context)):
            return pb.StartSuppressionResponse(operation=self.suppressions.start(params))

    def StartExperiment(self, request, context):
        params = ExperimentParams(
            bundle=request.bundle,
            name=request.name,
            references=request.references,
            seed=request.seed,
            options=dict(request.options),
        )
        with acting_for(caller(context)):
            return pb.StartExperimentResponse(operation=self.experiments.start(params))


class OperationsServicer(pb_grpc.OperationsServiceServicer):
    def __init__(self, operations: Operations):
        self.operations = operations

    def GetOperation(self, request, context):
        return pb.GetOperationResponse(operation=self.operations.get(request.id))

    def ListOperations(self, request, context):
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size {request.page_size} outside 0..{MAX_PAGE_SIZE}")
        return pb.ListOperationsResponse(operations=self.operations.list(request.page_size or 100, request.state))

    def CancelOperation(self, request, context):
        return pb.CancelOperationResponse(operation=self.operations.cancel(request.id))

    async def WatchOperation(self, request, context):
        # An async generator: the stream waits on the server's event loop, holding no thread
        # (dispatch.py bounds how many are open and how long each lasts).
        async for op in self.operations.watch_async(request.id):
            yield pb.WatchOperationResponse(operation=op)
