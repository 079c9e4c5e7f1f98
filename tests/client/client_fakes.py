"""A real gRPC server on 127.0.0.1:0 with fake logic, to test the SDK and CLI over the wire.

The fake records every request with its metadata, can fail a method with planned status
codes, and plays scripted operation snapshots through WatchOperation. It knows nothing of
the SDK: responses are built straight from the generated messages.
"""

from __future__ import annotations

import io
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from PIL import Image

from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]


def png_bytes(size=(4, 3), color=120) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_sample(i: int) -> pb.Sample:
    label, predicted = i % 5, (i + 1) % 5
    return pb.Sample(
        id=i,
        uri=f"fashion-mnist:test#{i}",
        label=label,
        predicted=predicted,
        correct=False,
        true_confidence=0.125,
        predicted_confidence=0.75,
        loss=2.5,
        top_filters=[
            pb.FilterScore(index=3, layer="conv1", filter=3, z=4.5),
            pb.FilterScore(index=40, layer="conv2", filter=8, z=3.25),
        ],
        label_name=CLASS_NAMES[label],
        predicted_name=CLASS_NAMES[predicted],
    )


def finetune_result() -> pb.FinetuneEvaluationResult:
    return pb.FinetuneEvaluationResult(
        reference=pb.ReferenceState(sample_id=3, label=3, predicted=4, true_confidence=0.25, predicted_confidence=0.5),
        neighbor_ids=[11, 12],
        rows=[
            pb.FinetuneRow(
                selection=pb.SELECTION_MOST_SALIENT,
                count=5,
                reference_corrected=True,
                reference_true_confidence_delta=0.5,
                neighbors_corrected_fraction=0.5,
                neighbors_true_confidence_delta=0.25,
                neighbors_evaluated=2,
            ),
            pb.FinetuneRow(
                selection=pb.SELECTION_WHOLE_NETWORK,
                count=0,
                parameters=1234,
                reference_corrected=True,
                reference_true_confidence_delta=0.625,
                neighbors_evaluated=2,
            ),
        ],
        step_size=0.001,
    )


def pruning_result() -> pb.PruningEvaluationResult:
    return pb.PruningEvaluationResult(
        reference=pb.ReferenceState(sample_id=3, label=3, predicted=4, true_confidence=0.25, predicted_confidence=0.5),
        rows=[
            pb.PruningRow(
                selection=pb.SELECTION_LEAST_SALIENT,
                count=25,
                corrected=False,
                incorrect_confidence_delta=-0.125,
                true_confidence_delta=0.0625,
                # What the server sends when no neighbour was evaluated: "no value".
                neighbors_corrected_fraction=float("nan"),
                neighbors_incorrect_confidence_delta=float("nan"),
                neighbors_true_confidence_delta=float("nan"),
            )
        ],
    )


def snapshot(op_id: str, state: int, progress: float = 0.0, message: str = "", **extra) -> pb.Operation:
    op = pb.Operation(
        id=op_id,
        kind=pb.OPERATION_KIND_FINETUNE_EVALUATION,
        state=state,
        progress=progress,
        message=message,
        bundle="demo",
        **extra,
    )
    op.created_at.FromSeconds(1_700_000_000)
    op.updated_at.FromSeconds(1_700_000_000 + int(progress * 10))
    return op


