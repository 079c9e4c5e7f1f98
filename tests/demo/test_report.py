"""`parasal report` on bundles that are not the demo's: a tiny net on an image folder whose
class names need escaping, over a child server (--bundle) and a running one (--server)."""

from __future__ import annotations

import json
import re

import indexer_helpers as H
import numpy as np
import pytest
from report_checks import check_report_dir

from parasal.client import Client
from parasal.demo import report_cli
from parasal.demo.metrics import SCORES, beta_summary, neighbor_agreement
from parasal.demo.serving import serve_bundle
from parasal.indexer import IndexJob, open_bundle, run_index

pytestmark = pytest.mark.slow  # indexes a bundle and starts real server processes

#: Sorted folder names are the class names: one is markup, one has an ampersand.
CLASSES = ("<script>", "a&b", "plain")
GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """36 striped images indexed with the random-weight tiny net: many failures, 18 filters."""
    tmp = tmp_path_factory.mktemp("report")
    data = H.make_image_folder(tmp / "imgs", per_class=12, classes=CLASSES)
    out = tmp / "bundle"
    run_index(IndexJob(data=str(data), out=out, model=H.FACTORY, preprocessing=GRAY, progress=False))
    return out


@pytest.fixture
def helpers_env(monkeypatch):
    """The child server resolves the model spec ``indexer_helpers:tiny_net`` like this process."""
    monkeypatch.setenv("PYTHONPATH", H.env_with_helpers()["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_report_over_a_bundle_directory(tiny_bundle, tmp_path, helpers_env, capsys):
    out = tmp_path / "report"
    rc = report_cli.main(["--bundle", str(tiny_bundle), "--out", str(out), "--queries", "2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    page, metrics, raw = check_report_dir(out)

    assert "Dataset" in page.heading_texts("h2")
    for heading in ("Most frequent confusions", "Neighbor agreement (10 nearest, excluding self)"):
        assert heading in page.heading_texts("h3"), page.headings
    queried = [int(m.group(1)) for h in page.heading_texts("h2") if (m := re.match(r"Sample (\d+):", h))]
    assert len(queried) == 2
    for sid in queried:
        for suffix in ("", "-heat", "-profile"):
            assert f"sample-{sid}{suffix}.png" in page.images
    assert "Failure modes" in page.heading_texts("h3")
    assert any(i.startswith("mode-0-medoid-") for i in page.images)
    assert any(h.startswith("Fine-tuning evaluation") for h in page.heading_texts("h3"))
    assert any(h.startswith("Pruning evaluation") for h in page.heading_texts("h3"))

    # A class name is text wherever it appears (tables, headings, captions): never markup.
    assert "script" not in page.tags
    assert "&lt;script&gt;" in raw and "a&amp;b" in raw
    assert "<script>" in page.all_text and "a&b" in page.all_text

    # No reference data: the beta section is one note, and metrics.json says "not measured".
    assert "has no reference data" in page.all_text and "--reference-data" in page.all_text
    assert metrics["beta"] is None
    assert not any(h.startswith("Surprise and expectation") for h in page.heading_texts())

    # The neighbour metrics are the oracle's, computed here from the bundle itself.
    with open_bundle(tiny_bundle) as b:
        ids = [int(i) for i in b.ids]
        profiles = b.profiles(ids).astype(np.float32)
        labels, predicted = np.asarray(b.labels), np.asarray(b.predicted)
        assert {int(b.labels[b.row_of(s)]) for s in queried} <= set(range(len(CLASSES)))
        assert all(b.meta(s).label != b.meta(s).predicted for s in queried)  # only failures are queried
    assert metrics["saliency"] == neighbor_agreement(profiles, labels, predicted, 10)
    assert metrics["penultimate"]["misclassified"]["count"] == int((labels != predicted).sum())


def test_report_over_a_running_server_leaves_out_what_needs_the_bundle(tiny_bundle, tmp_path, helpers_env, capsys):
    out = tmp_path / "report"
    other = tmp_path / "other"
    data = H.make_image_folder(tmp_path / "imgs", per_class=4, classes=CLASSES)
    run_index(IndexJob(data=str(data), out=other, model=H.FACTORY, preprocessing=GRAY, progress=False))
    with serve_bundle(tiny_bundle, tmp_path / "server.log", quiet=True) as target:
        rc = report_cli.main(["--server", target, "--out", str(out), "--queries", "1", "--no-evaluations", "--json"])
        captured = capsys.readouterr()
        with Client(target) as client:
            served_modes = client.failure_modes(medoids=5, top_filters=3)
        # --server with the bundle's directory: the dataset figures come back (no model pass on the server)
        both = ["--server", target, "--bundle", str(tiny_bundle), "--out", str(tmp_path / "both"), "--queries", "0"]
        assert report_cli.main([*both, "--no-progress"]) == 0, capsys.readouterr().err
        assert json.loads((tmp_path / "both" / "metrics.json").read_text())["saliency"]["k"] == 10
        assert "No samples investigated (--queries 0)." in (tmp_path / "both" / "index.html").read_text()
        # ... but not with another bundle's directory: the figures would mix two bundles
        mixed = ["--server", target, "--bundle", str(other), "--out", str(tmp_path / "mixed"), "--no-progress"]
        assert report_cli.main(mixed) == 2
        assert "is not the bundle at" in capsys.readouterr().err
        assert not (tmp_path / "mixed" / "index.html").exists()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["report"].endswith("index.html") and doc["summary"]["samples indexed"] == 36
    page, metrics, _ = check_report_dir(out)
    assert len([h for h in page.heading_texts("h2") if h.startswith("Sample ")]) == 1
    assert "pass --bundle DIR" in page.all_text  # neighbour agreement needs every profile
    assert set(metrics) == {"beta", "failure_modes"} and metrics["beta"] is None
    assert not any(h.startswith("Fine-tuning") for h in page.heading_texts())
    # the failure modes are the server's, as its SDK answers them
    modes = metrics["failure_modes"]
    assert modes["method"] == served_modes.method and modes["num_misclassified"] == 24
    assert [(m["id"], m["size"]) for m in modes["modes"]] == [(m.id, m.size) for m in served_modes]
    assert [m["medoid_ids"] for m in modes["modes"]] == [[int(i) for i in m.medoid_ids] for m in served_modes]
    assert sum(m["size"] for m in modes["modes"]) + served_modes.num_unassigned == 24
    for m in modes["modes"]:
        assert all(f"mode-{m['id']}-medoid-{sid}.png" in page.images for sid in m["medoid_ids"])


def test_bad_invocations_are_one_line_or_one_json_document(tiny_bundle, tmp_path, capsys):
    assert report_cli.main(["--out", str(tmp_path / "r")]) == 2
    assert "give --bundle DIR or --server" in capsys.readouterr().err

    assert report_cli.main(["--bundle", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("parasal report: error:"), err

    rc = report_cli.main(["--server", f"127.0.0.1:{H.free_port()}", "--out", str(tmp_path / "r"), "--json"])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    error = json.loads(captured.err)["error"]
    assert error["code"] == "UNAVAILABLE" and "cannot reach the parasal server" in error["message"]
    assert not (tmp_path / "r" / "index.html").exists()

    assert report_cli.main(["--bundle", str(tiny_bundle), "--queries", "many", "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.err)["error"]["code"] == "INVALID_ARGUMENT" and captured.out == ""


@pytest.fixture(scope="module")
def reference_bundle(tmp_path_factory):
    """The first 300 Fashion-MNIST test images, reference statistics over 600 training images."""
    return H.build_reference_bundle(tmp_path_factory.mktemp("ref") / "bundle", limit=300, reference_limit=600)


def class_logits(bundle) -> tuple[np.ndarray, np.ndarray]:
    """(N,) the true and the predicted class's pre-softmax scores, one image at a time: the
    oracle for the report's batched model pass (checked against the bundle's stored confidences)."""
    import torch

    loaded = bundle.load_model()
    model = loaded.model.eval()
    true, predicted = [], []
    with torch.no_grad():
        for sid, label in zip(bundle.ids, bundle.labels):
            logits = model(loaded.preprocessing(bundle.load_image(int(sid)))[None])[0]
            meta = bundle.meta(int(sid))
            assert float(torch.softmax(logits, 0)[label]) == pytest.approx(meta.true_confidence, abs=1e-4)
            assert int(logits.argmax()) == meta.predicted
            true.append(float(logits[label]))
            predicted.append(float(logits[meta.predicted]))
    return np.array(true), np.array(predicted)


@pytest.mark.fashion_mnist
def test_report_with_reference_data_has_beta_and_surprise_sections(reference_bundle, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["--bundle", str(reference_bundle), "--out", str(out), "--queries", "2", "--no-evaluations", "--no-progress"]
    assert report_cli.main(args) == 0, capsys.readouterr().err
    page, metrics, _ = check_report_dir(out)

    # Dataset: the beta distribution of correct vs misclassified and its Spearman figures.
    assert "β: how far a sample's filters sit from its class's reference means" in page.heading_texts("h3")
    assert "beta-histogram.png" in page.images
    assert "86.6% of misclassified vs 45.9% of correct" in page.all_text  # the paper's figure, beside ours
    with open_bundle(reference_bundle) as b:
        labels, correct = np.asarray(b.labels), np.asarray(b.correct)
        beta = np.asarray(b.beta, dtype=np.float64)
        metas = b.metas([int(i) for i in b.ids])
        scores = {
            "post_softmax": np.array([m.true_confidence for m in metas]),
            "post_softmax_predicted": np.array([m.predicted_confidence for m in metas]),
        }
        scores["pre_softmax"], scores["pre_softmax_predicted"] = class_logits(b)
        queried = [int(m.group(1)) for h in page.heading_texts("h2") if (m := re.match(r"Sample (\d+):", h))]
        query_betas = {s: float(b.beta[b.row_of(s)]) for s in queried}
    expected = beta_summary(beta, labels, correct, scores=scores)
    got = metrics["beta"]
    for group in ("correct", "misclassified"):
        assert got[group] == pytest.approx(expected[group])
        share = float((beta[correct if group == "correct" else ~correct] < 0).mean())
        assert got[group]["share_negative"] == pytest.approx(share)
        assert f"{100 * share:.1f}%" in page.all_text
    for key in SCORES:
        assert got["spearman"][key]["pooled"] == pytest.approx(expected["spearman"][key]["pooled"], abs=1e-6)
        assert got["spearman"][key]["mean_over_classes"] == pytest.approx(
            expected["spearman"][key]["mean_over_classes"], abs=1e-6
        )

    # Per query: beta (the bundle's), the surprise / expectation tables, regions and exemplar strips.
    assert len(queried) == 2
    for sid in queried:
        assert f"Surprise and expectation (β = {query_betas[sid]:+.3g})" in page.heading_texts("h3")
    assert any(i.endswith("-region.png") for i in page.images)
    assert any(i.startswith("exemplar-") for i in page.images)
    assert "has no reference data" not in page.all_text
