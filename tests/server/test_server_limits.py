"""Inputs that cost far more than they weigh (issue #12 §4): field caps, echoed values,
image headers, evaluation sizes, and what an interrupted pending operation says."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent import futures
from types import SimpleNamespace

import grpc
import pytest
from PIL import Image, ImageFile

from parasal.indexer import Preprocessing
from parasal.server import limits
from parasal.server.errors import MAX_MESSAGE_CHARS, ErrorInterceptor, InvalidArgument, NotFound, shown, status_for
from parasal.server.evaluations import MAX_EVALUATION_SIZE, _check_size, _counts, _Plan
from parasal.server.queries import Queries, check_layers, decode_image, fixed_input_size
from parasal.server.store import ABORTED_MESSAGE, NEVER_STARTED_MESSAGE, OperationStore, aborted_message
from parasal.v1 import saliency_pb2 as pb

# ---------------------------------------------------------------------------------------
# Field caps


def similar(**fields) -> pb.FindSimilarFailuresRequest:
    return pb.FindSimilarFailuresRequest(sample_id=0, **fields)


OVER_THE_CAPS = [
    (pb.GetSampleRequest(bundle="b" * 257), "bundle"),
    (pb.GetSampleRequest(bundle="é" * 129), "bundle"),  # 258 bytes in UTF-8
    (pb.GetOperationRequest(id="0" * 100_000), "id"),
    (pb.WatchOperationRequest(id="0" * 300), "id"),
    (pb.StartFinetuneEvaluationRequest(sample_id=0, neighbor_bundle="n" * 300), "neighbor_bundle"),
    (similar(layers=["x" * 300]), "layers entry"),
    (similar(layers=["a"] * (limits.MAX_LAYERS + 1)), "layers has"),
    (similar(true_labels=[1] * (limits.MAX_LABELS + 1)), "true_labels"),
    (similar(predicted_labels=[1] * (limits.MAX_LABELS + 1)), "predicted_labels"),
    (pb.ExplainInputRequest(sample_id=0, filters=[0] * (limits.MAX_FILTER_ENTRIES + 1)), "filters"),
    (
        pb.FindSimilarFailuresRequest(vector=pb.ProfileVector(values=[1.0] * (limits.MAX_FILTER_ENTRIES + 1))),
        "vector.values",
    ),
    (pb.StartPruningEvaluationRequest(sample_id=0, counts=list(range(1, 66))), "counts"),
    (pb.StartFinetuneEvaluationRequest(sample_id=0, selections=[1] * 17), "selections"),
]


@pytest.mark.parametrize("request_, field", OVER_THE_CAPS, ids=[f for _, f in OVER_THE_CAPS])
def test_fields_over_their_caps_are_named(request_, field):
    problem = limits.request_problem(request_)
    assert problem is not None and problem.startswith(field) and len(problem) < 100


def test_requests_within_the_caps_pass():
    for request in [
        pb.GetSampleRequest(bundle="b" * 256, id=2**62),
        pb.GetOperationRequest(id="18ed425616be1efcb7c6383d"),
        similar(layers=["a"] * limits.MAX_LAYERS, true_labels=[1] * limits.MAX_LABELS),
        pb.StartFinetuneEvaluationRequest(
            image=pb.ImageInput(data=b"\0" * 100_000, label=1), counts=list(range(1, 65)), selections=[1, 2, 3]
        ),
        pb.ListOperationsRequest(),
    ]:
        assert limits.request_problem(request) is None


def test_the_interceptor_refuses_over_the_caps_before_the_handler():
    """A real proto method behind the error table's interceptor: INVALID_ARGUMENT naming the
    field, and the handler never runs (the 100 KB id is not echoed back)."""
    seen = []

    def get(request, context):
        seen.append(request.id)
        raise NotFound(f"unknown operation {request.id!r}")

    handler = grpc.unary_unary_rpc_method_handler(
        get,
        request_deserializer=pb.GetOperationRequest.FromString,
        response_serializer=pb.GetOperationResponse.SerializeToString,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[ErrorInterceptor()])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("parasal.v1.OperationsService", {"GetOperation": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/parasal.v1.OperationsService/GetOperation",
                request_serializer=pb.GetOperationRequest.SerializeToString,
                response_deserializer=pb.GetOperationResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as err:
                call(pb.GetOperationRequest(id="0" * 100_000), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == "id is longer than 256 bytes" and seen == []
            with pytest.raises(grpc.RpcError) as err:
                call(pb.GetOperationRequest(id="nope"), timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND and seen == ["nope"]
    finally:
        server.stop(None)


# ---------------------------------------------------------------------------------------
# Echoed input


def test_shown_quotes_at_most_a_prefix():
    assert shown("conv1") == "'conv1'"
    assert shown(12) == "12"
    long = shown("x" * 100_000)
    assert long.startswith("'xxx") and long.endswith("... (100000 characters)") and len(long) < 120


def test_status_messages_are_capped():
    code, message = status_for(NotFound("unknown operation " + "0" * 100_000))
    assert code == grpc.StatusCode.NOT_FOUND
    assert len(message) <= MAX_MESSAGE_CHARS and message.startswith("unknown operation 000")
    assert message.endswith("(message cut, 100018 characters)")
    assert status_for(InvalidArgument("short"))[1] == "short"


# ---------------------------------------------------------------------------------------
# Image headers


def png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 9)) + chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def encoded(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def no_decoding(monkeypatch):
    """Any pixel decoding fails the test: refusals must come from the header alone."""

    def load(self):
        raise AssertionError("decoded pixels of an image that the header should have refused")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.mark.parametrize("data", [png_declaring(50_000, 50_000), jpeg_declaring(65_535, 65_535)], ids=["png", "jpeg"])
def test_headers_past_pillows_bomb_limit_are_invalid_arguments(data, no_decoding):
    """They were INTERNAL, with a 2.5 KB traceback in the log per 65-byte request."""
    with pytest.raises(InvalidArgument, match="more pixels than the decoder accepts; the limit is 16777216"):
        decode_image(data, 4096 * 4096)


def test_a_fixed_size_model_refuses_other_sizes_on_the_header(no_decoding):
    """A 4096x4096 upload (16 KB of PNG) to a 28x28 model was decoded (+65 MB) first."""
    bomb = encoded(Image.new("L", (4096, 4096)))
    with pytest.raises(InvalidArgument, match="image is 4096x4096; the model takes 28x28 images"):
        decode_image(bomb, 4096 * 4096, (28, 28))
    with pytest.raises(InvalidArgument, match="4097x4096 = 16781312 pixels; the limit is 16777216"):
        decode_image(encoded(Image.new("L", (4097, 4096))), 4096 * 4096, (28, 28))


def test_the_right_size_still_decodes():
    image = decode_image(encoded(Image.new("L", (28, 28), 7)), 4096 * 4096, (28, 28))
    assert image.size == (28, 28) and image.getpixel((3, 3)) == 7
    small = decode_image(encoded(Image.new("L", (10, 10))), 4096 * 4096, (28, 28))  # refused later, by shape
    assert small.size == (10, 10)


def test_fixed_input_size():
    assert fixed_input_size(Preprocessing(channels="L", mean=(0.5,), std=(0.5,), input_shape=(1, 28, 32))) == (32, 28)
    assert fixed_input_size(Preprocessing(resize=256, crop=224, input_shape=(3, 224, 224))) is None
    assert fixed_input_size(Preprocessing(crop=224, input_shape=(3, 224, 224))) is None
    assert fixed_input_size(Preprocessing()) is None


# ---------------------------------------------------------------------------------------
# Caps that depend on the bundle


def served_with_layers(*names: str):
    return SimpleNamespace(layout=[SimpleNamespace(name=name) for name in names])


def test_layers_at_most_one_entry_per_layer():
    served = served_with_layers("a", "b", "c")
    assert check_layers(served, ["b", "a", "b"]) == ["b", "a"]
    with pytest.raises(InvalidArgument, match="layers has 4 entries; this model has 3 layers"):
        check_layers(served, ["a"] * 4)
    with pytest.raises(InvalidArgument, match=r"unknown layer\(s\) 'zzzz.*\(300 characters\)"):
        check_layers(served, ["z" * 300])


def test_explain_filters_at_most_the_models_filter_count():
    served = SimpleNamespace(layout=SimpleNamespace(num_filters=6))
    queries = Queries(SimpleNamespace(get=lambda name: served), SimpleNamespace())
    with pytest.raises(InvalidArgument, match="filters has 7 entries; this model has 6 filters"):
        queries.explain("", 0, filters=[0] * 7)


def _size(counts, selections, neighbors, bundle):
    """The size cap as the proto states it (one random draw, no collateral: see test_server_evaluations)."""
    _check_size(_Plan(counts, selections, 1, neighbors, 0), bundle, whole_network=False)


def test_evaluation_size_cap():
    bundle = SimpleNamespace(bundle=SimpleNamespace(num_misclassified=1000))
    _size((1, 5, 25, 75), ("most", "random", "least"), 1000, bundle)  # 4 counts, 1000 neighbours: 12,000
    with pytest.raises(
        InvalidArgument, match=f"64 counts x 3 selections x 1000 neighbors = 192000; at most {MAX_EVALUATION_SIZE}"
    ):
        _size(tuple(range(1, 65)), ("most", "random", "least"), 1000, bundle)
    few = SimpleNamespace(bundle=SimpleNamespace(num_misclassified=30))  # only 30 can be evaluated
    _size(tuple(range(1, 65)), ("most", "random", "least"), 1000, few)
    _size(tuple(range(1, 65)), ("most",), 0, bundle)  # pruning the sample alone


def test_counts_entries_are_capped_before_deduplication():
    assert _counts([5, 5, 1], (), 10) == (5, 1)
    with pytest.raises(InvalidArgument, match="counts and count_fractions have 65 entries; at most 64"):
        _counts([1] * 65, (), 10)


# ---------------------------------------------------------------------------------------
# Interrupted operations


def test_a_pending_operation_interrupted_by_a_crash_says_it_never_ran(tmp_path):
    now = pb.Operation(id="", kind=pb.OPERATION_KIND_PRUNING_EVALUATION)
    with OperationStore(tmp_path) as store:
        for op_id, state in (("a", pb.OPERATION_STATE_PENDING), ("b", pb.OPERATION_STATE_RUNNING)):
            record = pb.Operation()
            record.CopyFrom(now)
            record.id, record.state = op_id, state
            store.put(record)
    with OperationStore(tmp_path) as store:
        assert sorted(store.abort_unfinished()) == ["a", "b"]
        pending, running = store.get("a"), store.get("b")
    assert pending.state == running.state == pb.OPERATION_STATE_ABORTED
    assert pending.message == pending.error.message == NEVER_STARTED_MESSAGE and "never" in NEVER_STARTED_MESSAGE
    assert running.message == running.error.message == ABORTED_MESSAGE
    assert aborted_message(pb.OPERATION_STATE_RUNNING) == ABORTED_MESSAGE