@dataclass
class FakeState:
    # (method name, request, metadata dict) of every call, in order.
    calls: list = field(default_factory=list)
    # method name -> [(code, details), ...] popped one per call before answering.
    failures: dict = field(default_factory=dict)
    # operation id -> snapshots WatchOperation streams (the last one is GetOperation's answer).
    scripts: dict = field(default_factory=dict)
    # operation ids whose watch stream stops after the first snapshot without a terminal one.
    truncated: set = field(default_factory=set)
    # operation ids whose watch never reaches a terminal state (use hang()).
    hanging: set = field(default_factory=set)
    # set when a hanging watch call ended.
    watch_cancelled: threading.Event = field(default_factory=threading.Event)
    # the token the server demands (None: no authentication).
    token: str | None = None
    # while True, every call is held, unanswered, until the client gives up on it
    # (deadline or cancellation); held_call_ended is set when a held call ends.
    hold: bool = False
    held_call_ended: threading.Event = field(default_factory=threading.Event)
    # (method name, seconds left before the call's deadline or None) of every call, in order.
    deadlines: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hang(self, op_id: str) -> None:
        """The operation stays at its first snapshot until cancelled."""
        del self.scripts[op_id][1:]
        self.hanging.add(op_id)

    def count(self, method: str) -> int:
        return sum(1 for c in self.calls if c[0] == method)

    def requests(self, method: str) -> list:
        return [c[1] for c in self.calls if c[0] == method]

    def time_remaining(self, method: str) -> list:
        return [d[1] for d in self.deadlines if d[0] == method]

    def enter(self, method: str, request, context) -> None:
        metadata = {k: v for k, v in context.invocation_metadata()}
        with self.lock:
            self.calls.append((method, request, metadata))
            self.deadlines.append((method, context.time_remaining()))
            planned = self.failures.get(method)
            failure = planned.pop(0) if planned else None
        if self.token is not None and metadata.get("authorization") != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        if failure is not None:
            context.abort(*failure)
        if self.hold:
            context.add_callback(self.held_call_ended.set)
            while context.is_active():  # never answers: only the client can end the call
                time.sleep(0.01)
            context.abort(grpc.StatusCode.CANCELLED, "held call ended by the client")

    def operation(self, op_id: str, context) -> list:
        if op_id not in self.scripts:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no operation {op_id}")
        return self.scripts[op_id]


class FakeSaliency(pb_grpc.SaliencyServiceServicer):
    def __init__(self, state: FakeState):
        self.s = state

    def ListBundles(self, request, context):
        self.s.enter("ListBundles", request, context)
        info = pb.BundleInfo(
            name="demo",
            model="demo-fashion",
            model_fingerprint="ab" * 32,
            dataset="fashion-mnist:test",
            num_samples=10000,
            num_misclassified=812,
            num_filters=96,
            index_type="Flat",
            class_names=CLASS_NAMES,
            input_shape=[1, 28, 28],
            layers=[
                pb.Layer(name="conv1", kind="conv2d", filters=32, offset=0),
                pb.Layer(name="conv2", kind="conv2d", filters=64, offset=32),
            ],
        )
        info.created_at.FromSeconds(1_700_000_000)
        return pb.ListBundlesResponse(bundles=[info, pb.BundleInfo(name="other", num_filters=8)])

    def GetSample(self, request, context):
        self.s.enter("GetSample", request, context)
        if request.id >= 10000:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no sample {request.id}")
        return pb.GetSampleResponse(
            sample=make_sample(request.id), image_png=png_bytes() if request.include_image else b""
        )

    def GetProfile(self, request, context):
        self.s.enter("GetProfile", request, context)
        response = pb.GetProfileResponse(
            label=3,
            predicted=4,
            true_confidence=0.25,
            predicted_confidence=0.5,
            loss=1.5,
            top_filters=make_sample(0).top_filters,
        )
        if request.WhichOneof("query") == "sample_id":
            response.sample_id = request.sample_id
        if request.include_vector:
            response.vector.extend([0.5 * i for i in range(96)])
        return response

    def FindSimilarFailures(self, request, context):
        self.s.enter("FindSimilarFailures", request, context)
        k = request.k or 10
        neighbors = [pb.Neighbor(id=100 + i, similarity=0.9 - 0.1 * i, sample=make_sample(100 + i)) for i in range(k)]
        return pb.FindSimilarFailuresResponse(
            neighbors=neighbors, confusions=[pb.ConfusionCount(label=0, predicted=1, count=k)]
        )

    def ExplainInput(self, request, context):
        self.s.enter("ExplainInput", request, context)
        return pb.ExplainInputResponse(
            height=2,
            width=3,
            heatmap=[0, 0.25, 0.5, 0.75, 1, 0.5],
            overlay_png=png_bytes((3, 2)),
            filters=make_sample(0).top_filters,
            label=3,
            predicted=4,
        )


