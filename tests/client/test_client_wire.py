"""The SDK over a real gRPC connection to the fake servicers: auth, errors, retries, operations."""

from __future__ import annotations

import shutil
import socket
import subprocess

import grpc
import numpy as np
import pytest
from client_fakes import start_fake
from PIL import Image

from parasal import client as pc
from parasal.v1 import saliency_pb2 as pb


def test_responses_arrive_as_dataclasses(client, fake):
    (info,) = client.index_info(bundle="demo")
    assert info.num_filters == 96 and [layer.name for layer in info.layers] == ["conv1", "conv2"]
    assert len(client.index_info()) == 2
    sample = client.sample(3)
    assert (sample.id, sample.label, sample.predicted, sample.correct) == (3, 3, 4, False)
    assert sample.image_png is None and sample.predicted_name == "Coat"
    image = client.sample_image(3)
    assert isinstance(image, Image.Image) and image.size == (4, 3)
    profile = client.profile(sample_id=3, full=True)
    assert profile.vector.dtype == np.float32 and profile.vector.shape == (96,) and profile.sample_id == 3
    similar = client.find_similar_failures(sample_id=3, k=4)
    assert len(similar) == 4 and [n.id for n in similar] == [100, 101, 102, 103]
    assert similar.confusions == [pc.ConfusionCount(0, 1, 4)]
    explanation = client.explain_input(sample_id=3)
    assert explanation.heatmap.shape == (2, 3) and explanation.overlay_png.startswith(b"\x89PNG")


def test_unknown_bundle_in_index_info(client):
    with pytest.raises(pc.NotFound, match="nope"):
        client.index_info(bundle="nope")


def test_token_goes_out_as_bearer_metadata(fake):
    fake.state.token = "s3cret"
    with pc.Client(fake.target, timeout=5) as anonymous, pytest.raises(pc.Unauthenticated) as info:
        anonymous.sample(1)
    assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
    with pc.Client(fake.target, token="s3cret\n", timeout=5) as c:
        assert c.sample(1).id == 1
        c.start_pruning_evaluation(sample_id=1).result(timeout=5)  # unary and streaming calls alike
    authorizations = {c[2].get("authorization") for c in fake.state.calls}
    assert authorizations == {None, "Bearer s3cret"}
    assert fake.state.count("WatchOperation") >= 1


@pytest.mark.parametrize(
    "code, cls",
    [
        (grpc.StatusCode.NOT_FOUND, pc.NotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, pc.InvalidArgument),
        (grpc.StatusCode.PERMISSION_DENIED, pc.PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, pc.ResourceExhausted),
        (grpc.StatusCode.FAILED_PRECONDITION, pc.FailedPrecondition),
        (grpc.StatusCode.INTERNAL, pc.Internal),
    ],
)
def test_status_codes_over_the_wire(client, fake, code, cls):
    fake.state.failures["GetProfile"] = [(code, "planned failure")]
    with pytest.raises(cls) as info:
        client.profile(sample_id=1)
    assert info.value.code is code and info.value.details == "planned failure"


def test_unavailable_is_retried_for_queries_only(client, fake):
    fake.state.failures["GetSample"] = [(grpc.StatusCode.UNAVAILABLE, "restarting")] * 2
    assert client.sample(5).id == 5
    assert fake.state.count("GetSample") == 3

    fake.state.failures["GetProfile"] = [(grpc.StatusCode.INVALID_ARGUMENT, "label out of range")] * 3
    with pytest.raises(pc.InvalidArgument):
        client.profile(sample_id=1)
    assert fake.state.count("GetProfile") == 1  # never retried

    # Starting an evaluation is not idempotent: a retry could start it twice.
    fake.state.failures["StartFinetuneEvaluation"] = [(grpc.StatusCode.UNAVAILABLE, "restarting")]
    with pytest.raises(pc.Unavailable):
        client.start_finetune_evaluation(sample_id=1)
    assert fake.state.count("StartFinetuneEvaluation") == 1


