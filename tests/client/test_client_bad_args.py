"""Every parameter of every public `Client` method, given a bad value, raises the SDK's
`InvalidArgument` naming it, before any call (issue #12 §4: integers out of the proto's
int32/int64 range raised protobuf's raw ValueError, a missing image path
FileNotFoundError, `layers=[1]` a TypeError, a GIF bomb Pillow's DecompressionBombError)."""

from __future__ import annotations

import inspect
import io
import struct

import numpy as np
import pytest
from PIL import Image

from parasal.client import Client, InvalidArgument, NotFound, ParasalError

INT32_OVER, INT32_UNDER, INT64_OVER, INT64_UNDER = 2**31, -(2**31) - 1, 2**63, -(2**63) - 1
GREY = np.zeros((4, 4), np.uint8)
MISSING, GIF_BOMB, DIRECTORY = "<missing path>", "<gif bomb path>", "<a directory>"  # filled in per test

#: (method, kwargs, the parameter the message must name). Every other argument is valid.
CASES = [
    ("index_info", {"bundle": 5}, "bundle"),
    ("index_info", {"timeout": "soon"}, "timeout"),
    ("sample", {"id": INT64_OVER}, "id"),
    ("sample", {"id": INT64_UNDER}, "id"),
    ("sample", {"id": "7"}, "id"),
    ("sample", {"id": 1, "include_image": "yes"}, "include_image"),
    ("sample", {"id": 1, "bundle": None}, "bundle"),
    ("sample", {"id": 1, "timeout": -1}, "timeout"),
    ("sample_image", {"id": INT64_OVER}, "id"),
    ("sample_image", {"id": 1, "bundle": b"demo"}, "bundle"),
    ("sample_image", {"id": 1, "timeout": float("nan")}, "timeout"),
    ("profile", {"sample_id": INT64_OVER}, "sample_id"),
    ("profile", {"image": MISSING, "label": 1}, "image"),
    ("profile", {"image": DIRECTORY, "label": 1}, "image"),
    ("profile", {"image": GIF_BOMB, "label": 1}, "pixels"),
    ("profile", {"image": 3, "label": 1}, "image"),
    ("profile", {"image": GREY, "label": INT32_OVER}, "label"),
    ("profile", {"image": GREY, "label": "3"}, "label"),
    ("profile", {"sample_id": 1, "full": "yes"}, "full"),
    ("profile", {"sample_id": 1, "top_k": INT32_OVER}, "top_k"),
    ("profile", {"sample_id": 1, "bundle": 1}, "bundle"),
    ("profile", {"sample_id": 1, "timeout": "1"}, "timeout"),
    ("find_similar_failures", {"sample_id": INT64_UNDER}, "sample_id"),
    ("find_similar_failures", {"image": MISSING, "label": 1}, "image"),
    ("find_similar_failures", {"image": GREY, "label": INT32_UNDER}, "label"),
    ("find_similar_failures", {"vector": "abc"}, "vector"),
    ("find_similar_failures", {"sample_id": 1, "k": INT32_OVER}, "k"),
    ("find_similar_failures", {"sample_id": 1, "only_misclassified": "yes"}, "only_misclassified"),
    ("find_similar_failures", {"sample_id": 1, "exclude_self": None}, "exclude_self"),
    ("find_similar_failures", {"sample_id": 1, "layers": [1]}, "layers"),
    ("find_similar_failures", {"sample_id": 1, "layers": 5}, "layers"),
    ("find_similar_failures", {"sample_id": 1, "true_labels": [INT32_OVER]}, "true_labels"),
    ("find_similar_failures", {"sample_id": 1, "true_labels": 3}, "true_labels"),
    ("find_similar_failures", {"sample_id": 1, "predicted_labels": [INT32_UNDER]}, "predicted_labels"),
    ("find_similar_failures", {"sample_id": 1, "include_top_filters": 1.0}, "include_top_filters"),
    ("find_similar_failures", {"sample_id": 1, "bundle": ["a"]}, "bundle"),
    ("find_similar_failures", {"sample_id": 1, "timeout": []}, "timeout"),
    ("explain_input", {"sample_id": INT64_OVER}, "sample_id"),
    ("explain_input", {"image": GIF_BOMB, "label": 1}, "pixels"),
    ("explain_input", {"image": GREY, "label": INT32_OVER}, "label"),
    ("explain_input", {"sample_id": 1, "top_k": INT32_OVER}, "top_k"),
    ("explain_input", {"sample_id": 1, "filters": [INT32_OVER]}, "filters"),
    ("explain_input", {"sample_id": 1, "filters": 7}, "filters"),
    ("explain_input", {"sample_id": 1, "boost": "big"}, "boost"),
    ("explain_input", {"sample_id": 1, "boost": float("inf")}, "boost"),
    ("explain_input", {"sample_id": 1, "bundle": 0}, "bundle"),
    ("explain_input", {"sample_id": 1, "timeout": "x"}, "timeout"),
    ("start_finetune_evaluation", {"sample_id": INT64_OVER}, "sample_id"),
    ("start_finetune_evaluation", {"image": MISSING, "label": 1}, "image"),
    ("start_finetune_evaluation", {"image": GREY, "label": INT32_OVER}, "label"),
    ("start_finetune_evaluation", {"sample_id": 1, "counts": [INT32_OVER]}, "counts"),
    ("start_finetune_evaluation", {"sample_id": 1, "counts": 5}, "counts"),
    ("start_finetune_evaluation", {"sample_id": 1, "selections": 5}, "selections"),
    ("start_finetune_evaluation", {"sample_id": 1, "selections": [1]}, "selection"),
    ("start_finetune_evaluation", {"sample_id": 1, "step_size": "x"}, "step_size"),
    ("start_finetune_evaluation", {"sample_id": 1, "step_size": float("inf")}, "step_size"),
    ("start_finetune_evaluation", {"sample_id": 1, "num_neighbors": INT32_OVER}, "num_neighbors"),
    ("start_finetune_evaluation", {"sample_id": 1, "neighbor_bundle": 5}, "neighbor_bundle"),
    ("start_finetune_evaluation", {"sample_id": 1, "seed": INT64_OVER}, "seed"),
    ("start_finetune_evaluation", {"sample_id": 1, "seed": "1"}, "seed"),
    ("start_finetune_evaluation", {"sample_id": 1, "bundle": 5}, "bundle"),
    ("start_finetune_evaluation", {"sample_id": 1, "timeout": "x"}, "timeout"),
    ("start_pruning_evaluation", {"sample_id": INT64_OVER}, "sample_id"),
    ("start_pruning_evaluation", {"image": GIF_BOMB, "label": 1}, "pixels"),
    ("start_pruning_evaluation", {"image": GREY, "label": INT32_UNDER}, "label"),
    ("start_pruning_evaluation", {"sample_id": 1, "counts": [INT32_OVER]}, "counts"),
    ("start_pruning_evaluation", {"sample_id": 1, "selections": ["most", None]}, "selection"),
    ("start_pruning_evaluation", {"sample_id": 1, "num_neighbors": INT32_OVER}, "num_neighbors"),
    ("start_pruning_evaluation", {"sample_id": 1, "seed": INT64_UNDER}, "seed"),
    ("start_pruning_evaluation", {"sample_id": 1, "bundle": 5}, "bundle"),
    ("start_pruning_evaluation", {"sample_id": 1, "timeout": "x"}, "timeout"),
    ("start_experiment", {"name": "nope"}, "unknown experiment"),
    ("start_experiment", {"name": "pruning", "bundle": 5}, "bundle"),
    ("start_experiment", {"name": "pruning", "references": INT32_OVER}, "references"),
    ("start_experiment", {"name": "pruning", "seed": INT64_UNDER}, "seed"),
    ("start_experiment", {"name": "pruning", "options": [("k", 1)]}, "options"),
    ("start_experiment", {"name": "pruning", "timeout": "x"}, "timeout"),
    ("operations", {"state": 5}, "state"),
    ("operations", {"page_size": INT32_OVER}, "page_size"),
    ("operations", {"bundle": 5}, "bundle"),
    ("operations", {"timeout": "x"}, "timeout"),
    ("operation", {"op_id": 5}, "operation id"),
    ("operation", {"op_id": "abc", "bundle": 5}, "bundle"),
    ("operation", {"op_id": "abc", "timeout": "x"}, "timeout"),
    ("cancel", {"op_id": None}, "operation id"),
    ("cancel", {"op_id": "abc", "bundle": 5}, "bundle"),
    ("cancel", {"op_id": "abc", "timeout": "x"}, "timeout"),
    ("operation_handle", {"op_id": 5}, "operation id"),
]

