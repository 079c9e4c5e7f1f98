"""`parasal demo` end to end on a 1,000-image subset: real indexer, real server process, SDK, report."""

import json
import re
import shutil

import numpy as np
import pytest
from report_checks import check_report_dir

from parasal.demo.collect import ReportOptions
from parasal.demo.metrics import neighbor_agreement
from parasal.demo.run import DEMO_MARKER, DemoError, DemoOptions, run_demo
from parasal.indexer.bundle import open_bundle

pytestmark = pytest.mark.slow  # real server processes / real bundles: part of make test

#: The demo's reference data, on a stratified sample of the training split (the full split
#: is what `make demo` uses; 1,000 keeps this test within its time).
REFERENCE_LIMIT = 1000


def options(limit: int, bundle_dir, report_dir, queries: int, evaluations: bool = True) -> DemoOptions:
    return DemoOptions(
        limit=limit,
        reference_limit=REFERENCE_LIMIT,
        bundle_dir=bundle_dir,
        report_dir=report_dir,
        report=ReportOptions(queries=queries, evaluations=evaluations, progress=False),
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    opts = options(1000, root / "bundle", root / "report", queries=2)
    content = run_demo(opts)
    return opts, content.summary


def test_report_has_every_section(demo):
    opts, summary = demo
    page = (opts.report_dir / "index.html").read_text()
    assert summary["samples indexed"] == 1000
    for heading in (
        "Dataset",
        "Most frequent confusions",
        "Neighbor agreement",
        "Top salient filters",
        "10 nearest failures",
        "Fine-tuning evaluation",
        "Pruning evaluation",
    ):
        assert heading in page, heading
    queried = re.findall(r"<h2>Sample (\d+):", page)
    assert len(queried) == 2
    for sid in queried:
        for suffix in ("", "-heat", "-profile"):
            png = opts.report_dir / f"sample-{sid}{suffix}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        neighbors = list(opts.report_dir.glob(f"sample-{sid}-nn-*.png"))
        assert len(neighbors) == 10
    # the page parses; every <img> on it points at a PNG that exists
    parsed, metrics, _ = check_report_dir(opts.report_dir)
    assert len(parsed.images) >= 2 * 13
    # the reference data (training split) gives the surprise and beta sections (Hartley et al.)
    assert sum(h.startswith("Surprise and expectation (β = ") for h in parsed.heading_texts("h3")) == 2
    assert "beta-histogram.png" in parsed.images and metrics["beta"]["count"] == 1000
    assert summary["reference data"].startswith(f"fashion-mnist:train ({REFERENCE_LIMIT} samples; grad_amap on ")
    # the evaluation tables have one row per selection x count plus the whole network
    assert page.count("whole_network") >= 1


def test_metrics_are_shares_computed_from_the_bundle(demo):
    opts, _ = demo
    metrics = json.loads((opts.report_dir / "metrics.json").read_text())
    for space in ("saliency", "penultimate"):
        m = metrics[space]
        values = [
            m["misclassified"]["neighbors_misclassified"],
            m["misclassified"]["neighbors_same_confusion_pair"],
            m["correct"]["neighbors_correct"],
        ]
        assert all(0.0 <= v <= 1.0 for v in values), values
        assert m["misclassified"]["count"] + m["correct"]["count"] == 1000
    with open_bundle(opts.bundle_dir) as bundle:
        ids = [int(i) for i in bundle.ids]
        profiles = bundle.profiles(ids).astype(np.float32)
        labels, predicted = np.asarray(bundle.labels), np.asarray(bundle.predicted)
    assert neighbor_agreement(profiles, labels, predicted, 10) == metrics["saliency"]
    # the numbers come from the data: other profiles give other numbers
    shuffled = profiles[np.random.default_rng(0).permutation(len(profiles))]
    assert neighbor_agreement(shuffled, labels, predicted, 10) != metrics["saliency"]
    # samples close in saliency space fail alike far more often than the base rate
    base_rate = float((labels != predicted).mean())
    assert metrics["saliency"]["misclassified"]["neighbors_misclassified"] > 2 * base_rate


def test_second_run_reuses_the_bundle_and_a_changed_bundle_changes_the_metrics(demo, capsys):
    opts, _ = demo
    before = json.loads((opts.report_dir / "metrics.json").read_text())
    manifest = (opts.bundle_dir / "CURRENT").read_text()
    run_demo(options(1000, opts.bundle_dir, opts.report_dir, queries=1, evaluations=False))
    assert "Reusing bundle" in capsys.readouterr().out
    assert (opts.bundle_dir / "CURRENT").read_text() == manifest
    run_demo(options(600, opts.bundle_dir, opts.report_dir, queries=1, evaluations=False))
    after = json.loads((opts.report_dir / "metrics.json").read_text())
    assert after["saliency"]["misclassified"]["count"] + after["saliency"]["correct"]["count"] == 600
    assert after != before


def test_a_bundle_the_demo_did_not_build_is_refused_not_deleted(demo, tmp_path):
    """A user pointing --bundle-dir at their own bundle (here: the demo's bundle copied without
    the demo's marker) or at any other directory gets a clear refusal; nothing is touched."""
    opts, _ = demo
    users = tmp_path / "users-bundle"
    shutil.copytree(opts.bundle_dir, users)
    (users / DEMO_MARKER).unlink()
    before = sorted(str(p.relative_to(users)) for p in users.rglob("*"))
    with pytest.raises(DemoError, match="not built by the demo"):
        run_demo(options(123, users, tmp_path / "report", queries=1))
    assert sorted(str(p.relative_to(users)) for p in users.rglob("*")) == before

    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(DemoError, match="refusing to replace it"):
        run_demo(options(123, other, tmp_path / "report", queries=1))
    assert (other / "todo.txt").read_text() == "mine"
