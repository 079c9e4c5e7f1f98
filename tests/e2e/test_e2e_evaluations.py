"""Fine-tuning and pruning evaluations as operations, through the SDK against a real server."""

from __future__ import annotations

import numpy as np
import pytest

from parasal.client import OperationCancelled
from parasal.core import DEFAULT_COUNTS, WHOLE_NETWORK

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
    handle = client.start_finetune_evaluation(sample_id=reference, counts=COUNTS, num_neighbors=5, seed=1)
    result = handle.result(timeout=120)
    assert result.reference.sample_id == reference and result.reference.label == bundle.meta(reference).label
    assert len(result.neighbor_ids) == 5 and reference not in result.neighbor_ids
    assert all(not bundle.meta(i).correct for i in result.neighbor_ids)  # misclassified neighbors only
    expected = {(s, c) for s in ("most", "random", "least") for c in COUNTS} | {
        (WHOLE_NETWORK, bundle.layout.num_filters)
    }
    assert {(row.selection, row.count) for row in result.rows} == expected
    assert any(row.reference_true_confidence_delta != 0 for row in result.rows)  # the copy did change
    # ... and the serving model did not.
    np.testing.assert_array_equal(probe().vector, before.vector)
    assert client.operations(page_size=1)[0].id == handle.id  # newest first


def test_pruning_evaluation_from_an_upload(client, bundle, probe):
    before = probe()
    sample = misclassified(bundle)[0]
    image = client.sample(sample, include_image=True).image_png
    handle = client.start_pruning_evaluation(
        image=image, label=bundle.meta(sample).label, counts=COUNTS, selections=["most", "least"], num_neighbors=3
    )
    result = handle.result(timeout=120)
    assert result.reference.sample_id is None
    assert len(result.neighbor_ids) == 3
    assert {(row.selection, row.count) for row in result.rows} == {(s, c) for s in ("most", "least") for c in COUNTS}
    assert all(row.neighbors_evaluated <= 3 for row in result.rows)
    np.testing.assert_array_equal(probe().vector, before.vector)
    one = client.start_pruning_evaluation(sample_id=sample, counts=[1], num_neighbors=1).result(timeout=120)
    assert len(one.neighbor_ids) == 1 and len(one.rows) == 3


def test_empty_counts_mean_the_default_counts(client, bundle):
    """The proto: empty counts mean 1, 5, 25, 75 (those within the model's filters); 0 step size and
    neighbor count mean the server's defaults (10 neighbours for both evaluations)."""
    sample = misclassified(bundle)[0]
    pruning = client.start_pruning_evaluation(sample_id=sample, selections=["most"]).result(timeout=120)
    default = [c for c in DEFAULT_COUNTS if c <= bundle.layout.num_filters]
    # both evaluations measure on 10 misclassified neighbours by default (the proto: 0 means 10)
    assert [row.count for row in pruning.rows] == default and len(pruning.neighbor_ids) == 10
    finetune = client.start_finetune_evaluation(sample_id=sample, selections=["most"]).result(timeout=120)
    assert [row.count for row in finetune.rows] == default + [bundle.layout.num_filters]
    assert finetune.step_size == pytest.approx(1e-3) and len(finetune.neighbor_ids) == 10


def test_progress_then_cancel_a_long_evaluation(client, bundle):
    """64 counts x 3 selections over every misclassified neighbor: seconds of work, so the
    watch sees progress and the cancel arrives long before the end."""
    handle = client.start_finetune_evaluation(
        sample_id=misclassified(bundle)[0], counts=list(range(1, 65)), num_neighbors=1000
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