# Surprise and expectation (client/_client.py: surprise, start_suppression, the beta filters).
CASES += [
    ("find_similar_failures", {"sample_id": 1, "beta_below": "low"}, "beta_below"),
    ("find_similar_failures", {"sample_id": 1, "beta_above": float("nan")}, "beta_above"),
    ("find_similar_failures", {"sample_id": 1, "only_with_surprise": "yes"}, "only_with_surprise"),
    ("surprise", {"sample_id": INT64_OVER}, "sample_id"),
    ("surprise", {"image": MISSING, "label": 1}, "image"),
    ("surprise", {"image": GREY, "label": INT32_OVER}, "label"),
    ("surprise", {"sample_id": 1, "bundle": 5}, "bundle"),
    ("surprise", {"sample_id": 1, "high": 100.0}, "high"),
    ("surprise", {"sample_id": 1, "low": "0.1"}, "low"),
    ("surprise", {"sample_id": 1, "max_filters": INT32_OVER}, "max_filters"),
    ("surprise", {"sample_id": 1, "detailed": 0}, "detailed"),
    ("surprise", {"sample_id": 1, "exemplars": -1}, "exemplars"),
    ("surprise", {"sample_id": 1, "exemplars_any_class": 1}, "exemplars_any_class"),
    ("surprise", {"sample_id": 1, "segments": INT32_OVER}, "segments"),
    ("surprise", {"sample_id": 1, "include_alpha": None}, "include_alpha"),
    ("surprise", {"sample_id": 1, "include_exemplar_images": "no"}, "include_exemplar_images"),
    ("surprise", {"sample_id": 1, "timeout": "x"}, "timeout"),
    ("start_suppression", {"sample_id": INT64_UNDER}, "sample_id"),
    ("start_suppression", {"image": GIF_BOMB, "label": 1}, "pixels"),
    ("start_suppression", {"image": GREY, "label": "1"}, "label"),
    ("start_suppression", {"sample_id": 1, "segments": [INT32_OVER]}, "segments"),
    ("start_suppression", {"sample_id": 1, "blank_counts": 3}, "blank_counts"),
    ("start_suppression", {"sample_id": 1, "bundle": 5}, "bundle"),
    ("start_suppression", {"sample_id": 1, "timeout": "x"}, "timeout"),
]

