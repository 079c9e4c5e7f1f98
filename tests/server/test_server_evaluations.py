"""The evaluations as operations, in process, on a tiny real bundle (real LMDB store and
FAISS index): per-reference random draws, count fractions, collateral, the size caps,
and exporting a finished row's edited model."""

from __future__ import annotations

import dataclasses
import io
import time

import indexer_helpers as H
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from parasal.core import apply_edit, default_counts, reference_key, row_filters, select_filters
from parasal.indexer.pipeline import IndexJob, run_index
from parasal.server import conversions as cv
from parasal.server.config import ServerConfig
from parasal.server.errors import FailedPrecondition, InvalidArgument, NotFound
from parasal.server.evaluations import (
    EXPORT_CHUNK_BYTES,
    MAX_COLLATERAL,
    MAX_RANDOM_DRAWS,
    Evaluations,
    FinetuneParams,
    PruningParams,
    collateral_ids,
)
from parasal.server.operations import Operations
from parasal.server.queries import ImageQuery, Queries
from parasal.server.registry import Registry
from parasal.server.store import OperationStore
from parasal.v1 import saliency_pb2 as pb

pytestmark = pytest.mark.slow  # indexes a bundle (a few seconds on 2 cores)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluations")
    data = H.make_image_folder(tmp / "imgs", per_class=12)
    out = tmp / "bundle"
    job = IndexJob(
        data=str(data), out=out, model=H.FACTORY, preprocessing={"channels": "L", "mean": (0.5,), "std": (0.5,)}
    )
    run_index(dataclasses.replace(job, progress=False))
    config = ServerConfig(
        bundles=[("tiny", out)],
        state_dir=tmp / "state",
        device="cpu",
        model_replicas=1,
        neighbor_lists=0,
        saliency_process=False,
    ).validate()
    registry = Registry.load(config)
    queries = Queries(registry, config)
    operations = Operations(OperationStore(tmp / "ops"), max_operations=8)
    evaluations = Evaluations(registry, queries, operations, config)
    yield evaluations, registry.get(), data
    operations.close()
    registry.close()


def _result(evaluations: Evaluations, op: pb.Operation, timeout: float = 120) -> pb.Operation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = evaluations.operations.get(op.id)
        if op.state not in (pb.OPERATION_STATE_PENDING, pb.OPERATION_STATE_RUNNING):
            assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error.message
            return op
        time.sleep(0.05)
    raise AssertionError("evaluation did not finish")


def _ids(served, correct: bool) -> list[int]:
    b = served.bundle
    return [int(i) for i in b.ids[np.asarray(b.correct, bool) == correct]]


def _probs(model, x):
    with torch.no_grad():
        return F.softmax(model(x).double(), 1)


# --------------------------------------------------------------------------- plain functions


def test_collateral_ids_are_seeded_correct_samples():
    ids = np.arange(100, 120)
    correct = np.arange(20) % 3 != 0
    a = collateral_ids(ids, correct, 5, seed=1)
    assert a == collateral_ids(ids, correct, 5, seed=1) == sorted(a) and len(set(a)) == 5
    assert all(correct[i - 100] for i in a)
    assert collateral_ids(ids, correct, 5, seed=2) != a
    assert collateral_ids(ids, correct, 5, seed=-1) == collateral_ids(ids, correct, 5, seed=2**64 - 1)
    everything = collateral_ids(ids, correct, 1000, seed=0, exclude=101)
    assert everything == [int(i) for i in ids[correct] if i != 101]


