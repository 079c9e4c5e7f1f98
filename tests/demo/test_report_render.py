"""The report's renderer and its beta metrics, without a server: hand-built content in,
a page that parses, escapes and links only files that exist out; metrics against oracles."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image
from report_checks import check_report_dir

from parasal.demo.collect import flat_rows
from parasal.demo.metrics import MIN_CLASS_SIZE, SCORES, beta_summary, neighbor_agreement
from parasal.demo.report import (
    DeviationView,
    ExemplarView,
    ModesView,
    ModeView,
    NeighborView,
    QueryView,
    ReportContent,
    SurpriseView,
    write_report,
)

EVIL = "<script>alert('x')</script>"


def png(value: int = 128, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def content(**changes) -> ReportContent:
    base = dict(
        title="report of <b>m</b>",
        summary={"model": "m <i>", "samples indexed": 3},
        class_names=[],
        layers=[("conv", 4, 0)],
        queries=[],
        dataset_confusions=[],
        neighbors=None,
        beta=None,
        notes={},
    )
    return ReportContent(**{**base, **changes})


def deviation(filt: int, deviation: float, *, detailed: bool) -> DeviationView:
    exemplars = [
        ExemplarView(id=100 + k, label=k % 2, activation=0.5 - k / 10, image_png=png(40 * k)) for k in range(3)
    ]
    return DeviationView(
        layer="conv",
        filter=filt,
        alpha=0.2,
        mean=0.2 - deviation,
        threshold=0.1,
        deviation=deviation,
        region_png=png(200) if detailed else None,
        exemplars=exemplars if detailed else [],
    )


def query(sid: int = 7) -> QueryView:
    return QueryView(
        id=sid,
        label=0,
        predicted=1,
        true_confidence=0.2,
        predicted_confidence=0.7,
        image_png=png(),
        overlay_png=png(90),
        profile=np.linspace(-1, 3, 4, dtype=np.float32),
        top_filters=[("conv", 3, 3.0)],
        neighbors=[NeighborView(id=9, similarity=0.9, label=0, predicted=1, image_png=png(30))],
        confusions=[(0, 1, 1)],
        finetune_rows=[{"selection": "most_salient", "count": 1, "reference_corrected": True, "x": None}],
        surprise=SurpriseView(
            beta=-0.0123,
            layer="conv",
            method="grad_amap",
            high_percentile=99.9,
            low_percentile=0.1,
            surprise=[deviation(2, 0.3, detailed=True), deviation(0, 0.1, detailed=False)],
            expectation=[],
        ),
        notes=["The pruning evaluation was not run: too few filters (INVALID_ARGUMENT)."],
    )


def test_an_empty_bundle_gets_a_note_for_every_section_left_out(tmp_path):
    notes = {
        "classes": "The bundle has no class names; classes are shown by number.",
        "queries": "No misclassified samples: there is no failure to investigate.",
        "neighbors": "Needs more than 10 samples; the bundle has 3.",
        "beta": "The bundle has no reference data, so β ... are left out.",
        "modes": "No failure modes: too few.",
    }
    page, metrics, raw = check_report_dir(write_report(tmp_path, content(notes=notes)).parent)
    for note in notes.values():
        assert note in page.all_text
    assert "No misclassified samples: there are no confusions to list." in page.all_text
    assert metrics == {"beta": None, "failure_modes": None}
    assert page.images == []
    assert "<b>" not in raw and "&lt;b&gt;m&lt;/b&gt;" in raw  # the title is text too


def test_class_names_and_every_other_value_render_as_text(tmp_path):
    c = content(class_names=[EVIL, "T-shirt & top"], queries=[query()], dataset_confusions=[(0, 1, 5)])
    page, _, raw = check_report_dir(write_report(tmp_path, c).parent)
    assert "script" not in page.tags and "i" not in page.tags
    assert EVIL in page.all_text and "T-shirt & top" in page.all_text
    assert "&lt;script&gt;" in raw and "T-shirt &amp; top" in raw


def test_failure_modes_show_their_confusions_filters_and_medoids(tmp_path):
    modes = ModesView(
        method="agglomerative-cosine, k=2 by silhouette",
        silhouette=0.41,
        num_misclassified=9,
        modes=[
            ModeView(0, 6, 0.8, [(0, 1, 4), (1, 0, 2)], [("conv", 2, 4.5)], [(11, png(10)), (12, png(20))]),
            ModeView(1, 3, 0.7, [(1, 0, 3)], [("conv", 0, 2.0)], [(13, png(30))]),
        ],
    )
    c = content(class_names=[EVIL, "T-shirt & top"], modes=modes)
    page, metrics, _ = check_report_dir(write_report(tmp_path, c).parent)
    assert "Failure modes" in page.heading_texts("h3")
    assert [i for i in page.images if i.startswith("mode-")] == [
        "mode-0-medoid-11.png",
        "mode-0-medoid-12.png",
        "mode-1-medoid-13.png",
    ]
    assert f"{EVIL} → T-shirt & top: 4" in page.all_text and "script" not in page.tags
    assert "conv / 2 (z 4.5)" in page.all_text and "silhouette 0.410" in page.all_text
    assert metrics["failure_modes"]["modes"][1] == {
        "id": 1,
        "size": 3,
        "cohesion": 0.7,
        "confusions": [[1, 0, 3]],
        "medoid_ids": [13],
    }


def test_a_query_shows_its_surprise_filters_with_region_and_exemplar_strip(tmp_path):
    page, _, _ = check_report_dir(write_report(tmp_path, content(queries=[query()])).parent)
    assert "Surprise and expectation (β = -0.0123)" in page.heading_texts("h3")
    assert "P(99.9)" in page.all_text and "P(0.1)" in page.all_text
    assert "Surprise filters (2)" in page.heading_texts("h4")
    assert "Expectation filters (0)" in page.heading_texts("h4")
    assert "None at these thresholds." in page.all_text
    # the detailed filter: its region on this image, then its three exemplars (named per filter)
    assert "sample-7-surprise-f2-region.png" in page.images
    assert [i for i in page.images if i.startswith("exemplar-")] == [f"exemplar-f2-{100 + k}.png" for k in range(3)]
    assert "ref #101 1" in page.all_text  # exemplar id and label (no class names: the number)
    # the undetailed filter is in the table only
    assert not any("f0" in i for i in page.images)
    assert {"sample-7.png", "sample-7-heat.png", "sample-7-profile.png", "sample-7-nn-9.png"} <= set(page.images)
    assert "The pruning evaluation was not run" in page.all_text
    assert "Fine-tuning evaluation (one normalised step on the reference)" in page.heading_texts("h3")


def _ranks(x):
    """Average ranks, 1-based, by sorting: the textbook definition."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _spearman(x, y):
    rx, ry = _ranks(list(x)), _ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def test_beta_summary_against_plain_loops():
    rng = np.random.default_rng(0)
    n = 300
    labels = rng.integers(0, 4, n)
    labels[:2] = 4  # a class with 2 samples: no per-class rho for it
    correct = rng.random(n) < 0.7
    beta = rng.normal(0, 1, n).round(2)  # ties
    beta[~correct] -= 0.8
    pre = beta * 3 + rng.normal(0, 0.5, n)
    post = 1 / (1 + np.exp(-pre)) + rng.normal(0, 0.05, n)
    got = beta_summary(beta, labels, correct, scores={"pre_softmax": pre, "post_softmax": post}, bins=20)

    for group, mask in (("correct", correct), ("misclassified", ~correct)):
        values = [b for b, m in zip(beta, mask) if m]
        assert got[group]["count"] == len(values)
        assert got[group]["share_negative"] == pytest.approx(sum(v < 0 for v in values) / len(values))
        assert got[group]["median"] == pytest.approx(float(np.median(values)))
        assert sum(got["histogram"][group]) == len(values)
    assert got["misclassified"]["share_negative"] > got["correct"]["share_negative"]  # planted
    assert len(got["histogram"]["edges"]) == 21

    for key, score in (("pre_softmax", pre), ("post_softmax", post)):
        s = got["spearman"][key]
        assert s["pooled"] == pytest.approx(_spearman(beta, score))
        per_class = [
            _spearman(beta[labels == c], score[labels == c])
            for c in sorted(set(labels))
            if (labels == c).sum() >= MIN_CLASS_SIZE
        ]
        assert s["classes"] == len(per_class) == 4
        assert s["mean_over_classes"] == pytest.approx(sum(per_class) / len(per_class))
    small = [r for r in got["spearman"]["per_class"] if r["label"] == 4]
    assert small == [{"label": 4, "count": 2, **dict.fromkeys(SCORES)}]
    assert got["spearman"]["pre_softmax_predicted"] is None  # not given: not measured


