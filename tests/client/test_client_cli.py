"""The `parasal` command line against the fake server: output, exit codes, engine dispatch."""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest
from PIL import Image

from parasal.client import cli
from parasal.v1 import saliency_pb2 as pb


@pytest.fixture
def run(fake, capsys, monkeypatch):
    """run(*argv) -> (exit status, stdout, stderr), talking to the fake server."""
    for name in (cli.TARGET_ENV, cli.TOKEN_ENV, cli.TOKEN_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(cli.TARGET_ENV, fake.target)

    def run(*argv):
        status = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_help_and_usage_errors(run):
    status, out, _ = run("--help")
    assert status == 0 and "usage: parasal" in out and "similar" in out and "index" in out
    status, _, err = run("similar")  # one of --sample/--image/--vector-file is required
    assert status == 2 and "one of the arguments --sample --image --vector-file is required" in err
    status, _, err = run("ops")
    assert status == 2
    status, _, err = run("eval", "pruning", "--sample", "1", "--counts", "a,b")
    assert status == 2 and "comma-separated integers" in err
    status, _, _ = run()
    assert status == 2


def test_info(run):
    status, out, err = run("info", "--json")
    assert status == 0 and err == ""
    doc = json.loads(out)
    assert [b["name"] for b in doc["bundles"]] == ["demo", "other"]
    assert doc["bundles"][0]["layers"][1] == {"name": "conv2", "kind": "conv2d", "filters": 64, "offset": 32}
    assert doc["bundles"][0]["created_at"].startswith("2023-11-14T22:13:20")
    status, out, _ = run("--bundle", "demo", "info")  # options before the command work too
    assert status == 0 and "bundle demo" in out and "other" not in out and "conv2" in out
    assert "10000 (812 misclassified)" in out


def test_sample_with_image_out(run, tmp_path):
    png = tmp_path / "s.png"
    status, out, _ = run("sample", "3", "--image-out", png, "--json")
    doc = json.loads(out)
    assert status == 0 and doc["sample"]["id"] == 3 and doc["sample"]["predicted_name"] == "Coat"
    assert "image_png" not in doc["sample"] and doc["image_out"] == str(png)
    assert png.read_bytes().startswith(b"\x89PNG")
    status, out, _ = run("sample", "3")
    assert status == 0 and "sample 3" in out and "4 (Coat)" in out and "conv2" in out


def test_not_found_is_one_line_and_exit_2(run):
    status, out, err = run("sample", "99999")
    assert (status, out, err) == (2, "", "error: no sample 99999 (NOT_FOUND)\n")


@pytest.mark.parametrize(
    "code, expected_status",
    [("INVALID_ARGUMENT", 2), ("INTERNAL", 1), ("RESOURCE_EXHAUSTED", 1), ("PERMISSION_DENIED", 1)],
)
def test_server_errors_map_to_exit_statuses(run, fake, code, expected_status):
    import grpc

    fake.state.failures["GetProfile"] = [(getattr(grpc.StatusCode, code), "it went wrong")]
    status, _, err = run("profile", "--sample", "1")
    assert status == expected_status and err == f"error: it went wrong ({code})\n"


def test_connection_refused_names_the_target(run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, _, err = run("info", "--target", f"127.0.0.1:{port}")
    assert status == 1 and err.startswith(f"error: cannot reach the parasal server at 127.0.0.1:{port}: ")
    assert err.rstrip().endswith("(UNAVAILABLE)") and len(err.strip().splitlines()) == 1


def test_token_file_and_env(run, fake, tmp_path, monkeypatch):
    fake.state.token = "tok"
    status, _, err = run("info")
    assert status == 1 and "(UNAUTHENTICATED)" in err
    token_file = tmp_path / "token"
    token_file.write_text("tok\n")
    assert run("info", "--token-file", token_file)[0] == 0
    monkeypatch.setenv(cli.TOKEN_ENV, "tok")
    assert run("info")[0] == 0
    assert fake.state.calls[-1][2]["authorization"] == "Bearer tok"
    status, _, err = run("info", "--token-file", tmp_path / "missing")
    assert status == 2 and err.startswith("error: ")


def test_a_token_file_others_can_read_is_used_with_a_warning(run, fake, tmp_path, monkeypatch):
    """As ssh does for keys: the token still works, and stderr says how to protect it."""
    fake.state.token = "tok"
    token_file = tmp_path / "token"
    token_file.write_text("tok\n")
    token_file.chmod(0o644)
    status, _, err = run("info", "--token-file", token_file)
    assert (
        status == 0
        and err == f"warning: token file {token_file} is accessible by others (mode 0644); chmod 600 {token_file}\n"
    )
    monkeypatch.setenv(cli.TOKEN_FILE_ENV, str(token_file))
    status, _, err = run("info")
    assert status == 0 and "accessible by others" in err
    token_file.chmod(0o600)
    status, _, err = run("info", "--token-file", token_file)
    assert status == 0 and err == ""


def test_profile_of_an_image_and_vector_out(run, fake, tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    status, _, err = run("profile", "--image", image)
    assert status == 2 and err == "error: --image needs --label (the image's true class)\n"
    assert fake.state.calls == []
    vector = tmp_path / "v.npy"
    status, out, _ = run("profile", "--image", image, "--label", "2", "--top", "3", "--vector-out", vector)
    assert status == 0 and "96 filters" in out and "top filters" in out
    request = fake.state.requests("GetProfile")[-1]
    assert request.image.label == 2 and request.image.data == image.read_bytes() and request.top_k == 3
    assert request.include_vector and np.load(vector).shape == (96,)
    status, out, _ = run("profile", "--sample", "4", "--full", "--json")
    assert json.loads(out)["profile"]["vector"][:3] == [0.0, 0.5, 1.0]
    status, _, err = run("profile", "--image", tmp_path / "nope.png", "--label", "1")
    assert status == 2 and "nope.png" in err


def test_similar(run, fake, tmp_path):
    status, out, _ = run(
        "similar",
        "--sample",
        "7",
        "-k",
        "3",
        "--only-misclassified",
        "--include-self",
        "--layers",
        "conv1,conv2",
        "--true-labels",
        "1,2",
        "--predicted-labels",
        "4",
    )
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["rank", "id", "similarity"] and lines[2].split()[:3] == ["1", "100", "0.9000"]
    assert "confusions" in out
    request = fake.state.requests("FindSimilarFailures")[-1]
    assert request.k == 3 and request.only_misclassified and request.include_query
    assert list(request.layers) == ["conv1", "conv2"] and list(request.true_labels) == [1, 2]
    assert list(request.predicted_labels) == [4]
    vector = tmp_path / "v.npy"
    np.save(vector, np.arange(4, dtype=np.float64))
    status, out, _ = run("similar", "--vector-file", vector, "--json")
    doc = json.loads(out)
    assert status == 0 and len(doc["neighbors"]) == 10 and doc["confusions"][0]["count"] == 10
    assert list(fake.state.requests("FindSimilarFailures")[-1].vector.values) == [0, 1, 2, 3]
    assert not fake.state.requests("FindSimilarFailures")[-1].include_query
    assert not fake.state.requests("FindSimilarFailures")[-1].include_top_filters
    status, out, _ = run("similar", "--sample", "7", "-k", "2", "--top-filters")
    assert status == 0 and fake.state.requests("FindSimilarFailures")[-1].include_top_filters
    assert out.splitlines()[0].split()[-2:] == ["top", "filter"] and "conv1[3] z=4.50" in out.splitlines()[2]


def test_explain(run, fake, tmp_path):
    out_png, heat = tmp_path / "heat.png", tmp_path / "heat.npy"
    status, out, _ = run("explain", "--sample", "5", "--filters", "3,40", "--out", out_png, "--heatmap-out", heat)
    assert status == 0 and "2x3 heatmap" in out
    assert out_png.read_bytes().startswith(b"\x89PNG") and np.load(heat).shape == (2, 3)
    assert list(fake.state.requests("ExplainInput")[-1].filters) == [3, 40]
    status, out, _ = run("explain", "--sample", "5", "--out", out_png, "--json")
    assert json.loads(out)["heatmap_shape"] == [2, 3]
    assert run("explain", "--sample", "5")[0] == 2  # --out is required


def test_eval_waits_and_prints_the_table(run, fake):
    status, out, err = run(
        "eval",
        "finetune",
        "--sample",
        "3",
        "--counts",
        "1,5",
        "--selections",
        "most,least",
        "--step-size",
        "0.01",
        "--neighbors",
        "4",
    )
    assert status == 0, err
    assert "succeeded" in out and "whole network (1,234 parameters)" in out and "reference sample 3" in out
    request = fake.state.requests("StartFinetuneEvaluation")[-1]
    assert list(request.counts) == [1, 5] and request.num_neighbors == 4
    assert list(request.selections) == [pb.SELECTION_MOST_SALIENT, pb.SELECTION_LEAST_SALIENT]
    assert request.step_size == pytest.approx(0.01)
    status, out, _ = run("eval", "pruning", "--sample", "3", "--json")
    op = json.loads(out)["operation"]
    assert status == 0 and op["state"] == "succeeded" and op["result"]["rows"][0]["selection"] == "least"
    # Options left out go out unset (0 / empty): the server applies the proto's defaults.
    request = fake.state.requests("StartPruningEvaluation")[-1]
    assert request.num_neighbors == 0 and list(request.counts) == [] and list(request.selections) == []
    assert run("eval", "finetune", "--sample", "3")[0] == 0
    request = fake.state.requests("StartFinetuneEvaluation")[-1]
    assert (list(request.counts), list(request.selections), request.step_size, request.num_neighbors) == ([], [], 0, 0)
    status, _, err = run("eval", "pruning", "--sample", "3", "--selections", "best")
    assert status == 2 and "unknown selection 'best'" in err and err.endswith("(INVALID_ARGUMENT)\n")


def test_eval_no_wait_and_ops_commands(run, fake):
    status, out, _ = run("eval", "finetune", "--sample", "3", "--no-wait")
    assert status == 0 and "started finetune evaluation op-1" in out
    assert fake.state.count("WatchOperation") == 0
    status, out, _ = run("ops", "list")
    assert status == 0 and "op-1" in out and "succeeded" in out
    status, out, _ = run("ops", "list", "--json", "--state", "running")
    assert json.loads(out) == {"operations": []}
    status, out, _ = run("ops", "get", "op-1", "--json")
    assert json.loads(out)["operation"]["id"] == "op-1"
    status, out, _ = run("ops", "watch", "op-1")
    assert status == 0 and "whole network (1,234 parameters)" in out
    status, _, err = run("ops", "get", "op-9")
    assert status == 2 and err == "error: no operation op-9 (NOT_FOUND)\n"


def test_failed_operation_prints_its_error(run, fake):
    fake.state.scripts["bad"] = [
        pb.Operation(
            id="bad", state=pb.OPERATION_STATE_FAILED, error=pb.OperationError(code=13, message="worker crashed")
        )
    ]
    status, out, err = run("ops", "watch", "bad")
    assert status == 1 and "failed" in out and err == "error: worker crashed (INTERNAL)\n"
    fake.state.scripts["running"] = [pb.Operation(id="running", state=pb.OPERATION_STATE_RUNNING)]
    status, out, _ = run("ops", "cancel", "running")
    assert status == 0 and out == "operation running: cancelled\n"


# ---------------------------------------------------------------------------------------
# Engine subcommands: imported lazily, argv passed through untouched


def test_engine_commands_pass_argv_through(tmp_path, monkeypatch, capsys):
    (tmp_path / "fake_engine_cli.py").write_text(
        "import sys\nSEEN = []\ndef main(argv):\n    SEEN.append(argv)\n    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.ENGINE_COMMANDS, "index", ("fake_engine_cli", "main"))
    argv = ["--help", "-k", "5", "--json", "fashion-mnist:test"]
    assert cli.main(["index", *argv]) == 3
    assert sys.modules["fake_engine_cli"].SEEN == [argv]


def test_missing_engine_extras_give_one_clear_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "needs_torch_cli.py").write_text("import torch\ndef main(argv):\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    monkeypatch.setitem(cli.ENGINE_COMMANDS, "serve", ("needs_torch_cli", "main"))
    assert cli.main(["serve", "--port", "0"]) == 1
    assert capsys.readouterr().err == "error: `parasal serve` needs the engine extras: pip install 'parasal[engine]'\n"


def test_missing_engine_module(monkeypatch, capsys):
    monkeypatch.setitem(cli.ENGINE_COMMANDS, "demo", ("parasal.client.no_such_demo", "main"))
    assert cli.main(["demo"]) == 1
    assert "`parasal demo` is not available" in capsys.readouterr().err


def test_engine_system_exit_becomes_a_status(tmp_path, monkeypatch):
    (tmp_path / "exiting_cli.py").write_text("def main(argv):\n    raise SystemExit(0 if argv == ['--help'] else 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.ENGINE_COMMANDS, "train-demo", ("exiting_cli", "main"))
    assert cli.main(["train-demo", "--help"]) == 0
    assert cli.main(["train-demo", "--bad"]) == 2


def test_broken_pipe_is_quiet(run, monkeypatch):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    status, _, err = run("info", "--json")
    assert status == 1 and err == ""