def test_counts_fractions_and_caps_are_checked_up_front(served):
    evaluations, s, _ = served
    sample = _ids(s, False)[0]
    num_filters = s.layout.num_filters  # 18
    bad = [
        dict(count_fractions=[0.0]),
        dict(count_fractions=[1.5]),
        dict(count_fractions=[float("nan")]),
        dict(counts=[num_filters + 1]),
        dict(counts=list(range(1, 18)), count_fractions=[0.1] * 48),  # 65 entries
        dict(random_draws=MAX_RANDOM_DRAWS + 1),
        dict(random_draws=-1),
        dict(num_collateral=MAX_COLLATERAL + 1),
        dict(num_neighbors=1001),
    ]
    for kw in bad:
        with pytest.raises(InvalidArgument):
            evaluations.start_pruning(PruningParams(bundle="", reference=sample, **kw))
        with pytest.raises(InvalidArgument):
            evaluations.start_finetune(FinetuneParams(bundle="", reference=sample, **kw))
    with pytest.raises(NotFound):
        evaluations.start_pruning(PruningParams(bundle="", reference=10**9))


def test_the_image_cap_counts_draws_and_collateral(served, monkeypatch):
    from parasal.server import evaluations as module

    evaluations, s, _ = served
    sample = _ids(s, False)[0]
    params = PruningParams(bundle="", reference=sample, counts=[1, 2], random_draws=10, num_collateral=5)
    misclassified = min(10, int(s.bundle.num_misclassified))
    collateral = min(5, int(s.bundle.num_samples - s.bundle.num_misclassified))
    images = 2 * (1 + 10 + 1) * (1 + misclassified) + 2 * 3 * collateral
    monkeypatch.setattr(module, "MAX_EVALUATION_IMAGES", images - 1)
    with pytest.raises(InvalidArgument, match="images"):
        evaluations.start_pruning(params)
    monkeypatch.setattr(module, "MAX_EVALUATION_IMAGES", images)
    _result(evaluations, evaluations.start_pruning(params))
    skipped = dataclasses.replace(params, skip_collateral=True)
    monkeypatch.setattr(module, "MAX_EVALUATION_IMAGES", images - 2 * 3 * collateral)
    _result(evaluations, evaluations.start_pruning(skipped))


# --------------------------------------------------------------------------- random draws, collateral


def test_references_with_one_seed_draw_their_own_random_filters(served):
    evaluations, s, _ = served
    first, second = _ids(s, False)[:2]
    rows = {}
    for sample in (first, second):
        op = evaluations.start_pruning(
            PruningParams(bundle="", reference=sample, counts=[3], selections=["random"], seed=7, skip_collateral=True)
        )
        result = _result(evaluations, op).pruning
        assert result.seed == 7 and result.random_draws == 5
        row = result.rows[0]
        key = reference_key(sample)
        expected = row_filters(s.profile(sample), 3, "random", seed=7, key=key)
        assert list(row.filters) == sorted(expected)
        assert row.spread.draws == 5 and row.collateral.evaluated == 0  # skipped: not measured
        rows[sample] = row
    assert list(rows[first].filters) != list(rows[second].filters)
    again = _result(
        evaluations,
        evaluations.start_pruning(
            PruningParams(bundle="", reference=first, counts=[3], selections=["random"], seed=7, skip_collateral=True)
        ),
    ).pruning.rows[0]
    assert again == rows[first]  # deterministic: same reference, same seed


def test_defaults_fractions_and_collateral(served):
    evaluations, s, _ = served
    sample = _ids(s, False)[0]
    op = evaluations.start_finetune(FinetuneParams(bundle="", reference=sample, selections=["most"], seed=3))
    result = _result(evaluations, op).finetune
    expected = [*default_counts(s.layout.num_filters), 0]
    assert [r.count for r in result.rows] == expected  # the whole-network row counts 0 filters ...
    whole = result.rows[-1]
    assert whole.selection == pb.SELECTION_WHOLE_NETWORK
    assert whole.parameters == sum(p.numel() for p in s.master.parameters())  # ... and says what it changed
    correct = [i for i in _ids(s, True) if i != sample]
    for row in result.rows:
        assert row.collateral.evaluated == min(500, len(correct))  # every correct sample (fewer than 500)
        assert row.collateral.accuracy_delta == pytest.approx(-row.collateral.flips / row.collateral.evaluated)
    fractions = evaluations.start_pruning(
        PruningParams(bundle="", reference=sample, counts=[2], count_fractions=[0.5, 1.0, 0.01], selections=["most"])
    )
    assert [r.count for r in _result(evaluations, fractions).pruning.rows] == [2, 9, 18, 1]