def test_beta_summary_without_scores_or_failures_says_not_measured():
    beta = np.array([0.1, -0.2, 0.3, 0.0])
    got = beta_summary(beta, np.zeros(4, int), np.ones(4, bool))
    assert all(got["spearman"][key] is None for key in SCORES)
    with pytest.raises(ValueError, match="unknown score"):
        beta_summary(beta, np.zeros(4, int), np.ones(4, bool), scores={"logit": beta})
    assert got["misclassified"] == {"count": 0, "share_negative": None, "median": None}
    assert got["correct"]["share_negative"] == 0.25


def test_neighbor_agreement_is_unchanged_by_the_report_rewrite():
    """The demo's metric, pinned on a case worked by hand: 4 points on a line of 2 clusters."""
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    labels, predicted = np.array([0, 0, 1, 1]), np.array([1, 1, 1, 1])  # the first cluster fails
    m = neighbor_agreement(x, labels, predicted, k=1)
    assert m["misclassified"] == {"count": 2, "neighbors_misclassified": 1.0, "neighbors_same_confusion_pair": 1.0}
    assert m["correct"] == {"count": 2, "neighbors_correct": 1.0}


def test_samples_without_beta_are_counted_and_left_out():
    """beta is NaN where a class had no reference samples: counted, never a NaN in the JSON."""
    beta = np.array([0.1, np.nan, -0.3, -0.2, np.nan, 0.4])
    labels = np.array([0, 1, 0, 0, 1, 0])
    correct = np.array([True, False, False, True, True, True])
    got = beta_summary(beta, labels, correct, scores={"post_softmax": np.array([0.9, 0.1, 0.2, 0.6, 0.5, 0.95])})
    assert got["without_beta"] == 2 and got["count"] == 4
    assert got["misclassified"]["count"] == 1 and got["misclassified"]["share_negative"] == 1.0
    assert got["spearman"]["post_softmax"]["pooled"] == pytest.approx(
        _spearman([0.1, -0.3, -0.2, 0.4], [0.9, 0.2, 0.6, 0.95])
    )
    json.dumps(got, allow_nan=False)


