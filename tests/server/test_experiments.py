"""The experiments' machinery: bootstrap CIs against known answers, options, seeded sampling,
per-reference seeds, the fast paths against slow oracles, cancel, the proto conversion and
the results page's verdict rules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from parasal.core import Cancelled
from parasal.server.errors import FailedPrecondition, InvalidArgument
from parasal.server.experiments import NAMES, ExperimentOutput, Point, check_request, experiment_module
from parasal.server.experiments._common import (
    Option,
    Steps,
    bootstrap_ci,
    clean,
    mixed_seed,
    parse_options,
    point,
    sample_ids,
)

# -- bootstrap CIs -------------------------------------------------------------------------


def test_constant_values_give_a_zero_width_interval():
    assert bootstrap_ci([0.25] * 40, 0) == (0.25, 0.25, 0.25, 40)


def test_the_interval_covers_a_known_normal_mean_with_the_expected_width():
    x = np.random.default_rng(1).normal(3.0, 1.0, size=400)
    mean, low, high, n = bootstrap_ci(x, 0)
    assert n == 400 and low < 3.0 < high
    # The normal-theory 95 % width, 2 · 1.96 · σ/√n = 0.196, within bootstrap noise.
    assert 0.16 < high - low < 0.23
    assert mean == pytest.approx(x.mean())


def test_the_interval_of_a_proportion_matches_the_normal_approximation():
    x = np.r_[np.ones(30), np.zeros(70)]  # p = 0.3, n = 100: ±1.96·√(0.21/100) = ±0.0898
    _, low, high, _ = bootstrap_ci(x, 0)
    assert low == pytest.approx(0.3 - 0.0898, abs=0.03) and high == pytest.approx(0.3 + 0.0898, abs=0.03)


def test_nan_values_are_left_out_and_one_value_has_no_interval():
    assert bootstrap_ci([np.nan, 2.0], 0) == (2.0, None, None, 1)
    assert bootstrap_ci([], 0) == (None, None, None, 0)


def test_intervals_are_seeded_per_point():
    x = np.random.default_rng(2).normal(size=50)
    assert bootstrap_ci(x, 0, "a") == bootstrap_ci(x, 0, "a")
    assert bootstrap_ci(x, 0, "a") != bootstrap_ci(x, 0, "b")


def test_points_are_json_safe():
    p = point("most", 5, "m", [1.0, np.nan, 3.0], 0, extra_field=np.float32(0.5))
    d = p.to_dict()
    assert d["n"] == 2 and d["extra_field"] == 0.5
    json.dumps(d, allow_nan=False)
    assert clean({"a": float("nan"), "b": [np.int64(3), float("inf")]}) == {"a": None, "b": [3, None]}


# -- options ---------------------------------------------------------------------------------

SPEC = {"k": Option("int", 10, "", 1, 100), "counts": Option("ints", (), "", 1, 50), "x": Option("float", 0.5, "")}


def test_options_fill_defaults_and_parse_values():
    assert parse_options("e", SPEC, {"k": "3", "counts": "1,2,5"}) == {"k": 3, "counts": (1, 2, 5), "x": 0.5}


@pytest.mark.parametrize(
    "given",
    [{"nope": "1"}, {"k": "ten"}, {"k": "0"}, {"k": "101"}, {"counts": ""}, {"counts": "1,99"}, {"x": "nan"}],
)
def test_bad_options_are_invalid_arguments(given):
    with pytest.raises(InvalidArgument):
        parse_options("e", SPEC, given)


def test_every_experiment_refuses_an_unknown_option_and_name():
    for name in NAMES:
        with pytest.raises(InvalidArgument, match="no option"):
            check_request(name, None, {"definitely_not_an_option": "1"})
    with pytest.raises(InvalidArgument, match="unknown experiment"):
        experiment_module("bogus")


# -- sampling and seeds -------------------------------------------------------------------------


def test_references_are_sampled_with_the_seed():
    ids = np.arange(1000, 1100)
    a, b = sample_ids(ids, 10, 50, 7, "x"), sample_ids(ids, 10, 50, 7, "x")
    assert np.array_equal(a, b) and len(a) == 10 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sample_ids(ids, 10, 50, 8, "x"))
    assert len(sample_ids(ids, 0, 50, 7, "x")) == 50  # the cap
    assert np.array_equal(sample_ids(ids, 0, 500, 7, "x"), ids)  # all when the cap exceeds them


def test_sampling_refuses_impossible_requests():
    with pytest.raises(FailedPrecondition):
        sample_ids(np.zeros(0, np.int64), 0, 10, 0, "misclassified samples")
    with pytest.raises(InvalidArgument):
        sample_ids(np.arange(5), 6, 10, 0, "x")


def test_per_reference_seeds_differ_between_references_and_repeat_for_one():
    assert mixed_seed(0, "masking", 11) == mixed_seed(0, "masking", 11)
    assert len({mixed_seed(0, "masking", i) for i in range(100)}) == 100
    assert mixed_seed(0, "masking", 11) != mixed_seed(1, "masking", 11)


def test_steps_raise_cancelled_when_asked_to_stop():
    seen = []
    steps = Steps(4, lambda f, m: seen.append(f), lambda: len(seen) >= 2)
    steps.check()
    steps.step("a")
    steps.step("b")
    with pytest.raises(Cancelled):
        steps.check()
    assert seen == [0.25, 0.5]


# -- fast paths against slow oracles ----------------------------------------------------------


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def test_zeroing_ranked_channels_per_image_matches_pruning_each_filter():
    """ranking's per-image channel mask == zeroing that filter's weight and bias, one image at a time."""
    from parasal.server.experiments.ranking import _correct_after

    model = _Tiny().eval()
    x = torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # all correct before
    order = torch.stack([torch.randperm(6, generator=torch.Generator().manual_seed(i)) for i in range(5)])

    class Ctx:
        pass

    ctx = Ctx()
    ctx.model = model
    for removed in (0, 2, 6):
        fast = _correct_after(ctx, model.conv2, x, y, order, removed)
        slow = []
        for i in range(5):
            pruned = _Tiny().eval()
            pruned.load_state_dict(model.state_dict())
            with torch.no_grad():
                pruned.conv2.weight[order[i, :removed]] = 0
                pruned.conv2.bias[order[i, :removed]] = 0
                slow.append(bool(pruned(x[i : i + 1]).argmax(1)[0] == y[i]))
        assert fast.tolist() == slow


def test_nearest_neighbours_match_a_brute_force_cosine():
    from parasal.server.experiments import _neighbors

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)

    class Ctx:
        _profiles_all = vectors

    rows = np.array([0, 7, 59])
    mask = rng.random(60) < 0.7
    found = _neighbors.nearest(Ctx(), "saliency", rows, 5, mask=mask)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for r, got in zip(rows, found):
        sims = unit @ unit[r]
        candidates = [j for j in np.argsort(-sims, kind="stable") if mask[j] and j != r]
        assert got.tolist() == candidates[:5]


def test_the_sanity_cascade_randomizes_from_the_output_and_leaves_the_model_alone():
    from parasal.server.experiments.sanity import randomized, stages

    model = _Tiny().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert stages(model) == ["conv1", "conv2", "fc"]
    out = randomized(model, ["fc"], seed=3)
    assert torch.equal(out.conv2.weight, model.conv2.weight) and not torch.equal(out.fc.weight, model.fc.weight)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(randomized(model, ["fc"], seed=3).fc.weight, out.fc.weight)  # seeded


# -- conversion and the page ----------------------------------------------------------------------


def test_the_result_converts_to_the_proto_and_back_through_the_sdk():
    from parasal.client._convert_experiment import experiment_result_from_proto
    from parasal.server.conversions import experiment_result_to_proto

    output = ExperimentOutput(
        "pruning",
        3,
        9,
        [Point("most", 5, "corrected_fraction", 0.5, 0.2, 0.8, 3), Point("random", 5, "m", 1.0, None, None, 1)],
        {"counts": [5]},
        b"\x89PNG",
        1.5,
    )
    msg = experiment_result_to_proto(output)
    assert math.isnan(msg.points[1].ci_low)
    result = experiment_result_from_proto(msg)
    assert result.points[1].ci_low is None and result.points[0].mean == 0.5
    assert result.to_dict()["points"][0]["selection"] == "most" and result.to_dict()["counts"] == [5]
    assert result.to_dict()["experiment"] == "pruning" and result.plot_png == b"\x89PNG" and result.seconds == 1.5


def _doc(points, **extra):
    return {"experiment": "x", "references": 10, "seed": 0, "points": points, **extra}


def _p(selection, count, metric, mean, low, high, n=10):
    return {
        "selection": selection,
        "count": count,
        "metric": metric,
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
        "n": n,
    }


def test_the_pruning_verdict_follows_the_cis_both_ways():
    from parasal.server.experiments.results import VERDICTS

    apart = _doc(
        [
            _p("most", 1, "incorrect_confidence_delta", -0.2, -0.3, -0.1),
            _p("random", 1, "incorrect_confidence_delta", 0.0, -0.01, 0.01),
        ],
        counts=[1],
        num_filters=672,
    )
    overlap = _doc(
        [
            _p("most", 1, "incorrect_confidence_delta", -0.02, -0.05, 0.01),
            _p("random", 1, "incorrect_confidence_delta", 0.0, -0.01, 0.01),
        ],
        counts=[1],
        num_filters=672,
    )
    assert "trend reproduces" in VERDICTS["pruning"](apart)
    assert "does not reproduce" in VERDICTS["pruning"](overlap)


def test_the_finetune_verdict_reports_the_gain_beyond_the_confusion_pair_whatever_its_sign():
    from parasal.server.experiments.results import VERDICTS

    base = [
        _p("most", 2, "neighbors_corrected_fraction", 0.3, 0.2, 0.4),
        _p("random", 2, "neighbors_corrected_fraction", 0.0, 0.0, 0.05),
    ]
    worse = _doc(base + [_p("most", 2, "saliency_minus_same_pair_corrected_fraction", -0.1, -0.2, -0.05)], counts=[2])
    better = _doc(base + [_p("most", 2, "saliency_minus_same_pair_corrected_fraction", 0.1, 0.05, 0.2)], counts=[2])
    assert "lies below it at k = 2" in VERDICTS["finetune"](worse)
    assert "corrected more often at k = 2" in VERDICTS["finetune"](better)


def test_the_page_says_what_was_not_measured(tmp_path):
    from parasal.server.experiments.results import render

    out = tmp_path / "results"
    out.mkdir()
    (out / "beta.skipped").write_text("bundle b has no reference data\n")
    doc = _doc([_p("top", 5, "true_confidence_delta", 0.05, 0.02, 0.08)], percent=5.0)
    (out / "masking.json").write_text(json.dumps(doc))
    text = render(out, tmp_path / "RESULTS.md")
    assert "Not measured on this bundle: bundle b has no reference data" in text
    assert "![masking](results/masking.png)" in text


def test_request_limits_walk_the_options_map():
    """A map field is checked entry by entry (it once crashed the limits walk: INTERNAL)."""
    from parasal.server.limits import request_problem
    from parasal.v1 import saliency_pb2 as pb

    assert request_problem(pb.StartExperimentRequest(name="masking", options={"percent": "5"})) is None
    assert "longer than" in request_problem(pb.StartExperimentRequest(name="m", options={"k": "x" * 300}))
    assert "longer than" in request_problem(pb.StartExperimentRequest(name="m", options={"k" * 300: "1"}))
    assert "at most 32" in request_problem(
        pb.StartExperimentRequest(name="m", options={str(i): "1" for i in range(33)})
    )


def test_the_beta_verdict_separates_the_shares_from_the_correlation():
    from parasal.server.experiments.results import VERDICTS

    points = [
        _p("misclassified", 0, "negative_beta_fraction", 0.8, 0.75, 0.85),
        _p("correct", 0, "negative_beta_fraction", 0.45, 0.44, 0.46),
        _p("mean_over_classes", 0, "spearman_pre_softmax", -0.2, -0.5, 0.1),
    ]
    assert "§4.2 partly reproduces" in VERDICTS["beta"](_doc(points))
    points[2] = _p("mean_over_classes", 0, "spearman_pre_softmax", 0.99, 0.98, 0.995)
    assert "§4.2 reproduces" in VERDICTS["beta"](_doc(points))


def test_cli_options_go_to_their_experiment():
    from parasal.client._cli_experiment import _options, build_parser

    args = build_parser().parse_args(["all", "--out", "o", "--option", "finetune.k=5", "--option", "masking.percent=2"])
    parsed = _options(args)
    assert parsed["finetune"] == {"k": "5"} and parsed["masking"] == {"percent": "2"} and parsed["beta"] == {}
    args = build_parser().parse_args(["masking", "--out", "o", "--option", "percent=2.5"])
    assert _options(args) == {"masking": {"percent": "2.5"}}
    for bad in (["all", "--out", "o", "--option", "k=5"], ["masking", "--out", "o", "--option", "percent"]):
        with pytest.raises(ValueError):
            _options(build_parser().parse_args(bad))


def test_the_committed_results_page_is_what_its_json_renders():
    """docs/RESULTS.md is generated (make results): it must be exactly the render of docs/results/*.json."""
    from pathlib import Path

    from parasal.server.experiments.results import render

    docs = Path(__file__).resolve().parents[2] / "docs"
    if not (docs / "RESULTS.md").exists():
        pytest.skip("docs/RESULTS.md not generated yet (make results)")
    out = docs / "results"
    bundle = (out / "bundle.txt").read_text().strip() if (out / "bundle.txt").exists() else ""
    machine = (out / "machine.txt").read_text().strip() if (out / "machine.txt").exists() else ""
    assert render(out, docs / "RESULTS.md", bundle=bundle, machine=machine) == (docs / "RESULTS.md").read_text()


def test_neighbors_checks_both_reference_pools_at_start():
    from types import SimpleNamespace

    from parasal.server.errors import InvalidArgument
    from parasal.server.experiments.service import check_references

    bundle = SimpleNamespace(name="b", num_misclassified=5, num_samples=7)  # 2 correct samples
    check_references("neighbors", bundle, 2)
    with pytest.raises(InvalidArgument, match="references 3"):
        check_references("neighbors", bundle, 3)
    check_references("pruning", bundle, 5)  # misclassified only


def test_sanity_randomization_leaves_the_global_generator_alone():
    import torch

    from parasal.server.experiments.sanity import randomized

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = randomized(model, ["0", "2"], seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = randomized(model, ["0", "2"], seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_ranking_ratio_ci_is_never_a_division_by_an_empty_baseline():
    import numpy as np
    from scipy.stats import bootstrap

    from parasal.server.experiments.ranking import _ratio_ci

    after = np.array([1.0, 0.0, 0.0, 1.0])
    before = np.array([1.0, 0.0, 0.0, 0.0])  # many resamples hold no correct baseline image
    low, high = _ratio_ci(after, before, np.random.default_rng(0), bootstrap)
    assert (low, high) == (None, None) or (np.isfinite(low) and high < 1e6)
