"""The CLI as people and scripts use it: strict JSON (results and errors), class names,
one spelling of options, help text, tables that fit, readable overlays; and the SDK's
typing surface (py.typed, annotated parameters, documented result types)."""

from __future__ import annotations

import argparse
import inspect
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import parasal.client as sdk
from parasal.client import cli
from parasal.client.types import _format_table


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as strict parsers (jq, JavaScript) do."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


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


# ---------------------------------------------------------------------------------------
# JSON


def test_not_measured_is_null_in_json_and_a_dash_in_tables(run):
    """The fake's pruning row evaluated no neighbour (the server sends NaN): null, not NaN."""
    status, out, _ = run("eval", "pruning", "--sample", "3", "--json")
    row = strict_json(out)["operation"]["result"]["rows"][0]
    assert status == 0 and row["neighbors_evaluated"] == 0
    assert row["neighbors_corrected_fraction"] is None and row["neighbors_true_confidence_delta"] is None
    assert row["true_confidence_delta"] == 0.0625
    status, out, _ = run("eval", "pruning", "--sample", "3")
    assert status == 0 and "nan" not in out.lower()


def test_json_never_writes_nan(capsys):
    cli._print_json({"a": float("nan"), "b": np.float32("inf"), "c": np.array([1.0, np.nan]), "d": 1.5})
    assert strict_json(capsys.readouterr().out) == {"a": None, "b": None, "c": [1.0, None], "d": 1.5}


def test_both_evaluations_default_to_ten_neighbours_in_help(run):
    for kind in ("finetune", "pruning"):
        _, out, _ = run("eval", kind, "--help")
        assert "(default: the server's, 10)" in " ".join(out.split())


def test_errors_under_json_are_json_on_stderr(run):
    status, out, err = run("sample", "99999", "--json")
    assert (status, out) == (2, "")
    assert strict_json(err) == {"error": {"code": "NOT_FOUND", "message": "no sample 99999"}}
    status, out, err = run("similar", "--json")  # refused by argparse: still JSON
    assert status == 2 and out == ""
    doc = strict_json(err)
    assert doc["error"]["code"] == "INVALID_ARGUMENT" and "--sample" in doc["error"]["message"]
    status, out, err = run("profile", "--image", "x.png", "--json")  # refused by the CLI
    assert status == 2 and strict_json(err)["error"]["message"] == "--image needs --label (the image's true class)"
    # Without --json: one line, as before.
    assert run("sample", "99999") == (2, "", "error: no sample 99999 (NOT_FOUND)\n")


def test_missing_token_tells_a_cli_user_to_use_token_file(run, fake, tmp_path):
    fake.state.token = "tok"
    status, _, err = run("info")
    assert status == 1 and "--token-file" in err and "metadata" not in err and err.endswith("(UNAUTHENTICATED)\n")
    status, _, err = run("info", "--json")
    assert status == 1 and "--token-file" in strict_json(err)["error"]["message"]
    wrong = tmp_path / "token"
    wrong.write_text("nope\n")
    wrong.chmod(0o600)
    status, _, err = run("info", "--token-file", wrong)
    assert status == 1 and f"refused the token from --token-file {wrong}" in err


# ---------------------------------------------------------------------------------------
# Class names, one spelling of options


def test_labels_take_class_names_case_insensitive_and_numbers(run, fake, tmp_path):
    status, _, err = run("similar", "--sample", "7", "--true-labels", "coat,1", "--predicted-labels", "T-SHIRT/TOP")
    assert status == 0, err
    request = fake.state.requests("FindSimilarFailures")[-1]
    assert list(request.true_labels) == [4, 1] and list(request.predicted_labels) == [0]
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    assert run("profile", "--image", image, "--label", "Dress")[0] == 0
    assert fake.state.requests("GetProfile")[-1].image.label == 3
    calls = fake.state.count("ListBundles")
    assert run("profile", "--image", image, "--label", "2")[0] == 0
    assert fake.state.count("ListBundles") == calls  # numbers need no IndexInfo
    status, _, err = run("similar", "--sample", "7", "--true-labels", "Shirt")
    assert status == 2 and "unknown class 'Shirt'" in err and "4:Coat" in err


def test_sample_takes_the_id_positionally_or_as_sample(run, fake):
    assert run("similar", "--sample", "3", "--neighbors", "4")[0] == 0  # as in eval
    assert fake.state.requests("FindSimilarFailures")[-1].k == 4
    assert run("sample", "--sample", "3", "--json")[0] == 0
    assert fake.state.requests("GetSample")[-1].id == 3
    assert run("sample", "4")[0] == 0 and fake.state.requests("GetSample")[-1].id == 4
    status, _, err = run("sample", "3", "--sample", "4")
    assert status == 2 and "two sample ids" in err
    assert run("sample")[0] == 2