def test_evaluation_rows_flatten_into_one_set_of_columns():
    rows = [
        {
            "selection": "most",
            "count": 2,
            "filters": (3, 9),
            "collateral": {"evaluated": 10, "flips": 1},
            "spread": None,
        },
        {"selection": "random", "count": 7, "filters": tuple(range(7)), "collateral": None, "spread": {"draws": 5}},
    ]
    flat = flat_rows(rows)
    assert flat == [
        {
            "selection": "most",
            "count": 2,
            "filters": "3, 9",
            "collateral_evaluated": 10,
            "collateral_flips": 1,
            "spread_draws": None,
        },
        {
            "selection": "random",
            "count": 7,
            "filters": "0, 1, 2, 3, 4, … (7)",
            "collateral_evaluated": None,
            "collateral_flips": None,
            "spread_draws": 5,
        },
    ]


class AllCorrectServer:
    """A stand-in for the SDK over a bundle where every sample is right and beta is known
    for some: the report must ask nothing per sample and leave those sections out."""

    def __init__(self, with_reference: bool):
        from parasal.client import BundleInfo, Layer, ReferenceDataInfo, Sample

        reference = ReferenceDataInfo("train", 50, "conv", "grad_amap", 4, 6) if with_reference else None
        self.info = BundleInfo(
            "b",
            "tiny",
            "f" * 64,
            "imgs",
            12,
            0,
            4,
            [Layer("conv", "conv", 4, 0)],
            "Flat",
            [],
            None,
            (1, 8, 8),
            reference,
        )
        self.rows = [
            Sample(i, f"{i}.png", i % 3, i % 3, True, 0.9, 0.9, 0.1, [], beta=(0.01 * i - 0.05) if i < 10 else None)
            for i in range(12)
        ]

    def index_info(self, bundle=""):
        return [self.info]

    def samples(self, bundle="", page_size=None):
        return iter(self.rows)

    def failure_modes(self, bundle="", **options):
        from parasal.client import FailedPrecondition

        raise FailedPrecondition("bundle b has 0 misclassified samples; failure modes need at least 4")


@pytest.mark.parametrize("with_reference", [False, True])
def test_a_bundle_without_failures_or_class_names_gets_notes_not_errors(tmp_path, with_reference):
    from parasal.demo.collect import ReportOptions, gather_report

    content = gather_report(AllCorrectServer(with_reference), ReportOptions(progress=False))
    assert content.queries == [] and content.dataset_confusions == []
    assert content.notes["queries"].startswith("No misclassified samples")
    assert content.notes["classes"].startswith("The bundle has no class names")
    assert "pass --bundle DIR" in content.notes["neighbors"]
    if with_reference:
        assert content.beta["count"] == 10 and content.beta["without_beta"] == 2
        assert content.beta["misclassified"]["share_negative"] is None
        assert content.beta["correct"]["share_negative"] == 0.5
        assert content.beta["spearman"]["pre_softmax"] is None  # needs the model
        assert content.summary["reference data"] == "train (50 samples; grad_amap on conv)"
    else:
        assert content.beta is None and "has no reference data" in content.notes["beta"]
    page, metrics, _ = check_report_dir(write_report(tmp_path, content).parent)
    assert "No misclassified samples: there is no failure to investigate." in page.all_text
    assert "No failure modes: bundle b has 0 misclassified samples; failure modes need at least 4" in page.all_text
    assert (metrics["beta"] is None) is not with_reference and metrics["failure_modes"] is None
