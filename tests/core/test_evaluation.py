"""Evaluations (§3.1, §3.3) on a tiny model trained for a few steps on synthetic patterns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parasal.core.evaluation import (
    SELECTIONS,
    WHOLE_NETWORK,
    Cancelled,
    finetune_evaluation,
    pruning_evaluation,
    random_filters,
    select_filters,
)
from parasal.core.interventions import finetune_step, prune_filters
from parasal.core.layout import filter_layout
from parasal.core.reference import per_sample_filter_saliency
from parasal.core.stats import RunningStats

PATTERNS = torch.zeros(3, 16, 16)
PATTERNS[0, ::4, :] = 1.0  # horizontal stripes
PATTERNS[1, :, ::4] = 1.0  # vertical stripes
PATTERNS[2, 4:12, 4:12] = 1.0  # a square


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, 3, (n,), generator=g)
    return PATTERNS[y][:, None] + 1.6 * torch.randn(n, 1, 16, 16, generator=g), y  # noisy: ~20% wrong


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    x_train, y_train = _data(128, g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(30):
        idx = torch.randint(0, 128, (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
        opt.step()
    model.double().eval()  # float64: first-order effects of tiny steps stand clear of rounding
    for p in model.parameters():
        p.grad = None

    x, y = _data(64, g)
    x = x.double()  # holdout: standardization statistics, reference and neighbors
    layout = filter_layout(model)
    raw = per_sample_filter_saliency(model, x, y, layout)
    stats = RunningStats.of(raw)
    with torch.no_grad():
        wrong = (model(x).argmax(1) != y).nonzero().flatten().tolist()
    correct = [i for i in range(64) if i not in wrong]
    assert len(wrong) >= 5 and len(correct) >= 5
    ref = wrong[0]
    neighbors = wrong[1:6] + correct[:3]  # 5 misclassified, 3 correct ones that are not evaluated
    return dict(
        model=model,
        layout=layout,
        x=x[ref],
        y=int(y[ref]),
        profile=stats.standardize(raw[ref]),
        nx=x[neighbors],
        ny=y[neighbors],
    )


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model, snapshot):
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in snapshot.items())
    assert all(p.grad is None for p in model.parameters())


def _probabilities(model, x):
    with torch.no_grad():
        return F.softmax(model(x).double(), 1)


def _finetune(s, **kw):
    return finetune_evaluation(
        s["model"], s["layout"], s["x"], s["y"], s["profile"], neighbor_inputs=s["nx"], neighbor_labels=s["ny"], **kw
    )


def _prune(s, **kw):
    return pruning_evaluation(
        s["model"], s["layout"], s["x"], s["y"], s["profile"], neighbor_inputs=s["nx"], neighbor_labels=s["ny"], **kw
    )


# --------------------------------------------------------------------------- select_filters


def test_select_filters():
    z = torch.tensor([0.5, -1.0, 3.0, 2.0, -1.0, 0.0])
    assert select_filters(z, 2, "most") == [2, 3]
    assert select_filters(z.numpy(), 3, "least") == [1, 4, 5]  # ties: lower index first
    assert select_filters(z, 100, "most") == [2, 3, 0, 5, 1, 4]  # clipped to F
    a = select_filters(z, 3, "random", generator=torch.Generator().manual_seed(1))
    b = select_filters(z, 5, "random", generator=torch.Generator().manual_seed(1))
    assert b[:3] == a and len(set(b)) == 5  # reproducible and nested over counts
    draws = {tuple(select_filters(z, 3, "random", generator=torch.Generator().manual_seed(s))) for s in range(10)}
    assert len(draws) > 1
    with pytest.raises(ValueError):
        select_filters(z, 2, "largest")
    with pytest.raises(ValueError):
        select_filters(z, -1, "most")


# --------------------------------------------------------------------------- fine-tuning


def test_finetune_rows_equal_manual_finetune_steps(setup):
    s = setup
    step = 0.01
    report = _finetune(s, counts=(1, 3), step_size=step, seed=4, random_draws=1)
    assert [(r.selection, r.count) for r in report.rows] == [(sel, c) for c in (1, 3) for sel in SELECTIONS] + [
        (WHOLE_NETWORK, 0)
    ]
    assert report.neighbors_total == 8 and report.neighbors_misclassified == 5
    assert report.reference.predicted != s["y"]

    batch = torch.cat([s["x"][None], s["nx"]])
    before = _probabilities(s["model"], batch)
    assert report.reference.true_confidence == pytest.approx(float(before[0, s["y"]]))
    wrong = before[1:].argmax(1) != s["ny"]
    for row in report.rows:
        if row.selection == WHOLE_NETWORK:
            tuned, norm = finetune_step(s["model"], s["layout"], s["x"], s["y"], None, step_size=step)
        else:
            _, salient = finetune_step(
                s["model"], s["layout"], s["x"], s["y"], select_filters(s["profile"], row.count, "most"), step_size=step
            )
            if row.selection == "random":
                chosen = random_filters(s["layout"].num_filters, row.count, seed=4, key=report.reference_key)
            else:
                chosen = select_filters(s["profile"], row.count, row.selection)
            assert row.filters == tuple(sorted(chosen))
            target = None if row.selection == "most" else salient
            tuned, norm = finetune_step(
                s["model"], s["layout"], s["x"], s["y"], chosen, step_size=step, target_norm=target
            )
            assert row.update_norm == pytest.approx(salient, rel=1e-9)  # renormalised to the salient set
        assert row.gradient_norm == pytest.approx(norm, rel=1e-6)
        after = _probabilities(tuned, batch)
        assert row.reference_corrected == (int(after[0].argmax()) == s["y"])
        assert row.reference_true_confidence_delta == pytest.approx(
            float(after[0, s["y"]] - before[0, s["y"]]), abs=1e-6
        )
        assert row.neighbors_evaluated == 5
        fixed = (after[1:].argmax(1) == s["ny"])[wrong].double().mean()
        assert row.neighbors_corrected_fraction == pytest.approx(float(fixed), abs=1e-9)
        ny = s["ny"][wrong]
        delta = (after[1:][wrong, ny] - before[1:][wrong, ny]).mean()
        assert row.neighbors_true_confidence_delta == pytest.approx(float(delta), abs=1e-6)


def test_finetune_steps_raise_the_reference_true_class_confidence(setup):
    s = setup
    # a small step is a descent step for every choice of filters (CE down = true-class
    # probability up), and the whole network's plain gradient step is the steepest of them
    small = _finetune(s, counts=(1, 3, 10), step_size=1e-5)
    assert all(r.reference_true_confidence_delta > 0 for r in small.rows)
    whole = small.rows[-1]
    assert whole.selection == WHOLE_NETWORK
    assert whole.reference_true_confidence_delta > max(r.reference_true_confidence_delta for r in small.rows[:-1])
    assert whole.gradient_norm > max(r.gradient_norm for r in small.rows[:-1])
    # a large one on the salient filters or the whole network fixes this reference
    large = _finetune(s, counts=(1, 3), step_size=0.01)
    for row in large.rows:
        if row.selection in ("most", WHOLE_NETWORK):
            assert row.reference_true_confidence_delta > 0.1 and row.reference_corrected


def test_counts_are_clipped_and_noted_and_neighbors_are_optional(setup):
    s = setup
    num_filters = s["layout"].num_filters
    report = finetune_evaluation(
        s["model"], s["layout"], s["x"], s["y"], s["profile"], counts=(1000,), selections=("most", "least")
    )
    assert [r.count for r in report.rows] == [num_filters] * 2 + [0]  # the whole-network row counts no filters
    assert report.rows[0].requested_count == 1000
    assert any("1000" in note for note in report.notes)
    # all filters, most or least: the same step
    first, second = report.rows[0].reference_true_confidence_delta, report.rows[1].reference_true_confidence_delta
    assert first == pytest.approx(second)
    assert report.neighbors_total == 0 and report.rows[0].neighbors_evaluated == 0
    assert math.isnan(report.rows[0].neighbors_corrected_fraction)


def test_evaluations_leave_the_model_untouched(setup):
    s = setup
    model = s["model"]
    model.train()  # the evaluations run on an eval-mode copy regardless
    sentinel = [torch.full_like(p, 3.0) for p in model.parameters()]
    try:
        for p, g in zip(model.parameters(), sentinel):
            p.grad = g
        snapshot = _snapshot(model)
        _finetune(s, counts=(1, 3))
        _prune(s, counts=(1, 3))
        assert model.training
        assert all(p.grad is g for p, g in zip(model.parameters(), sentinel))
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in snapshot.items())
        for m in model.modules():
            assert not m._forward_hooks and not m._forward_pre_hooks
    finally:
        model.eval()
        for p in model.parameters():
            p.grad = None


def test_progress_reaches_one_and_cancel_raises(setup):
    s = setup
    seen = []
    _finetune(s, counts=(1, 3), progress=lambda f, msg: seen.append((f, msg)))
    assert len(seen) == 2 * (1 + 5 + 1) + 1 and seen[-1][0] == 1.0  # every random draw is a step (5 by default)
    assert all(a < b for (a, _), (b, _) in zip(seen, seen[1:]))
    pruned = []
    _prune(s, counts=(2,), random_draws=2, progress=lambda f, msg: pruned.append(f))
    assert pruned == [1 / 4, 2 / 4, 3 / 4, 1.0]

    snapshot = _snapshot(s["model"])
    polls = []
    with pytest.raises(Cancelled):
        _finetune(
            s,
            counts=(1, 3),
            should_stop=lambda: polls.append(1) or len(polls) > 3,
            progress=lambda f, msg: seen.append((f, msg)),
        )
    assert len(polls) == 4
    with pytest.raises(Cancelled):
        _prune(s, should_stop=lambda: True)
    _assert_unchanged(s["model"], snapshot)


# --------------------------------------------------------------------------- pruning


def test_pruning_rows_equal_manual_prunes(setup):
    s = setup
    report = _prune(s, counts=(1, 4, 10), seed=2, random_draws=1)
    assert len(report.rows) == 9
    batch = torch.cat([s["x"][None], s["nx"]])
    before = _probabilities(s["model"], batch)
    true, predicted = s["y"], int(before[0].argmax())
    assert report.reference.predicted == predicted != true
    assert report.reference.label == true
    assert report.reference.predicted_confidence == pytest.approx(float(before[0, predicted]))
    wrong = before[1:].argmax(1) != s["ny"]
    changed = 0
    for row in report.rows:
        if row.selection == "random":
            chosen = random_filters(s["layout"].num_filters, row.count, seed=2, key=report.reference_key)
        else:
            chosen = select_filters(s["profile"], row.count, row.selection)
        assert row.filters == tuple(sorted(chosen))
        after = _probabilities(prune_filters(s["model"], s["layout"], chosen, example_input=s["x"][None]), batch)
        assert row.incorrect_confidence_delta == pytest.approx(
            float(after[0, predicted] - before[0, predicted]), abs=1e-7
        )
        assert row.true_confidence_delta == pytest.approx(float(after[0, true] - before[0, true]), abs=1e-7)
        assert row.corrected == (int(after[0].argmax()) == true)
        p_nb, a_nb, ny = before[1:][wrong], after[1:][wrong], s["ny"][wrong]
        k = torch.arange(len(ny))
        assert row.neighbors_evaluated == 5
        assert row.neighbors_corrected_fraction == pytest.approx(float((a_nb.argmax(1) == ny).double().mean()))
        assert row.neighbors_true_confidence_delta == pytest.approx(float((a_nb[k, ny] - p_nb[k, ny]).mean()), abs=1e-7)
        own = p_nb.argmax(1)
        assert row.neighbors_incorrect_confidence_delta == pytest.approx(
            float((a_nb[k, own] - p_nb[k, own]).mean()), abs=1e-7
        )
        changed += abs(row.incorrect_confidence_delta) > 1e-3
    assert changed >= 6  # pruning does move the predictions