# Evaluations' draws, fractions and collateral, and exporting a row's edit (issue 15).
CASES += [
    ("start_finetune_evaluation", {"sample_id": 1, "count_fractions": [0.0]}, "count_fractions"),
    ("start_finetune_evaluation", {"sample_id": 1, "count_fractions": 0.5}, "count_fractions"),
    ("start_finetune_evaluation", {"sample_id": 1, "random_draws": 0}, "random_draws"),
    ("start_finetune_evaluation", {"sample_id": 1, "num_collateral": INT32_OVER}, "num_collateral"),
    ("start_finetune_evaluation", {"sample_id": 1, "skip_collateral": "yes"}, "skip_collateral"),
    ("start_finetune_evaluation", {"failure_mode": INT32_OVER}, "failure_mode"),
    ("start_finetune_evaluation", {"failure_mode": 1, "sample_id": 1}, "failure_mode"),
    ("start_pruning_evaluation", {"sample_id": 1, "count_fractions": [1.5]}, "count_fractions"),
    ("start_pruning_evaluation", {"sample_id": 1, "random_draws": "5"}, "random_draws"),
    ("start_pruning_evaluation", {"sample_id": 1, "num_collateral": -1}, "num_collateral"),
    ("start_pruning_evaluation", {"sample_id": 1, "skip_collateral": 1}, "skip_collateral"),
    ("export_edited_model", {"op_id": 5, "selection": "most", "count": 1, "out": "x.pt"}, "operation id"),
    ("export_edited_model", {"op_id": "a", "selection": "best", "count": 1, "out": "x.pt"}, "selection"),
    ("export_edited_model", {"op_id": "a", "selection": "most", "count": INT32_OVER, "out": "x.pt"}, "count"),
    ("export_edited_model", {"op_id": "a", "selection": "most", "count": 1, "draw": "0", "out": "x.pt"}, "draw"),
    ("export_edited_model", {"op_id": "a", "selection": "most", "count": 1, "out": DIRECTORY}, "out"),
    ("export_edited_model", {"op_id": "a", "selection": "most", "count": 1, "out": "x.pt", "timeout": "x"}, "timeout"),
    # browsing (helper F)
    ("samples", {"bundle": 3}, "bundle"),
    ("samples", {"true_labels": [INT32_OVER]}, "true_labels"),
    ("samples", {"true_labels": 2.5}, "true_labels"),
    ("samples", {"predicted_labels": [INT32_UNDER]}, "predicted_labels"),
    ("samples", {"correct": "yes"}, "correct"),
    ("samples", {"min_true_confidence": "0.5"}, "min_true_confidence"),
    ("samples", {"max_true_confidence": float("nan")}, "max_true_confidence"),
    ("samples", {"min_loss": [1]}, "min_loss"),
    ("samples", {"max_loss": None, "min_loss": "x"}, "min_loss"),
    ("samples", {"beta_below": "0"}, "beta_below"),
    ("samples", {"beta_above": float("nan")}, "beta_above"),
    ("samples", {"only_with_surprise": "yes"}, "only_with_surprise"),
    ("samples", {"only_with_expectation": 1}, "only_with_expectation"),
    ("samples", {"failure_mode": INT32_OVER}, "failure_mode"),
    ("samples", {"order_by": "colour"}, "order_by"),
    ("samples", {"descending": "no"}, "descending"),
    ("samples", {"include_top_filters": None}, "include_top_filters"),
    ("samples", {"page_size": 1001}, "page_size"),
    ("samples", {"limit": 0}, "limit"),
    ("samples", {"timeout": "soon"}, "timeout"),
    ("confusion_matrix", {"bundle": 1}, "bundle"),
    ("confusion_matrix", {"timeout": -1}, "timeout"),
    ("failure_modes", {"bundle": None}, "bundle"),
    ("failure_modes", {"medoids": 101}, "medoids"),
    ("failure_modes", {"top_filters": 0}, "top_filters"),
    ("failure_modes", {"include_map": "yes"}, "include_map"),
    ("failure_modes", {"include_members": 1}, "include_members"),
    ("failure_modes", {"timeout": "x"}, "timeout"),
]