def test_collateral_figures_match_a_per_sample_loop(served):
    evaluations, s, _ = served
    sample = _ids(s, False)[0]
    op = evaluations.start_pruning(
        PruningParams(bundle="", reference=sample, counts=[4], selections=["most"], num_collateral=6, seed=11)
    )
    row = _result(evaluations, op).pruning.rows[0]
    ids = collateral_ids(s.bundle.ids, s.bundle.correct, 6, seed=11, exclude=sample)
    x = s.preprocessing(s.bundle.load_image(sample))
    pruned = apply_edit(s.master, s.layout, kind="pruning", selection="most", filters=row.filters, reference_input=x)
    flips = 0
    for i in ids:  # the slow way: one image at a time
        xi = s.preprocessing(s.bundle.load_image(i))[None]
        label = int(s.meta(i).label)
        assert int(_probs(s.master, xi).argmax()) == label  # drawn from the correct ones
        flips += int(_probs(pruned, xi).argmax()) != label
    assert row.collateral.evaluated == 6 and row.collateral.flips == flips


# --------------------------------------------------------------------------- export


def _load(edit, s) -> torch.nn.Module:
    fresh = H.tiny_net()
    fresh.load_state_dict(torch.load(io.BytesIO(edit.data), weights_only=True))
    return fresh.eval()


def test_export_gives_the_evaluated_rows_model(served):
    evaluations, s, _ = served
    sample = _ids(s, False)[0]
    op = evaluations.start_finetune(
        FinetuneParams(bundle="", reference=sample, counts=[2, 5], step_size=0.05, seed=4, random_draws=3)
    )
    result = _result(evaluations, op).finetune
    x = s.preprocessing(s.bundle.load_image(sample))[None]
    label = int(s.meta(sample).label)
    before = _probs(s.master, x)[0, label]
    for row in result.rows:
        name = cv.SELECTION_FROM_PROTO[row.selection]
        edit = evaluations.export_edit(op.id, row.selection, row.count, 0)
        assert edit.seed == 4 and edit.step_size == pytest.approx(0.05) and edit.filters == list(row.filters)
        after = _probs(_load(edit, s), x)[0, label]
        if name != "random":  # a random row's figure is the mean over its draws
            assert float(after - before) == pytest.approx(row.reference_true_confidence_delta, abs=1e-6)
    # a later draw: the filters that draw took, the step rescaled to the salient set
    random_row = next(r for r in result.rows if r.selection == pb.SELECTION_RANDOM)
    edit = evaluations.export_edit(op.id, pb.SELECTION_RANDOM, random_row.count, 2)
    profile = s.profile(sample)
    filters = row_filters(profile, random_row.count, "random", seed=4, key=reference_key(sample), draw=2)
    assert edit.filters == sorted(filters) != list(random_row.filters)
    mine = apply_edit(
        s.master,
        s.layout,
        kind="finetune",
        selection="random",
        filters=filters,
        reference_input=x[0],
        label=label,
        step_size=edit.step_size,
        salient_filters=select_filters(profile, random_row.count, "most"),
    )
    exported = torch.load(io.BytesIO(edit.data), weights_only=True)
    assert all(torch.equal(v, exported[k]) for k, v in mine.state_dict().items())  # the user's own replay: bit-exact


