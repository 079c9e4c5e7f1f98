"""The bad-input corpus: requests that once came back INTERNAL or cost far more than they
weigh (issue #12 §4), sent over the raw stubs to a real server on 127.0.0.1.

Every case gets its documented status with a short message; afterwards the server still
answers, its memory stayed bounded and its log holds no traceback.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
#: The proto's promise: status messages are at most 1,000 characters.
MAX_DETAILS = 1000
#: RSS the whole corpus may add to the server (generous: it sends ~150 MB in all).
MAX_RSS_GROWTH_MB = 200


# ---------------------------------------------------------------------------------------
# Hostile images (each a few hundred bytes)


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed grey PNG whose header declares width x height (its data holds one row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1025))
        + chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


PNG_BOMB = png_declaring(50_000, 50_000)  # past Pillow's own limit: INTERNAL before
JPEG_BOMB = jpeg_declaring(65_535, 65_535)
FULL_SIZE_BOMB = png(Image.new("L", (4096, 4096)))  # 16 KB, decoded (+65 MB) before being refused
GOOD = png(Image.new("L", (28, 28), 128))
LAYER = "layer1.0.conv1"  # a layer of the demo model (9 layers, 672 filters)


# ---------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Stubs:
    saliency: pb_grpc.SaliencyServiceStub
    evaluation: pb_grpc.EvaluationServiceStub
    operations: pb_grpc.OperationsServiceStub
    channel: grpc.Channel


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Stubs], object]  # makes the call (and reads a stream to its end)
    code: grpc.StatusCode
    words: str = ""  # expected in the message


def image(data: bytes, label: int = 0) -> pb.ImageInput:
    return pb.ImageInput(data=data, label=label)


def uploads(name: str, data: bytes, words: str) -> list[Case]:
    """The same image through every rpc that takes one."""
    return [
        Case(
            f"{name}: GetProfile",
            lambda s: s.saliency.GetProfile(pb.GetProfileRequest(image=image(data))),
            INVALID,
            words,
        ),
        Case(
            f"{name}: FindSimilarFailures",
            lambda s: s.saliency.FindSimilarFailures(pb.FindSimilarFailuresRequest(image=image(data))),
            INVALID,
            words,
        ),
        Case(
            f"{name}: ExplainInput",
            lambda s: s.saliency.ExplainInput(pb.ExplainInputRequest(image=image(data))),
            INVALID,
            words,
        ),
        Case(
            f"{name}: StartFinetuneEvaluation",
            lambda s: s.evaluation.StartFinetuneEvaluation(pb.StartFinetuneEvaluationRequest(image=image(data))),
            INVALID,
            words,
        ),
        Case(
            f"{name}: StartPruningEvaluation",
            lambda s: s.evaluation.StartPruningEvaluation(pb.StartPruningEvaluationRequest(image=image(data))),
            INVALID,
            words,
        ),
    ]


def long_strings() -> list[Case]:
    huge, long_id, id_10k = "b" * (60 << 20), "0" * 100_000, "0" * 10_000
    return [
        # Over the method's receive limit: refused before parsing (a limit, RESOURCE_EXHAUSTED).
        Case(
            "60 MB bundle name", lambda s: s.saliency.GetSample(pb.GetSampleRequest(bundle=huge)), EXHAUSTED, "larger"
        ),
        Case("100 KB id", lambda s: s.operations.GetOperation(pb.GetOperationRequest(id=long_id)), EXHAUSTED, "larger"),
        # Within it, but over the 256-byte cap on strings.
        Case(
            "10 KB bundle name",
            lambda s: s.saliency.GetSample(pb.GetSampleRequest(bundle="b" * 10_000)),
            INVALID,
            "bundle",
        ),
        Case(
            "300-byte bundle name",
            lambda s: s.saliency.GetProfile(pb.GetProfileRequest(bundle="x" * 300, sample_id=0)),
            INVALID,
            "bundle",
        ),
        Case(
            "10 KB id: GetOperation",
            lambda s: s.operations.GetOperation(pb.GetOperationRequest(id=id_10k)),
            INVALID,
            "id",
        ),
        Case(
            "10 KB id: CancelOperation",
            lambda s: s.operations.CancelOperation(pb.CancelOperationRequest(id=id_10k)),
            INVALID,
            "id",
        ),
        Case(
            "10 KB id: WatchOperation",
            lambda s: list(s.operations.WatchOperation(pb.WatchOperationRequest(id=id_10k))),
            INVALID,
            "id",
        ),
        Case(
            "unknown 200-byte id",
            lambda s: s.operations.GetOperation(pb.GetOperationRequest(id="z" * 200)),
            NOT_FOUND,
            "unknown operation",
        ),
        Case(
            "1 KB layer name",
            lambda s: s.saliency.FindSimilarFailures(pb.FindSimilarFailuresRequest(sample_id=0, layers=["l" * 1024])),
            INVALID,
            "layers",
        ),
        Case(
            "unknown 200-byte layer name",
            lambda s: s.saliency.FindSimilarFailures(pb.FindSimilarFailuresRequest(sample_id=0, layers=["l" * 200])),
            INVALID,
            "unknown layer",
        ),
        Case(
            "300-byte neighbor_bundle",
            lambda s: s.evaluation.StartFinetuneEvaluation(
                pb.StartFinetuneEvaluationRequest(sample_id=0, neighbor_bundle="n" * 300)
            ),
            INVALID,
            "neighbor_bundle",
        ),
    ]


def undecodable() -> list[Case]:
    """Bytes that are not the method's message (grpc's default was INTERNAL)."""

    def raw(method: str, data: bytes):
        return lambda s: s.channel.unary_unary(method)(data)

    return [
        Case("junk bytes: GetSample", raw("/parasal.v1.SaliencyService/GetSample", b"\xff" * 8), INVALID),
        Case("junk bytes: GetProfile", raw("/parasal.v1.SaliencyService/GetProfile", b"\x1a\xff\xff\xff"), INVALID),
        Case(
            "junk bytes: StartPruningEvaluation",
            raw("/parasal.v1.EvaluationService/StartPruningEvaluation", b"\x0a\x05ab"),
            INVALID,
        ),
    ]


def repeated_fields() -> list[Case]:
    million = [1] * 1_000_000
    return [
        Case(
            "1M true_labels",
            lambda s: s.saliency.FindSimilarFailures(pb.FindSimilarFailuresRequest(sample_id=0, true_labels=million)),
            INVALID,
            "true_labels",
        ),
        Case(
            "1M predicted_labels",
            lambda s: s.saliency.FindSimilarFailures(
                pb.FindSimilarFailuresRequest(sample_id=0, predicted_labels=million)
            ),
            INVALID,
            "predicted_labels",
        ),
        Case(
            "2M filters",
            lambda s: s.saliency.ExplainInput(pb.ExplainInputRequest(sample_id=0, filters=million * 2)),
            INVALID,
            "filters",
        ),
        Case(
            "more filters than the model has",
            lambda s: s.saliency.ExplainInput(pb.ExplainInputRequest(sample_id=0, filters=[0] * 5000)),
            INVALID,
            "filters",
        ),
        Case(
            "20k layers",
            lambda s: s.saliency.FindSimilarFailures(
                pb.FindSimilarFailuresRequest(sample_id=0, layers=[LAYER] * 20_000)
            ),
            INVALID,
            "layers",
        ),
        Case(
            "more layers than the model has",
            lambda s: s.saliency.FindSimilarFailures(pb.FindSimilarFailuresRequest(sample_id=0, layers=[LAYER] * 100)),
            INVALID,
            "layers",
        ),
        Case(
            "2M vector values",
            lambda s: s.saliency.FindSimilarFailures(
                pb.FindSimilarFailuresRequest(vector=pb.ProfileVector(values=np.ones(2_000_000, np.float32).tolist()))
            ),
            INVALID,
            "vector.values",
        ),
        Case(
            "1000 counts",
            lambda s: s.evaluation.StartPruningEvaluation(
                pb.StartPruningEvaluationRequest(sample_id=0, counts=list(range(1, 1001)))
            ),
            INVALID,
            "counts",
        ),
        Case(
            "1000 selections",
            lambda s: s.evaluation.StartFinetuneEvaluation(
                pb.StartFinetuneEvaluationRequest(sample_id=0, selections=[pb.SELECTION_RANDOM] * 1000)
            ),
            INVALID,
            "selections",
        ),
    ]


def numbers() -> list[Case]:
    top = 2**31 - 1
    return [
        Case(
            "k int32 max",
            lambda s: s.saliency.FindSimilarFailures(pb.FindSimilarFailuresRequest(sample_id=0, k=top)),
            INVALID,
            "k",
        ),
        Case(
            "top_k -1", lambda s: s.saliency.GetProfile(pb.GetProfileRequest(sample_id=0, top_k=-1)), INVALID, "top_k"
        ),
        Case(
            "label int32 max",
            lambda s: s.saliency.GetProfile(pb.GetProfileRequest(image=image(GOOD, top))),
            INVALID,
            "label",
        ),
        Case(
            "label int32 max in a filter",
            lambda s: s.saliency.FindSimilarFailures(pb.FindSimilarFailuresRequest(sample_id=0, true_labels=[top])),
            INVALID,
            "label",
        ),
        Case(
            "filter index int32 min",
            lambda s: s.saliency.ExplainInput(pb.ExplainInputRequest(sample_id=0, filters=[-(2**31)])),
            INVALID,
            "filter index",
        ),
        Case(
            "sample id int64 min", lambda s: s.saliency.GetSample(pb.GetSampleRequest(id=-(2**63))), NOT_FOUND, "sample"
        ),
        Case(
            "boost NaN",
            lambda s: s.saliency.ExplainInput(pb.ExplainInputRequest(sample_id=0, boost=float("nan"))),
            INVALID,
            "boost",
        ),
        Case(
            "step_size -inf",
            lambda s: s.evaluation.StartFinetuneEvaluation(
                pb.StartFinetuneEvaluationRequest(sample_id=0, step_size=float("-inf"))
            ),
            INVALID,
            "step_size",
        ),
        Case(
            "num_neighbors int32 max",
            lambda s: s.evaluation.StartPruningEvaluation(
                pb.StartPruningEvaluationRequest(sample_id=0, num_neighbors=top)
            ),
            INVALID,
            "num_neighbors",
        ),
        Case(
            "count int32 max",
            lambda s: s.evaluation.StartPruningEvaluation(pb.StartPruningEvaluationRequest(sample_id=0, counts=[top])),
            INVALID,
            "count",
        ),
        Case(
            "selection 99",
            lambda s: s.evaluation.StartPruningEvaluation(
                pb.StartPruningEvaluationRequest(sample_id=0, selections=[99])
            ),
            INVALID,
            "selection",
        ),
        Case(
            "page_size -1",
            lambda s: s.operations.ListOperations(pb.ListOperationsRequest(page_size=-1)),
            INVALID,
            "page_size",
        ),
        Case("no query", lambda s: s.saliency.GetProfile(pb.GetProfileRequest()), INVALID, "query"),
    ]


CORPUS: list[Case] = [
    *uploads("PNG 50000x50000 header", PNG_BOMB, "pixels"),
    *uploads("JPEG 65535x65535 header", JPEG_BOMB, "pixels"),
    *uploads("4096x4096 PNG to a 28x28 model", FULL_SIZE_BOMB, "28x28"),
    *long_strings(),
    *undecodable(),
    *repeated_fields(),
    *numbers(),
]


# ---------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


@pytest.fixture(scope="module")
def hostile(start_server):
    """A server of its own (its own log and memory figures) and raw stubs to it."""
    server = start_server()
    options = [("grpc.max_send_message_length", 100 << 20), ("grpc.max_receive_message_length", 100 << 20)]
    channel = grpc.insecure_channel(server.address, options=options)
    stubs = Stubs(
        pb_grpc.SaliencyServiceStub(channel),
        pb_grpc.EvaluationServiceStub(channel),
        pb_grpc.OperationsServiceStub(channel),
        channel,
    )
    stubs.saliency.ListBundles(pb.ListBundlesRequest(), timeout=60)  # warm
    yield server, stubs
    channel.close()


def test_every_bad_input_gets_its_documented_status(hostile):
    server, stubs = hostile
    before = rss_mb(server.proc.pid)
    wrong = []
    for case in CORPUS:
        try:
            case.call(stubs)
        except grpc.RpcError as err:
            got, details = err.code(), err.details() or ""
        else:
            got, details = grpc.StatusCode.OK, ""
        if got != case.code or case.words not in details or len(details) > MAX_DETAILS:
            wrong.append(f"{case.name}: {got.name} {details[:200]!r} (expected {case.code.name}, {case.words!r})")
    after = rss_mb(server.proc.pid)
    print(f"\nbad-input corpus: {len(CORPUS)} cases; server RSS {before:.0f} -> {after:.0f} MB")
    assert not wrong, "\n".join(wrong)
    assert after - before < MAX_RSS_GROWTH_MB

    # Still answering, and nothing for the log to flood with.
    assert len(stubs.saliency.ListBundles(pb.ListBundlesRequest(), timeout=30).bundles) == 1
    assert stubs.saliency.GetSample(pb.GetSampleRequest(id=0), timeout=30).sample.id == 0
    assert stubs.saliency.GetProfile(pb.GetProfileRequest(image=image(GOOD)), timeout=60).predicted >= 0
    log = server.log()
    assert "Traceback" not in log and "internal error" not in log
    assert max(len(line) for line in log.splitlines()) < 2000  # no echoed input in the log either