def test_deadline_is_a_timeout_error(fake):
    fake.state.hold = True  # the server takes the call and never answers
    with pc.Client(fake.target, timeout=0.2) as c:
        with pytest.raises(pc.DeadlineExceeded) as info:
            c.sample(1)
        assert isinstance(info.value, TimeoutError)
        # It returned because of its deadline: the server had the call, never answered it,
        # and saw the client end it.
        assert fake.state.count("GetSample") == 1 and fake.state.held_call_ended.wait(5)
        fake.state.hold = False
        assert c.sample(1, timeout=5).id == 1
    held, answered = fake.state.time_remaining("GetSample")
    # The held call carried the client's 0.2 s, the next its own 5 s (gRPC rounds deadlines
    # a little, so compare against a bound far from both).
    assert held < 1.0 < answered  # a per-call timeout overrides the client's


def test_connection_refused_is_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pc.Client(f"127.0.0.1:{port}", timeout=5) as c, pytest.raises(pc.Unavailable):
        c.index_info()


def test_large_messages_pass(client, fake):
    # 8 MiB upload: more than gRPC's 4 MiB default, well within the client's limit.
    upload = b"\x89PNG\r\n\x1a\n" + bytes(8 * 1024 * 1024)  # bytes go unchanged; the fake does not decode
    client.profile(image=upload, label=1)
    assert len(fake.state.requests("GetProfile")[0].image.data) > 4 * 1024 * 1024


# ---------------------------------------------------------------------------------------
# Operations


def test_result_follows_the_watch_stream(client, fake):
    handle = client.start_finetune_evaluation(sample_id=3)
    assert handle.id == "op-1" and handle.operation.state == "pending"
    snapshots = list(handle)
    assert [op.state for op in snapshots] == ["pending", "running", "succeeded"]
    assert [op.progress for op in snapshots] == [0.0, 0.5, 1.0] and snapshots[1].message == "most 5/12"
    result = handle.result()
    assert isinstance(result, pc.FinetuneResult) and result.step_size == pytest.approx(0.001)
    assert [r.selection for r in result.rows] == ["most", "whole_network"]
    assert result.neighbor_ids.tolist() == [11, 12] and result.reference.sample_id == 3
    assert fake.state.count("WatchOperation") == 1  # the finished snapshot is reused

    pruning = client.start_pruning_evaluation(sample_id=3).result(timeout=5)
    assert isinstance(pruning, pc.PruningResult) and pruning.rows[0].selection == "least"


def _script(fake, op_id, final):
    fake.state.scripts[op_id] = [
        pb.Operation(id=op_id, kind=pb.OPERATION_KIND_PRUNING_EVALUATION, state=pb.OPERATION_STATE_RUNNING),
        final,
    ]


@pytest.mark.parametrize(
    "final, cls, code, details",
    [
        (
            pb.Operation(
                id="x",
                state=pb.OPERATION_STATE_FAILED,
                error=pb.OperationError(code=3, message="label 12 out of range"),
            ),
            pc.OperationFailed,
            grpc.StatusCode.INVALID_ARGUMENT,
            "label 12 out of range",
        ),
        (
            pb.Operation(id="x", state=pb.OPERATION_STATE_FAILED, message="worker died"),
            pc.OperationFailed,
            grpc.StatusCode.UNKNOWN,
            "worker died",
        ),
        (
            pb.Operation(id="x", state=pb.OPERATION_STATE_CANCELLED),
            pc.OperationCancelled,
            grpc.StatusCode.CANCELLED,
            "operation x was cancelled",
        ),
        (
            pb.Operation(
                id="x", state=pb.OPERATION_STATE_ABORTED, error=pb.OperationError(code=10, message="server stopped")
            ),
            pc.OperationAborted,
            grpc.StatusCode.ABORTED,
            "server stopped",
        ),
    ],
)
def test_unsuccessful_outcomes_raise_typed_errors(client, fake, final, cls, code, details):
    _script(fake, "x", final)
    handle = client.operation_handle("x")
    with pytest.raises(cls) as info:
        handle.result(timeout=5)
    assert info.value.code is code and info.value.details == details
    assert isinstance(info.value, pc.ParasalError) and info.value.operation.id == "x"