def test_profile_and_explain_spell_top_filters_top(run, fake, tmp_path):
    assert run("profile", "--sample", "1", "--top", "3")[0] == 0
    assert fake.state.requests("GetProfile")[-1].top_k == 3
    assert run("profile", "--sample", "1", "-k", "4")[0] == 0  # the old spelling still works
    assert fake.state.requests("GetProfile")[-1].top_k == 4
    assert run("explain", "--sample", "1", "--top", "5", "--out", tmp_path / "o.png")[0] == 0
    assert fake.state.requests("ExplainInput")[-1].top_k == 5
    _, out, _ = run("profile", "--help")
    assert "--top N" in out and not re.search(r"(^|\s)-k\b", out)


def _parsers(parser: argparse.ArgumentParser, path=("parasal",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if name not in cli.ENGINE_COMMANDS:  # their own parsers document themselves
                    yield from _parsers(child, (*path, name))


def test_every_option_has_help_and_no_help_shows_raw_backticks():
    missing = []
    for path, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.help is None:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
        text = parser.format_help()
        assert "`" not in text, f"{' '.join(path)} --help shows backticks"
    assert missing == []


# ---------------------------------------------------------------------------------------
# Tables and overlays


def test_tables_fold_long_paths_to_the_width_and_keep_numbers_right_aligned():
    uri = "/data/" + "very-long-directory-name/" * 6 + "0001.png"
    text = _format_table(["rank", "id", "similarity", "uri"], [[1, 100, 0.9, uri], [2, 7, 0.5, "x"]], width=60)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 60
    assert "".join(line[lines[0].index("uri") :].strip() for line in lines[2:-1]) == uri
    assert lines[0].split() == ["rank", "id", "similarity", "uri"] and lines[2].split()[:3] == ["1", "100", "0.9000"]
    assert lines[-1].rstrip().endswith("x") and lines[-1].index("7") == lines[2].index("100") + 2
    # Without a width (not a terminal), every row stays on one line.
    assert len(_format_table(["uri"], [[uri]]).splitlines()) == 3


def test_explain_writes_a_readable_overlay_the_original_image_size_times_scale(run, tmp_path):
    out = tmp_path / "o.png"
    status, text, _ = run("explain", "--sample", "5", "--out", out)  # the fake's overlay is 3x2
    assert status == 0 and Image.open(out).size == (258, 172) and "enlarged 86x" in text
    status, text, _ = run("explain", "--sample", "5", "--out", out, "--scale", "2", "--json")
    assert status == 0 and Image.open(out).size == (6, 4) and strict_json(text)["overlay_size"] == [6, 4]
    pixels = np.asarray(Image.open(out))
    assert (pixels[0:2, 0:2] == pixels[0, 0]).all()  # nearest neighbour: pixels stay squares


def test_explanation_overlay_scales_like_the_cli():
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 7).save(buffer, format="PNG")
    explanation = sdk.Explanation(np.zeros((32, 32), np.float32), buffer.getvalue(), [], 0, 0)
    assert Image.open(io.BytesIO(explanation.overlay())).size == (280, 280)
    assert explanation.overlay(1) == buffer.getvalue()


# ---------------------------------------------------------------------------------------
# SDK typing surface


def test_sdk_is_typed_and_documented():
    assert (Path(sdk.__file__).parent / "py.typed").is_file()
    unannotated = []
    for name, method in inspect.getmembers(sdk.Client, inspect.isfunction):
        if name.startswith("_") and name != "__init__":
            continue
        for param in list(inspect.signature(method).parameters.values())[1:]:
            if param.annotation is inspect.Parameter.empty and param.kind is not param.VAR_POSITIONAL:
                unannotated.append(f"{name}({param.name})")
    assert unannotated == []
    # A dataclass without a docstring gets its signature as __doc__: "Sample(id: int, ...)".
    results = [getattr(sdk, n) for n in sdk.__all__ if n in sdk.types.__all__]
    undocumented = [c.__name__ for c in results if (c.__doc__ or c.__name__ + "(").startswith(c.__name__ + "(")]
    assert undocumented == []


def test_evaluation_docstrings_cite_the_papers_sections():
    assert "section 3.3" in sdk.Client.start_finetune_evaluation.__doc__
    assert "section 3.1" in sdk.Client.start_pruning_evaluation.__doc__
    assert "num_neighbors 10" in sdk.Client.start_pruning_evaluation.__doc__
