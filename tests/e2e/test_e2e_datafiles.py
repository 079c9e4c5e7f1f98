"""Dataset and bundle files changing under a real server (issue #12 §2): an indexed image
replaced by an 8000x8000 PNG or by a symlink leaving the dataset, and one bundle's
profiles.npy truncated. Each is DATA_LOSS for that sample or bundle, naming the sample and
never a path on the server (the server log keeps the path); the server does not grow, and
the other bundle, health and the server itself keep going."""

from __future__ import annotations

import shutil
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from parasal.indexer import IndexJob, open_bundle, run_index
from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as rpc

pytestmark = pytest.mark.slow  # a real server process

TOO_LARGE = "image is 8000x8000 = 64000000 pixels; the limit is 16777216"  # the server's default limit


def image_folder(root, per_class: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for k in range(per_class):
            img = rng.integers(0, 160, size=(28, 28), dtype=np.uint8)
            img[:, c * 7 : c * 7 + 5] = 255
            Image.fromarray(img).save(root / f"c{c}" / f"{k:03d}.png")
    return root


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def data_loss(call, request) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS, err.value.details()
    return err.value.details()


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("datafiles")
    data = image_folder(tmp / "victim-data")
    run_index(IndexJob(data=str(data), out=tmp / "victim", model="demo-fashion", progress=False, device="cpu"))
    shutil.copytree(tmp / "victim", tmp / "other")  # its own files: truncating the victim's leaves them whole
    return tmp


def test_changed_files_are_data_loss_for_that_sample_or_bundle_only(two_bundles, start_server):
    tmp = two_bundles
    server = start_server(
        "--bundle",
        f"other={tmp / 'other'}",
        "--sample-cache",
        "0",
        "--neighbor-lists",
        "0",
        "--no-saliency-process",
        bundle=tmp / "victim",
    )
    with open_bundle(tmp / "victim") as b:
        uris = {i: b.meta(i).uri for i in (0, 1)}
    with grpc.insecure_channel(server.address) as channel:
        queries, ops = rpc.SaliencyServiceStub(channel), rpc.OperationsServiceStub(channel)
        evaluations = rpc.EvaluationServiceStub(channel)
        assert queries.GetSample(pb.GetSampleRequest(bundle="victim", id=0, include_image=True), timeout=60).image_png
        queries.ExplainInput(pb.ExplainInputRequest(bundle="victim", sample_id=0), timeout=60)
        before = rss_kb(server.proc.pid)

        Image.new("L", (8000, 8000)).save(uris[0], format="PNG")  # 60 KB on disk, 64 MB decoded
        for _ in range(3):
            message = data_loss(queries.ExplainInput, pb.ExplainInputRequest(bundle="victim", sample_id=0))
            data_loss(queries.GetSample, pb.GetSampleRequest(bundle="victim", id=0, include_image=True))
        assert message == "cannot read the image of sample 0: " + TOO_LARGE
        assert rss_kb(server.proc.pid) - before < 32 * 1024  # refused on the header, never decoded

        secret = tmp / "secret.png"
        Image.new("L", (28, 28), 7).save(secret)
        (tmp / "victim-data" / "c0" / "001.png").unlink()
        (tmp / "victim-data" / "c0" / "001.png").symlink_to(secret)
        message = data_loss(queries.GetSample, pb.GetSampleRequest(bundle="victim", id=1, include_image=True))
        assert message.startswith("cannot read the image of sample 1: its file lies outside the dataset's root")

        op = evaluations.StartFinetuneEvaluation(
            pb.StartFinetuneEvaluationRequest(bundle="victim", sample_id=0, num_neighbors=1), timeout=60
        ).operation
        for _ in range(600):  # a failed operation says why, without the path either
            op = ops.GetOperation(pb.GetOperationRequest(id=op.id), timeout=60).operation
            if op.state not in (pb.OPERATION_STATE_PENDING, pb.OPERATION_STATE_RUNNING):
                break
            time.sleep(0.1)
        assert op.state == pb.OPERATION_STATE_FAILED and op.error.code == grpc.StatusCode.DATA_LOSS.value[0]
        assert "sample 0" in op.error.message

        with open(tmp / "victim" / "gen-00001" / "profiles.npy", "r+b") as f:
            f.truncate(128)  # the header survives, the rows do not: a mapped read would SIGBUS
        for request in (
            pb.GetProfileRequest(bundle="victim", sample_id=2, include_vector=True),
            pb.FindSimilarFailuresRequest(bundle="victim", sample_id=2, k=3),
        ):
            call = queries.GetProfile if isinstance(request, pb.GetProfileRequest) else queries.FindSimilarFailures
            message = data_loss(call, request)
            assert message.startswith("bundle 'victim' is damaged: profiles.npy shrank from")
        other = queries.GetProfile(pb.GetProfileRequest(bundle="other", sample_id=2, include_vector=True), timeout=60)
        assert len(other.vector) > 0  # the other bundle keeps serving
        assert queries.ListBundles(pb.ListBundlesRequest(), timeout=60).bundles
    assert server.proc.poll() is None  # alive
    log = server.log()
    assert str(tmp / "victim-data" / "c0" / "000.png") in log and "profiles.npy shrank" in log  # the log has the path
    assert str(tmp) not in message