class FakeEvaluation(pb_grpc.EvaluationServiceServicer):
    def __init__(self, state: FakeState):
        self.s = state

    def _start(self, kind, request, context):
        op_id = f"op-{len(self.s.scripts) + 1}"
        final = dict(finetune=finetune_result()) if kind == "finetune" else dict(pruning=pruning_result())
        script = [
            snapshot(op_id, pb.OPERATION_STATE_PENDING),
            snapshot(op_id, pb.OPERATION_STATE_RUNNING, 0.5, "most 5/12"),
            snapshot(op_id, pb.OPERATION_STATE_SUCCEEDED, 1.0, "done", **final),
        ]
        if kind == "pruning":
            for op in script:
                op.kind = pb.OPERATION_KIND_PRUNING_EVALUATION
        self.s.scripts[op_id] = script
        return script[0]

    def StartFinetuneEvaluation(self, request, context):
        self.s.enter("StartFinetuneEvaluation", request, context)
        return pb.StartFinetuneEvaluationResponse(operation=self._start("finetune", request, context))

    def StartPruningEvaluation(self, request, context):
        self.s.enter("StartPruningEvaluation", request, context)
        return pb.StartPruningEvaluationResponse(operation=self._start("pruning", request, context))


class FakeOperations(pb_grpc.OperationsServiceServicer):
    def __init__(self, state: FakeState):
        self.s = state

    def GetOperation(self, request, context):
        self.s.enter("GetOperation", request, context)
        return pb.GetOperationResponse(operation=self.s.operation(request.id, context)[-1])

    def ListOperations(self, request, context):
        self.s.enter("ListOperations", request, context)
        ops = [script[-1] for script in self.s.scripts.values()]
        if request.state:
            ops = [op for op in ops if op.state == request.state]
        return pb.ListOperationsResponse(operations=ops[: request.page_size or 100])

    def CancelOperation(self, request, context):
        self.s.enter("CancelOperation", request, context)
        script = self.s.operation(request.id, context)
        if script[-1].state in (pb.OPERATION_STATE_PENDING, pb.OPERATION_STATE_RUNNING):
            script.append(snapshot(request.id, pb.OPERATION_STATE_CANCELLED, script[-1].progress, "cancelled"))
            self.s.hanging.discard(request.id)
        return pb.CancelOperationResponse(operation=script[-1])

    def WatchOperation(self, request, context):
        self.s.enter("WatchOperation", request, context)
        script = self.s.operation(request.id, context)
        if request.id in self.s.hanging:
            # Fires when the call ends; a hanging watch only ends early if the client goes away.
            context.add_callback(self.s.watch_cancelled.set)
            yield pb.WatchOperationResponse(operation=script[0])
            while context.is_active() and request.id in self.s.hanging:
                time.sleep(0.01)
            if not context.is_active():
                return
        for op in list(script):
            yield pb.WatchOperationResponse(operation=op)
            if request.id in self.s.truncated:
                self.s.truncated.discard(request.id)
                return  # the stream ends early, as when a server restarts
            time.sleep(0.005)


@dataclass
class Fake:
    target: str
    state: FakeState
    server: grpc.Server


def start_fake(credentials=None, host="127.0.0.1") -> Fake:
    state = FakeState()
    limit = 64 * 1024 * 1024
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
    )
    pb_grpc.add_SaliencyServiceServicer_to_server(FakeSaliency(state), server)
    pb_grpc.add_EvaluationServiceServicer_to_server(FakeEvaluation(state), server)
    pb_grpc.add_OperationsServiceServicer_to_server(FakeOperations(state), server)
    address = f"{host}:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    return Fake(target=f"{host}:{port}", state=state, server=server)
