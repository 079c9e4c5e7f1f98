"""The SDK and CLI side of issue 15's evaluation options and of exporting a row's edit:
requests as sent (fake server), and the export file written whole or not at all."""

from __future__ import annotations

import grpc
import pytest

from parasal.client import Internal, InvalidArgument, cli
from parasal.client._export import write_export
from parasal.v1 import saliency_pb2 as pb


@pytest.fixture
def run(fake, capsys, monkeypatch):
    for name in (cli.TARGET_ENV, cli.TOKEN_ENV, cli.TOKEN_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(cli.TARGET_ENV, fake.target)

    def run(*argv):
        status = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_the_new_options_go_out_as_the_proto_fields(client, fake, run):
    client.start_pruning_evaluation(sample_id=3, count_fractions=[0.5, 0.01], random_draws=3, num_collateral=20)
    (request,) = fake.state.requests("StartPruningEvaluation")
    assert list(request.count_fractions) == pytest.approx([0.5, 0.01]) and request.random_draws == 3
    assert request.num_collateral == 20 and not request.skip_collateral
    client.start_finetune_evaluation(sample_id=3)
    (request,) = fake.state.requests("StartFinetuneEvaluation")
    assert (list(request.count_fractions), request.random_draws, request.num_collateral) == ([], 0, 0)  # defaults
    status, _, _ = run("eval", "finetune", "--sample", "3", "--count-fractions", "0.001,1", "--no-collateral")
    request = fake.state.requests("StartFinetuneEvaluation")[-1]
    assert status == 0 and list(request.count_fractions) == pytest.approx([0.001, 1.0]) and request.skip_collateral
    status, _, _ = run("eval", "pruning", "--sample", "3", "--random-draws", "7", "--collateral", "50")
    request = fake.state.requests("StartPruningEvaluation")[-1]
    assert status == 0 and request.random_draws == 7 and request.num_collateral == 50
    status, _, err = run("eval", "pruning", "--sample", "3", "--count-fractions", "0,0.5")
    assert status == 2 and "(0, 1]" in err
    with pytest.raises(InvalidArgument, match="count_fractions"):
        client.start_pruning_evaluation(sample_id=3, count_fractions=[float("nan")])


def test_a_failure_mode_replaces_the_reference(client, fake, run):
    status, _, _ = run("eval", "finetune", "--failure-mode", "2", "--no-wait")
    request = fake.state.requests("StartFinetuneEvaluation")[-1]
    assert status == 0 and request.HasField("failure_mode") and request.failure_mode == 2
    assert request.WhichOneof("reference") is None
    status, _, err = run("eval", "finetune", "--failure-mode", "2", "--sample", "3")
    assert status == 2 and "not allowed with" in err
    with pytest.raises(InvalidArgument, match="failure_mode"):
        client.start_finetune_evaluation(sample_id=3, failure_mode=1)


def _chunks(data: bytes, size: int, total: int | None = None, fail_after: int | None = None):
    def call(request, timeout=None, metadata=None):
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        for k, piece in enumerate(pieces):
            if fail_after is not None and k == fail_after:
                raise _RpcError()
            message = pb.ExportEditedModelResponse(data=piece)
            if k == 0:
                message.filters.extend([4, 9])
                message.step_size = 0.001
                message.seed = 3
                message.total_bytes = len(data) if total is None else total
            yield message

    return call


class _RpcError(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "connection dropped"


REQUEST = pb.ExportEditedModelRequest(operation_id="op-1", selection=pb.SELECTION_MOST_SALIENT, count=5)


def test_an_export_is_written_whole(tmp_path):
    data = bytes(range(256)) * 41
    out = tmp_path / "edited.pt"
    edit = write_export(_chunks(data, 1000), REQUEST, out, timeout=5, metadata=())
    assert out.read_bytes() == data
    assert (edit.path, edit.filters, edit.seed, edit.total_bytes) == (str(out), [4, 9], 3, len(data))
    assert edit.step_size == pytest.approx(0.001)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.pt"]


@pytest.mark.parametrize(
    "call, error",
    [
        (_chunks(b"x" * 5000, 1000, total=6000), Internal),  # the stream ended early
        (_chunks(b"x" * 5000, 1000, fail_after=2), Exception),  # the connection dropped mid-way
    ],
)
def test_an_interrupted_export_leaves_no_file(tmp_path, call, error):
    out = tmp_path / "edited.pt"
    out.write_bytes(b"an older file")
    with pytest.raises(error):
        write_export(call, REQUEST, out, timeout=5, metadata=())
    assert out.read_bytes() == b"an older file"  # untouched, and no partial file beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.pt"]


def test_export_refuses_a_directory_or_a_missing_parent(tmp_path):
    with pytest.raises(InvalidArgument, match="directory"):
        write_export(_chunks(b"x", 1), REQUEST, tmp_path, timeout=5, metadata=())
    with pytest.raises(InvalidArgument, match="does not exist"):
        write_export(_chunks(b"x", 1), REQUEST, tmp_path / "no" / "x.pt", timeout=5, metadata=())
