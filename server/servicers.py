"""The three parasal.v1 services. Each method only translates: request -> domain call ->
response (conversions.py). Errors are raised as domain exceptions and mapped to status
codes by errors.ErrorInterceptor; nothing here catches them."""

from __future__ import annotations

import grpc

from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

from . import conversions as cv
from .errors import DeadlineExceeded, InvalidArgument
from .evaluations import Evaluations, FinetuneParams, PruningParams
from .operations import Operations, acting_for
from .queries import Queries
from .registry import Registry

__all__ = ["SaliencyServicer", "EvaluationServicer", "OperationsServicer", "MAX_PAGE_SIZE", "INLINE_METHODS"]

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
        self._samples = {
            b.name: cv.SampleMessages(b.meta, b.layout.locate, b.class_names, maxsize=b.cache_size) for b in registry
        }
        self._plain_samples = {
            b.name: cv.SampleMessages(b.meta, b.layout.locate, b.class_names, maxsize=b.cache_size, top_filters=False)
            for b in registry
        }

    def warm(self) -> None:
        """Fill every bundle's metadata and plain neighbour messages with its hot ids (the
        messages with top filters fill as GetSample and asking callers need them)."""
        for served in self.registry:
            self._plain_samples[served.name].warm(served.hot_ids())

    def ListBundles(self, request, context):
        return pb.ListBundlesResponse(bundles=[cv.bundle_info_to_proto(b) for b in self.registry])

    def GetSample(self, request, context):
        served = self.registry.get(request.bundle)
        record = self.queries.sample(request.bundle, request.id, request.include_image)
        return cv.sample_response(record, self._samples[served.name])

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
        )
        samples = self._samples if request.include_top_filters else self._plain_samples
        return cv.similar_to_proto(result, samples[served.name])

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

    def StartFinetuneEvaluation(self, request, context):
        params = FinetuneParams(
            bundle=request.bundle,
            reference=cv.query_from_proto(request, "reference"),
            counts=list(request.counts),
            selections=cv.selections_from_proto(request.selections),
            step_size=request.step_size,
            num_neighbors=request.num_neighbors,
            neighbor_bundle=request.neighbor_bundle,
            seed=request.seed,
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
        )
        with acting_for(caller(context)):
            return pb.StartPruningEvaluationResponse(operation=self.evaluations.start_pruning(params))


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
