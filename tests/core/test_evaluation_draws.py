"""Per-reference random draws, collateral, counts and the export of a row's edit (issue 15),
on the tiny trained model of test_evaluation.py, against slow obviously-correct oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_evaluation import setup  # noqa: F401 - the shared module fixture

from parasal.core import (
    WHOLE_NETWORK,
    _bench,
    apply_edit,
    counts_from_fractions,
    default_counts,
    draw_seed,
    finetune_evaluation,
    finetune_step,
    prune_filters,
    pruning_evaluation,
    random_filters,
    reference_key,
    row_filters,
    select_filters,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _collateral(s):
    """The setup's holdout samples the model gets right (plus two it gets wrong, not counted)."""
    return s["cx"], s["cy"]


@pytest.fixture(scope="module")
def data(setup):  # noqa: F811 - the imported fixture
    s = dict(setup)
    g = torch.Generator().manual_seed(7)
    from test_evaluation import _data

    x, y = _data(40, g)
    x = x.double()
    with torch.no_grad():
        right = s["model"](x).argmax(1) == y
    assert right.sum() >= 10 and (~right).sum() >= 2
    s["cx"], s["cy"] = x, y
    s["c_right"] = right
    return s


def _finetune(s, **kw):
    return finetune_evaluation(
        s["model"], s["layout"], s["x"], s["y"], s["profile"], neighbor_inputs=s["nx"], neighbor_labels=s["ny"], **kw
    )


def _prune(s, **kw):
    return pruning_evaluation(
        s["model"], s["layout"], s["x"], s["y"], s["profile"], neighbor_inputs=s["nx"], neighbor_labels=s["ny"], **kw
    )


def _same(a, b) -> bool:
    """Dataclass equality where NaN equals NaN (reports of identical runs)."""
    return repr(a) == repr(b)


# --------------------------------------------------------------------------- counts


def test_default_counts_follow_the_network_size():
    assert default_counts(672) == (1, 2, 5, 25, 74)  # the demo model: the paper's <= 1 % regime and two larger
    assert default_counts(26_560) == (40, 80, 199, 983, 2922)  # ResNet-50
    assert default_counts(8) == (1,)
    assert all(c <= 0.01 * 26_560 for c in default_counts(26_560)[:3])