#: Client's public methods that take arguments (close takes none).
CALLING = sorted(
    name for name, _ in inspect.getmembers(Client, inspect.isfunction) if not name.startswith("_") and name != "close"
)


def gif_declaring(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen size
    return bytes(data)


@pytest.fixture
def paths(tmp_path):
    bomb = tmp_path / "bomb.gif"
    bomb.write_bytes(gif_declaring(65_535, 65_535))
    return {MISSING: str(tmp_path / "missing.png"), GIF_BOMB: bomb, DIRECTORY: tmp_path}


@pytest.mark.parametrize("method, kwargs, field", CASES, ids=[f"{m}-{f}-{i}" for i, (m, _, f) in enumerate(CASES)])
def test_bad_argument_is_an_invalid_argument_naming_it(client, fake, paths, method, kwargs, field):
    kwargs = {key: paths.get(value, value) if isinstance(value, str) else value for key, value in kwargs.items()}
    with pytest.raises(InvalidArgument) as info:
        getattr(client, method)(**kwargs)
    assert isinstance(info.value, (ParasalError, ValueError))
    assert field in info.value.details, info.value.details
    assert fake.state.calls == []


def test_every_parameter_of_every_public_method_is_in_the_table():
    covered = {(method, key) for method, kwargs, _ in CASES for key in kwargs}
    missing = [
        (method, name)
        for method in CALLING
        for name in inspect.signature(getattr(Client, method)).parameters
        if name != "self" and (method, name) not in covered
    ]
    assert missing == []


def test_values_at_the_edges_of_the_ranges_go_out(client, fake):
    for edge in (2**63 - 1, -(2**63)):
        try:
            client.sample(edge)
        except NotFound:  # the fake may not have it: what matters is that the request went out
            pass
    client.find_similar_failures(sample_id=1, true_labels=[2**31 - 1, -(2**31)], layers=("a", "b"))
    client.start_pruning_evaluation(sample_id=1, seed=2**63 - 1, counts=[2**31 - 1])
    first, second = fake.state.requests("GetSample")
    assert (first.id, second.id) == (2**63 - 1, -(2**63))
    (similar,) = fake.state.requests("FindSimilarFailures")
    assert list(similar.true_labels) == [2**31 - 1, -(2**31)] and list(similar.layers) == ["a", "b"]
    (pruning,) = fake.state.requests("StartPruningEvaluation")
    assert pruning.seed == 2**63 - 1 and list(pruning.counts) == [2**31 - 1]