def test_export_chunks_and_errors(served):
    evaluations, s, data = served
    sample = _ids(s, False)[0]
    op = evaluations.start_pruning(PruningParams(bundle="", reference=sample, counts=[1], skip_collateral=True))
    _result(evaluations, op)
    edit = evaluations.export_edit(op.id, pb.SELECTION_MOST_SALIENT, 1, 0)
    messages = cv.exported_edit_to_proto(edit, 100)
    assert b"".join(m.data for m in messages) == edit.data and all(len(m.data) <= 100 for m in messages)
    assert messages[0].total_bytes == len(edit.data) and list(messages[0].filters) == edit.filters
    assert len(cv.exported_edit_to_proto(edit, EXPORT_CHUNK_BYTES)) == 1
    with pytest.raises(NotFound):
        evaluations.export_edit("nope", pb.SELECTION_MOST_SALIENT, 1, 0)
    with pytest.raises(InvalidArgument):
        evaluations.export_edit(op.id, pb.SELECTION_MOST_SALIENT, 2, 0)  # no such row
    with pytest.raises(InvalidArgument):
        evaluations.export_edit(op.id, pb.SELECTION_WHOLE_NETWORK, 0, 0)  # pruning has none
    with pytest.raises(InvalidArgument):
        evaluations.export_edit(op.id, pb.SELECTION_MOST_SALIENT, 1, 1)  # one draw only
    with pytest.raises(InvalidArgument):
        evaluations.export_edit(op.id, pb.SELECTION_RANDOM, 1, 5)  # draws 0..4
    pending = evaluations.start_pruning(PruningParams(bundle="", reference=sample, counts=list(range(1, 19))))
    try:
        with pytest.raises(FailedPrecondition):
            evaluations.export_edit(pending.id, pb.SELECTION_MOST_SALIENT, 1, 0)
    finally:
        evaluations.operations.cancel(pending.id)


def test_an_uploads_rows_export_from_memory_only(served):
    evaluations, s, data = served
    sample = _ids(s, False)[0]
    upload = next(p for p in sorted(data.rglob("*.png")) if s.meta(sample).uri.endswith(str(p.relative_to(data))))
    query = ImageQuery(upload.read_bytes(), int(s.meta(sample).label))
    op = evaluations.start_finetune(FinetuneParams(bundle="", reference=query, counts=[3], skip_collateral=True))
    result = _result(evaluations, op).finetune
    assert not result.reference.HasField("sample_id")
    edit = evaluations.export_edit(op.id, pb.SELECTION_MOST_SALIENT, 3, 0)
    assert edit.filters == list(result.rows[0].filters)
    key = reference_key(upload.read_bytes())
    random_row = next(r for r in result.rows if r.selection == pb.SELECTION_RANDOM)
    assert list(random_row.filters) == sorted(row_filters(np.zeros(18), 3, "random", seed=0, key=key))
    # another server process (a restart) does not hold the upload
    other = Evaluations(evaluations.registry, evaluations.queries, evaluations.operations, evaluations.config)
    with pytest.raises(FailedPrecondition, match="upload"):
        other.export_edit(op.id, pb.SELECTION_MOST_SALIENT, 3, 0)


def test_a_failure_mode_replaces_the_reference(served):
    from parasal.server.browse import failure_modes

    evaluations, s, _ = served
    modes = failure_modes(s).modes
    mode = modes[0]
    op = evaluations.start_finetune(
        FinetuneParams(bundle="", reference=None, failure_mode=0, counts=[2], num_neighbors=3, skip_collateral=True)
    )
    result = _result(evaluations, op).finetune
    assert result.failure_mode == 0 and result.reference.sample_id == int(mode.medoid_ids[0])
    members = [int(i) for i in mode.member_ids]
    assert len(result.neighbor_ids) == min(3, len(members) - 1)
    assert set(result.neighbor_ids) <= set(members) - {int(mode.medoid_ids[0])}
    assert list(result.neighbor_ids) == [int(i) for i in mode.medoid_ids[1 : 1 + len(result.neighbor_ids)]]
    with pytest.raises(InvalidArgument, match="unknown failure_mode"):
        evaluations.start_finetune(FinetuneParams(bundle="", reference=None, failure_mode=len(modes)))
    with pytest.raises(InvalidArgument, match="failure_mode"):
        evaluations.start_finetune(FinetuneParams(bundle="", reference=0, failure_mode=0))