def test_counts_from_fractions():
    assert counts_from_fractions([1.0, 0.5, 0.001], 672) == (672, 336, 1)  # rounded up, at least one filter
    assert counts_from_fractions([float(np.float32(0.3))], 10) == (3,)  # float32 0.3 is not 4 filters
    for bad in (0.0, -0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            counts_from_fractions([bad], 672)


# --------------------------------------------------------------------------- random draws


def test_reference_keys_and_draw_seeds():
    assert reference_key(7) == "id:7" and reference_key("id:7") == "id:7"
    assert reference_key(b"png") == reference_key(b"png") != reference_key(b"jpg")
    x = torch.zeros(1, 4, 4)
    assert reference_key(None, x).startswith("input:") and reference_key(None, x) != reference_key(None, x + 1)
    assert draw_seed(0, "id:1", 0) == draw_seed(0, "id:1", 0)
    assert (
        len({draw_seed(0, "id:1", 0), draw_seed(0, "id:2", 0), draw_seed(1, "id:1", 0), draw_seed(0, "id:1", 1)}) == 4
    )
    a = random_filters(50, 5, seed=0, key="id:1")
    assert random_filters(50, 10, seed=0, key="id:1")[:5] == a  # nested over counts within a draw
    assert random_filters(50, 5, seed=0, key="id:2") != a


def test_two_references_with_one_seed_draw_different_random_filters(data):
    s = data
    one = _prune(s, counts=(3,), selections=("random",), seed=0, reference=11, random_draws=1)
    two = _prune(s, counts=(3,), selections=("random",), seed=0, reference=12, random_draws=1)
    assert one.reference_key == "id:11" and two.reference_key == "id:12"
    assert one.rows[0].filters != two.rows[0].filters
    # the default key is a hash of the reference input: different inputs, different draws
    implicit = _prune(s, counts=(3,), selections=("random",), random_draws=1)
    assert implicit.reference_key == reference_key(None, s["x"])


def test_same_reference_and_seed_give_identical_results(data):
    s = data
    kw = dict(counts=(1, 3), seed=5, reference=3, random_draws=3, collateral_inputs=s["cx"], collateral_labels=s["cy"])
    assert _same(_finetune(s, **kw), _finetune(s, **kw))
    assert _same(_prune(s, **kw), _prune(s, **kw))


def test_a_random_row_is_the_mean_of_its_draws(data):
    """Oracle: every draw pruned and fine-tuned from scratch on a fresh copy, then averaged."""
    s = data
    draws, count, seed = 4, 3, 9
    key = reference_key(21)
    filters = [random_filters(s["layout"].num_filters, count, seed=seed, key=key, draw=d) for d in range(draws)]
    assert len({tuple(sorted(f)) for f in filters}) == draws  # the draws differ from each other
    batch = torch.cat([s["x"][None], s["nx"]])
    before = _probs(s["model"], batch)
    y = s["y"]

    report = _prune(s, counts=(count,), selections=("random",), seed=seed, reference=21, random_draws=draws)
    row = report.rows[0]
    deltas, incorrect, fixed = [], [], []
    predicted = int(before[0].argmax())
    for chosen in filters:
        after = _probs(prune_filters(s["model"], s["layout"], chosen, example_input=s["x"][None]), batch)
        deltas.append(float(after[0, y] - before[0, y]))
        incorrect.append(float(after[0, predicted] - before[0, predicted]))
        fixed.append(int(after[0].argmax()) == y)
    assert row.filters == tuple(sorted(filters[0]))
    assert row.true_confidence_delta == pytest.approx(np.mean(deltas), abs=1e-9)
    assert row.incorrect_confidence_delta == pytest.approx(np.mean(incorrect), abs=1e-9)
    assert row.reference_corrected_fraction == pytest.approx(np.mean(fixed))
    assert row.corrected == (np.mean(fixed) > 0.5)
    assert row.spread.draws == draws
    assert row.spread.reference_true_confidence_delta_std == pytest.approx(np.std(deltas, ddof=1), abs=1e-9)
    assert row.spread.incorrect_confidence_delta_std == pytest.approx(np.std(incorrect, ddof=1), abs=1e-9)
    assert row.spread.reference_true_confidence_delta_std > 0

    step = 0.01
    tuned = _finetune(
        s, counts=(count,), selections=("random",), seed=seed, reference=21, random_draws=draws, step_size=step
    )
    _, salient = finetune_step(
        s["model"], s["layout"], s["x"], y, select_filters(s["profile"], count, "most"), step_size=step
    )
    manual = []
    for chosen in filters:
        model, _ = finetune_step(s["model"], s["layout"], s["x"], y, chosen, step_size=step, target_norm=salient)
        manual.append(float(_probs(model, batch)[0, y] - before[0, y]))
    row = tuned.rows[0]
    assert row.reference_true_confidence_delta == pytest.approx(np.mean(manual), abs=1e-9)
    assert row.spread.reference_true_confidence_delta_std == pytest.approx(np.std(manual, ddof=1), abs=1e-9)
    assert math.isnan(row.spread.incorrect_confidence_delta_std)  # pruning's only


# --------------------------------------------------------------------------- whole network, parameters


def test_whole_network_row_counts_parameters_not_filters(data):
    s = data
    report = _finetune(s, counts=(2,), selections=("most",))
    whole = report.rows[-1]
    assert whole.selection == WHOLE_NETWORK and whole.count == 0 and whole.requested_count == 0
    assert whole.parameters == sum(p.numel() for p in s["model"].parameters())
    assert whole.filters == ()
    most = report.rows[0]
    expected = 0
    for i in most.filters:  # oracle: weight[c] (+ bias[c]) of each filter's layer
        span, channel = s["layout"].locate(i)
        module = dict(s["model"].named_modules())[span.name]
        expected += module.weight[channel].numel() + (1 if module.bias is not None else 0)
    assert most.parameters == expected and len(most.filters) == 2
    assert most.spread is None and most.reference_corrected_fraction in (0.0, 1.0)


# --------------------------------------------------------------------------- collateral


def test_collateral_matches_a_per_sample_loop(data):
    """Oracle: every collateral sample through the edited model on its own."""
    s = data
    cx, cy = _collateral(s)
    report = _prune(s, counts=(2, 6), random_draws=3, reference=4, collateral_inputs=cx, collateral_labels=cy)
    assert report.collateral_total == len(cy)
    right = s["c_right"]
    moved = 0
    for row in report.rows:
        chosen = row_filters(s["profile"], row.count, row.selection, seed=0, key="id:4")  # a random row: draw 0's
        assert tuple(sorted(chosen)) == row.filters
        pruned = prune_filters(s["model"], s["layout"], chosen, example_input=s["x"][None])
        flips, deltas = 0, []
        for i in np.flatnonzero(right.numpy()):
            b = _probs(s["model"], cx[i : i + 1])[0]
            a = _probs(pruned, cx[i : i + 1])[0]
            flips += int(a.argmax()) != int(cy[i])
            deltas.append(float(a[cy[i]] - b[cy[i]]))
        c = row.collateral
        assert c.evaluated == int(right.sum())  # only those correct before the edit
        assert c.flips == flips
        assert c.accuracy_delta == pytest.approx(-flips / c.evaluated)
        assert c.true_confidence_delta == pytest.approx(np.mean(deltas), abs=1e-9)
        moved += flips > 0 or abs(c.true_confidence_delta) > 1e-4
    assert moved >= 1


def test_collateral_is_absent_unless_given_and_chunking_changes_nothing(data):
    s = data
    cx, cy = _collateral(s)
    plain = _finetune(s, counts=(2,), selections=("most",))
    assert all(row.collateral is None for row in plain.rows) and plain.collateral_total == 0
    whole = _finetune(s, counts=(2,), collateral_inputs=cx, collateral_labels=cy, seed=1, reference=1)
    chunked = _finetune(s, counts=(2,), collateral_inputs=cx, collateral_labels=cy, seed=1, reference=1, max_batch=7)
    for a, b in zip(whole.rows, chunked.rows):
        assert a.collateral.flips == b.collateral.flips
        assert a.collateral.true_confidence_delta == pytest.approx(b.collateral.true_confidence_delta, abs=1e-12)
        assert a.reference_true_confidence_delta == pytest.approx(b.reference_true_confidence_delta, abs=1e-12)
    with pytest.raises(ValueError):
        _finetune(s, counts=(2,), collateral_inputs=cx)


# --------------------------------------------------------------------------- export


def _captured(monkeypatch):
    """Every working-copy state the bench measures (in order), to compare with exported edits."""
    states = []
    original = _bench.Bench.probabilities

    def recording(self, x):
        if x is self.batch:  # once per measurement (and once before any edit)
            states.append({k: v.detach().clone() for k, v in self.work.state_dict().items()})
        return original(self, x)

    monkeypatch.setattr(_bench.Bench, "probabilities", recording)
    return states


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_apply_edit_reproduces_every_row_bit_for_bit(data, monkeypatch, dtype):
    s = dict(data)
    s["model"] = _as(s["model"], dtype)
    s["x"], s["nx"], s["profile"] = s["x"].to(dtype), s["nx"].to(dtype), s["profile"]
    counts, draws, seed, step = (1, 4), 2, 3, 0.02
    states = _captured(monkeypatch)
    report = _finetune(s, counts=counts, seed=seed, reference=5, random_draws=draws, step_size=step)
    measured = iter(states[1:])  # states[0]: before any edit
    for row in report.rows:
        for d in range(draws if row.selection == "random" else 1):
            if row.selection == "random":
                filters = random_filters(s["layout"].num_filters, row.count, seed=seed, key="id:5", draw=d)
            else:
                filters = list(row.filters)
            salient = select_filters(s["profile"], row.count, "most") if row.count else None
            edited = apply_edit(
                s["model"],
                s["layout"],
                kind="finetune",
                selection=row.selection,
                filters=filters,
                reference_input=s["x"],
                label=s["y"],
                step_size=step,
                salient_filters=salient,
            )
            _assert_state_equal(edited, next(measured))
    states.clear()
    report = _prune(s, counts=counts, seed=seed, reference=5, random_draws=draws)
    measured = iter(states[1:])
    for row in report.rows:
        for d in range(draws if row.selection == "random" else 1):
            filters = (
                random_filters(s["layout"].num_filters, row.count, seed=seed, key="id:5", draw=d)
                if row.selection == "random"
                else list(row.filters)
            )
            edited = apply_edit(
                s["model"],
                s["layout"],
                kind="pruning",
                selection=row.selection,
                filters=filters,
                reference_input=s["x"],
            )
            _assert_state_equal(edited, next(measured))


def test_an_exported_state_dict_gives_the_rows_predictions(data, tmp_path):
    s = data
    report = _finetune(s, counts=(3,), selections=("most",), step_size=0.02, reference=2)
    row = report.rows[0]
    edited = apply_edit(
        s["model"],
        s["layout"],
        kind="finetune",
        selection="most",
        filters=row.filters,
        reference_input=s["x"],
        label=s["y"],
        step_size=0.02,
    )
    path = tmp_path / "edited.pt"
    torch.save(edited.state_dict(), path)
    import copy

    fresh = copy.deepcopy(s["model"])
    fresh.load_state_dict(torch.load(path, weights_only=True))
    batch = torch.cat([s["x"][None], s["nx"]])
    before, after = _probs(s["model"], batch), _probs(fresh.eval(), batch)
    assert float(after[0, s["y"]] - before[0, s["y"]]) == row.reference_true_confidence_delta
    assert (int(after[0].argmax()) == s["y"]) == row.reference_corrected


def test_apply_edit_refuses_what_it_cannot_replay(data):
    s = data
    common = dict(reference_input=s["x"], filters=[0])
    with pytest.raises(ValueError):
        apply_edit(s["model"], s["layout"], kind="grow", selection="most", **common)
    with pytest.raises(ValueError):
        apply_edit(s["model"], s["layout"], kind="finetune", selection="random", label=s["y"], **common)
    with pytest.raises(ValueError):
        apply_edit(s["model"], s["layout"], kind="finetune", selection="most", **common)  # no label
    with pytest.raises(ValueError):
        apply_edit(s["model"], s["layout"], kind="pruning", selection=WHOLE_NETWORK, **common)


# --------------------------------------------------------------------------- helpers


def _probs(model, x):
    with torch.no_grad():
        return F.softmax(model(x).double(), 1)


def _as(model, dtype):
    import copy

    return copy.deepcopy(model).to(dtype).eval()


def _assert_state_equal(model, state):
    mine = model.state_dict()
    assert mine.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(mine[k], v), k
