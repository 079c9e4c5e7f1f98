"""Dataset-level experiments through a real server (SDK and `parasal experiment --server`) and
in-process (`parasal experiment --bundle DIR`): results, status codes, cancel."""

from __future__ import annotations

import json

import grpc
import pytest

from parasal.client import ExperimentResult, FailedPrecondition, InvalidArgument, OperationCancelled, cli
from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.slow, pytest.mark.fashion_mnist]


@pytest.fixture(scope="module")
def ref_server(start_server, reference_bundle_dir):
    return start_server(bundle=reference_bundle_dir)


@pytest.fixture(scope="module")
def ref_client(ref_server):
    from parasal.client import Client

    with Client(ref_server.address, timeout=60) as c:
        yield c


def test_an_experiment_runs_as_an_operation(ref_client):
    handle = ref_client.start_experiment("masking", references=3, seed=2, options={"percent": 10})
    assert handle.operation.kind == "experiment"
    result = handle.result(timeout=300)
    assert isinstance(result, ExperimentResult) and result.name == "masking" and result.references == 3
    doc = result.to_dict()
    assert doc["experiment"] == "masking" and doc["seed"] == 2 and doc["options"]["percent"] == 10.0
    json.dumps(doc, allow_nan=False)
    assert {(p.selection, p.metric) for p in result.points} >= {("top", "true_confidence_delta")}
    assert [p.mean for p in result.points] == [p["mean"] for p in doc["points"]]
    assert result.plot_png.startswith(b"\x89PNG") and result.seconds > 0


def test_the_same_request_gives_the_same_points(ref_client):
    def run():
        return ref_client.start_experiment("pruning", references=2, options={"counts": [1, 2]}).result(timeout=300)

    assert run().points == run().points


def test_bad_requests_get_their_status_codes(ref_server, ref_client, client):
    with pytest.raises(InvalidArgument, match="no option"):
        ref_client.start_experiment("masking", options={"nope": 1})
    with pytest.raises(InvalidArgument, match="references"):
        ref_client.start_experiment("masking", references=100_000)
    with pytest.raises(FailedPrecondition, match="reference data"):
        client.start_experiment("beta")  # the plain e2e bundle has none
    # An unknown name straight on the wire (the SDK refuses it before sending).
    with grpc.insecure_channel(ref_server.address) as channel:
        stub = pb_grpc.EvaluationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.StartExperiment(pb.StartExperimentRequest(name="bogus"), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_experiment_can_be_cancelled(ref_client):
    handle = ref_client.start_experiment("sanity", references=18)
    for op in handle.watch(timeout=300):
        if op.state == "running":
            handle.cancel()
            break
    with pytest.raises(OperationCancelled):
        handle.result(timeout=120)


def test_the_cli_runs_through_the_server(ref_server, tmp_path, capsys):
    out = tmp_path / "remote"
    status = cli.main(
        ["experiment", "neighbors", "--server", ref_server.address, "--out", str(out), "--references", "4", "--json"]
    )
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["experiments"][0]["experiment"] == "neighbors"
    doc = json.loads((out / "neighbors.json").read_text())
    assert doc["experiment"] == "neighbors" and doc["points"]
    assert (out / "neighbors.png").read_bytes().startswith(b"\x89PNG")


def test_the_cli_runs_in_process_and_reports_errors(reference_bundle_dir, bundle_dir, tmp_path, capsys):
    out = tmp_path / "local"
    args = ["experiment", "beta", "--bundle", str(reference_bundle_dir), "--out", str(out), "--no-progress"]
    assert cli.main(args) == 0
    assert "beta: 300 references" in capsys.readouterr().out
    assert json.loads((out / "beta.json").read_text())["references"] == 300
    # Without reference data: FAILED_PRECONDITION, one JSON document on stderr under --json.
    status = cli.main(["experiment", "beta", "--bundle", str(bundle_dir), "--out", str(out), "--json"])
    err = json.loads(capsys.readouterr().err)
    assert status == 1 and err["error"]["code"] == "FAILED_PRECONDITION"
    status = cli.main(["experiment", "masking", "--bundle", str(bundle_dir), "--out", str(out), "--option", "x"])
    assert status == 2 and "KEY=VALUE" in capsys.readouterr().err
