"""Fine-tuning and pruning evaluations as operations, through the SDK against a real server
(and exporting a finished row's edited model, through the SDK and the CLI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from parasal.client import FailedPrecondition, InvalidArgument, NotFound, OperationCancelled, cli
from parasal.core import WHOLE_NETWORK, default_counts

pytestmark = pytest.mark.slow  # real server processes / real bundles: part of make test

COUNTS = [1, 5, 25]


def misclassified(bundle, n: int = 1) -> list[int]:
    return [int(i) for i in bundle.ids[np.flatnonzero(~bundle.correct)[:n]]]


@pytest.fixture(scope="module")
def probe(client, bundle):
    """An uploaded image's profile: computed by the serving model at call time."""
    sample = misclassified(bundle)[0]
    image = client.sample(sample, include_image=True).image_png
    label = bundle.meta(sample).label
    return lambda: client.profile(image=image, label=label, full=True)


def test_finetune_evaluation(client, bundle, probe):
    before = probe()
    reference = misclassified(bundle)[0]
    handle = client.start_finetune_evaluation(
        sample_id=reference, counts=COUNTS, num_neighbors=5, seed=1, num_collateral=40
    )
    result = handle.result(timeout=120)
    assert result.reference.sample_id == reference and result.reference.label == bundle.meta(reference).label
    assert len(result.neighbor_ids) == 5 and reference not in result.neighbor_ids
    assert all(not bundle.meta(i).correct for i in result.neighbor_ids)  # misclassified neighbors only
    expected = {(s, c) for s in ("most", "random", "least") for c in COUNTS} | {(WHOLE_NETWORK, 0)}
    assert {(row.selection, row.count) for row in result.rows} == expected
    assert any(row.reference_true_confidence_delta != 0 for row in result.rows)  # the copy did change
    whole = result.rows[-1]
    assert whole.label == f"whole network ({whole.parameters:,} parameters)" and whole.parameters > 0
    assert result.seed == 1 and result.random_draws == 5
    for row in result.rows:
        assert row.collateral.evaluated == 40  # the drawn correct samples, all correct before the step
        assert (row.spread is not None) == (row.selection == "random")
        assert len(row.filters) == row.count
    # ... and the serving model did not.
    np.testing.assert_array_equal(probe().vector, before.vector)
    assert client.operations(page_size=1)[0].id == handle.id  # newest first


def test_pruning_evaluation_from_an_upload(client, bundle, probe):
    before = probe()
    sample = misclassified(bundle)[0]
    image = client.sample(sample, include_image=True).image_png
    handle = client.start_pruning_evaluation(
        image=image,
        label=bundle.meta(sample).label,
        counts=COUNTS,
        selections=["most", "least"],
        num_neighbors=3,
        skip_collateral=True,
    )
    result = handle.result(timeout=120)
    assert result.reference.sample_id is None
    assert len(result.neighbor_ids) == 3
    assert {(row.selection, row.count) for row in result.rows} == {(s, c) for s in ("most", "least") for c in COUNTS}
    assert all(row.neighbors_evaluated <= 3 for row in result.rows)
    np.testing.assert_array_equal(probe().vector, before.vector)
    assert all(row.collateral is None for row in result.rows)  # skipped: not measured
    one = client.start_pruning_evaluation(sample_id=sample, counts=[1], num_neighbors=1, num_collateral=5).result(
        timeout=120
    )
    assert len(one.neighbor_ids) == 1 and len(one.rows) == 3


def test_empty_counts_mean_the_default_counts(client, bundle):
    """Empty counts mean parasal.core.default_counts of the network (1, 2, 5, 25, 74 for the
    demo's 672 filters); 0 step size and neighbor count mean the server's defaults (10
    neighbours for both evaluations); 0 collateral means 500 (here: every correct sample)."""
    sample = misclassified(bundle)[0]
    pruning = client.start_pruning_evaluation(sample_id=sample, selections=["most"]).result(timeout=120)
    default = list(default_counts(bundle.layout.num_filters))
    assert default == [1, 2, 5, 25, 74]
    # both evaluations measure on 10 misclassified neighbours by default (the proto: 0 means 10)
    assert [row.count for row in pruning.rows] == default and len(pruning.neighbor_ids) == 10
    correct = int(bundle.correct.sum()) - int(bool(bundle.meta(sample).correct))
    assert all(row.collateral.evaluated == min(500, correct) for row in pruning.rows)
    finetune = client.start_finetune_evaluation(sample_id=sample, selections=["most"], skip_collateral=True).result(
        timeout=120
    )
    assert [row.count for row in finetune.rows] == default + [0]
    assert finetune.step_size == pytest.approx(1e-3) and len(finetune.neighbor_ids) == 10
    fractions = client.start_pruning_evaluation(
        sample_id=sample, selections=["most"], counts=[3], count_fractions=[0.01, 1.0], skip_collateral=True
    ).result(timeout=120)
    assert [row.count for row in fractions.rows] == [3, 7, bundle.layout.num_filters]