def test_result_timeout_leaves_the_operation_running(client, fake):
    handle = client.start_finetune_evaluation(sample_id=3)
    fake.state.hang(handle.id)
    with pytest.raises(pc.OperationTimeout) as info:
        handle.result(timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    # The wait ended because its 0.3 s ran out, neither earlier nor never: one watch call,
    # carrying that deadline, ended by gRPC's DEADLINE_EXCEEDED (not by the stream ending).
    assert isinstance(info.value.__cause__, pc.DeadlineExceeded)
    (watch_deadline,) = fake.state.time_remaining("WatchOperation")
    assert watch_deadline is not None and watch_deadline < 1.0  # the wait's 0.3 s was the RPC's deadline
    assert "still pending" in info.value.details and fake.state.count("CancelOperation") == 0
    # Cancelling ends it, and a later wait reports the cancellation.
    assert handle.cancel().state == "cancelled"
    with pytest.raises(pc.OperationCancelled):
        handle.result(timeout=5)


def test_stopping_iteration_cancels_the_watch_call(client, fake):
    handle = client.start_finetune_evaluation(sample_id=3)
    fake.state.hang(handle.id)
    watch = iter(handle)
    assert next(watch).state == "pending"
    watch.close()
    assert fake.state.watch_cancelled.wait(5), "the server never saw the watch end"


def test_stream_ending_early_falls_back_to_get(client, fake):
    handle = client.start_finetune_evaluation(sample_id=3)
    fake.state.truncated.add(handle.id)
    assert isinstance(handle.result(timeout=5), pc.FinetuneResult)
    assert fake.state.count("GetOperation") == 1


def test_operations_listing_get_cancel_and_unknown_ids(client, fake):
    first = client.start_finetune_evaluation(sample_id=1)
    first.result(timeout=5)
    second = client.start_pruning_evaluation(sample_id=2)
    fake.state.scripts[second.id] = fake.state.scripts[second.id][:2]  # still running
    ops = client.operations()
    assert [op.id for op in ops] == [first.id, second.id]
    assert [op.id for op in client.operations(state="running")] == [second.id]
    assert client.operations(bundle="other") == []
    assert fake.state.requests("ListOperations")[1].state == pb.OPERATION_STATE_RUNNING
    assert client.operation(first.id).state == "succeeded"
    assert client.cancel(second.id).state == "cancelled"
    assert client.cancel(first.id).state == "succeeded"  # finished ones come back unchanged
    with pytest.raises(pc.NotFound):
        client.operation("nope")
    assert client.operation(first.id, bundle="demo").id == first.id
    with pytest.raises(pc.NotFound, match="belongs to bundle 'demo'"):
        client.cancel(first.id, bundle="other")
    assert fake.state.count("CancelOperation") == 2  # the refused cancel never went out
    with pytest.raises(pc.NotFound):
        list(client.operation_handle("nope"))


# ---------------------------------------------------------------------------------------
# TLS with call credentials


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            d / "key.pem",
            "-out",
            d / "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return d / "cert.pem", d / "key.pem"


def test_tls_with_bearer_token(certificate):
    cert, key = certificate
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    fake = start_fake(credentials)
    try:
        fake.state.token = "tls-token"
        with pc.Client(fake.target, token="tls-token", timeout=5, tls=True, root_certificates=cert) as c:
            assert c.sample(2).id == 2
            assert isinstance(c.start_finetune_evaluation(sample_id=1).result(timeout=5), pc.FinetuneResult)
        assert {call[2].get("authorization") for call in fake.state.calls} == {"Bearer tls-token"}
        with pc.Client(fake.target, timeout=5) as plaintext, pytest.raises(pc.Unavailable):
            plaintext.sample(2)
    finally:
        fake.server.stop(grace=None)


def test_root_certificates_need_tls():
    with pytest.raises(pc.InvalidArgument):
        pc.Client("127.0.0.1:1", root_certificates=b"pem")