def test_progress_then_cancel_a_long_evaluation(client, bundle):
    """64 counts x 3 selections over every misclassified neighbor: seconds of work, so the
    watch sees progress and the cancel arrives long before the end."""
    handle = client.start_finetune_evaluation(
        sample_id=misclassified(bundle)[0], counts=list(range(1, 65)), num_neighbors=1000, skip_collateral=True
    )
    seen, cancelled = [], False
    for op in handle:
        seen.append((op.state, op.progress, op.message))
        if not cancelled and op.state == "running" and 0 < op.progress < 1:
            handle.cancel()
            cancelled = True
    assert any(state == "running" and 0 < progress < 1 for state, progress, _ in seen), seen
    assert seen[-1][0] == "cancelled"
    with pytest.raises(OperationCancelled):
        handle.result(timeout=120)
    assert client.operation(handle.id).state == "cancelled"


def test_evaluation_errors(client, bundle):
    from parasal.client import InvalidArgument, NotFound

    with pytest.raises(NotFound):
        client.start_finetune_evaluation(sample_id=10**9)
    with pytest.raises(NotFound):
        client.start_pruning_evaluation(sample_id=0, bundle="nope")
    with pytest.raises(InvalidArgument):
        client.start_finetune_evaluation(sample_id=0, counts=[bundle.layout.num_filters + 1])
    with pytest.raises(InvalidArgument):
        client.start_pruning_evaluation(image=b"junk", label=0)
    with pytest.raises(NotFound):
        client.cancel("0000nope")


def test_two_references_draw_their_own_random_filters(client, bundle):
    first, second = misclassified(bundle, 2)
    kw = dict(counts=[5], selections=["random"], seed=0, skip_collateral=True, num_neighbors=1)
    a = client.start_pruning_evaluation(sample_id=first, **kw).result(timeout=120).rows[0]
    b = client.start_pruning_evaluation(sample_id=second, **kw).result(timeout=120).rows[0]
    again = client.start_pruning_evaluation(sample_id=first, **kw).result(timeout=120).rows[0]
    assert a.filters != b.filters and again == a


def _probabilities(model, x):
    with torch.no_grad():
        return F.softmax(model(x).double(), 1)


def test_an_exported_row_loads_into_the_users_own_model(client, bundle, tmp_path, capsys, monkeypatch):
    """The file export writes, loaded into a fresh copy of the model, gives the row's predictions."""
    from parasal.indexer import load_model

    sample = misclassified(bundle)[0]
    handle = client.start_finetune_evaluation(
        sample_id=sample, counts=[2], step_size=0.01, num_neighbors=1, seed=3, skip_collateral=True, random_draws=2
    )
    result = handle.result(timeout=120)
    x = bundle.preprocessing(bundle.load_image(sample))[None]
    label = bundle.meta(sample).label
    mine = load_model("demo-fashion").model.eval()
    before = _probabilities(mine, x)[0]
    for row in result.rows:
        if row.selection == "random":
            continue  # its figures are means over draws
        out = tmp_path / f"{row.selection}.pt"
        edit = client.export_edited_model(handle.id, selection=row.selection, count=row.count, out=out)
        assert edit.filters == list(row.filters) and edit.seed == 3 and edit.total_bytes == out.stat().st_size
        edited = load_model("demo-fashion").model.eval()
        edited.load_state_dict(torch.load(out, weights_only=True))
        after = _probabilities(edited, x)[0]
        assert float(after[label] - before[label]) == pytest.approx(row.reference_true_confidence_delta, abs=1e-5)
        assert (int(after.argmax()) == label) == row.reference_corrected
    # the CLI writes the same file for a random row's second draw
    monkeypatch.setenv(cli.TARGET_ENV, client.target)
    out = tmp_path / "cli.pt"
    argv = ["eval", "export", handle.id, "--selection", "random", "--count", "2", "--draw", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "seed 3" in printed
    assert out.stat().st_size > 0
    assert (
        cli.main(
            ["eval", "export", handle.id, "--selection", "random", "--count", "2", "--draw", "2", "--out", str(out)]
        )
        == 2
    )
    assert "draw 2 outside 0..1" in capsys.readouterr().err


def test_export_errors(client, bundle, tmp_path):
    sample = misclassified(bundle)[0]
    out = tmp_path / "x.pt"
    with pytest.raises(NotFound):
        client.export_edited_model("0000nope", selection="most", count=1, out=out)
    done = client.start_pruning_evaluation(sample_id=sample, counts=[1], skip_collateral=True, num_neighbors=1)
    done.result(timeout=120)
    with pytest.raises(InvalidArgument, match="no row"):
        client.export_edited_model(done.id, selection="most", count=2, out=out)
    running = client.start_finetune_evaluation(
        sample_id=sample, counts=list(range(1, 65)), num_neighbors=1000, skip_collateral=True
    )
    try:
        with pytest.raises(FailedPrecondition):
            client.export_edited_model(running.id, selection="most", count=1, out=out)
    finally:
        running.cancel()
    assert not out.exists()


def test_a_failure_mode_evaluation(client, bundle):
    mode = client.failure_modes(include_members=True).modes[0]
    result = client.start_finetune_evaluation(
        failure_mode=mode.id, counts=[1], num_neighbors=2, skip_collateral=True
    ).result(timeout=120)
    assert result.failure_mode == mode.id and result.reference.sample_id == int(mode.medoid_ids[0])
    assert set(result.neighbor_ids.tolist()) <= set(int(i) for i in mode.member_ids)
