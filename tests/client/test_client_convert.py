"""Round trips proto -> dataclass -> proto for every converted message, on fully populated
messages (a field the converter forgets fails the round trip or the all-fields check)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import grpc
import numpy as np
import pytest

from parasal.client import _convert as cv
from parasal.client import _convert_browse as cvb
from parasal.client import _convert_experiment as cve
from parasal.client import _convert_surprise as cvs
from parasal.client import types as t
from parasal.client.errors import Internal, InvalidArgument
from parasal.v1 import saliency_pb2 as pb


def assert_all_fields_set(msg, path: str = "") -> None:
    """Every field of `msg` (recursively) has a non-default value; one member per oneof."""
    set_names = {f.name for f, _ in msg.ListFields()}
    for f in msg.DESCRIPTOR.fields:
        oneof = f.containing_oneof
        if oneof is not None and not oneof.name.startswith("_"):  # a real oneof, not `optional`
            if msg.WhichOneof(oneof.name) != f.name:
                continue
        assert f.name in set_names, f"{path}{msg.DESCRIPTOR.name}.{f.name} is not set in the fixture"
        if f.message_type is not None and f.message_type.full_name != "google.protobuf.Timestamp":
            value = getattr(msg, f.name)
            for i, item in enumerate(value if f.is_repeated else [value]):
                assert_all_fields_set(item, f"{path}{msg.DESCRIPTOR.name}.{f.name}[{i}].")


def ts(seconds: int, nanos: int = 0):
    from google.protobuf import timestamp_pb2

    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


FILTER = pb.FilterScore(index=40, layer="layer1.0.conv2", filter=8, z=3.25)
SAMPLE = pb.Sample(
    id=42,
    uri="fashion-mnist:test#42",
    label=2,
    predicted=4,
    true_confidence=0.125,
    predicted_confidence=0.75,
    loss=2.5,
    correct=True,
    top_filters=[FILTER, FILTER],
    label_name="Pullover",
    predicted_name="Coat",
    beta=-0.25,
    num_surprise=2,
    num_expectation=1,
    failure_mode=3,
)
REFERENCE = pb.ReferenceState(sample_id=0, label=1, predicted=2, true_confidence=0.25, predicted_confidence=0.5)
COLLATERAL = pb.Collateral(evaluated=480, accuracy_delta=-0.0125, flips=6, true_confidence_delta=-0.03125)
SPREAD = pb.DrawSpread(
    draws=5,
    reference_true_confidence_delta_std=0.125,
    neighbors_true_confidence_delta_std=0.0625,
    neighbors_corrected_fraction_std=0.25,
    incorrect_confidence_delta_std=0.5,
)
FINETUNE = pb.FinetuneEvaluationResult(
    reference=REFERENCE,
    neighbor_ids=[7, 2**40],
    step_size=0.001,
    seed=-(2**40),
    random_draws=5,
    failure_mode=3,
    rows=[
        pb.FinetuneRow(
            selection=pb.SELECTION_RANDOM,
            count=5,
            reference_corrected=True,
            reference_true_confidence_delta=-0.5,
            neighbors_corrected_fraction=0.25,
            neighbors_true_confidence_delta=0.125,
            neighbors_evaluated=8,
            parameters=2**33,
            filters=[3, 17, 600, 601, 671],
            collateral=COLLATERAL,
            spread=SPREAD,
            reference_corrected_fraction=0.6000000238418579,  # float32 0.6: 3 of 5 draws
        )
    ],
)
PRUNING = pb.PruningEvaluationResult(
    reference=REFERENCE,
    neighbor_ids=[3],
    seed=9,
    random_draws=2,
    rows=[
        pb.PruningRow(
            selection=pb.SELECTION_LEAST_SALIENT,
            count=25,
            corrected=True,
            incorrect_confidence_delta=-0.25,
            true_confidence_delta=0.5,
            neighbors_corrected_fraction=0.75,
            neighbors_incorrect_confidence_delta=-0.125,
            neighbors_true_confidence_delta=0.0625,
            neighbors_evaluated=4,
            filters=[1, 2],
            collateral=COLLATERAL,
            spread=SPREAD,
            reference_corrected_fraction=1.0,
        )
    ],
)


def operation(**result) -> pb.Operation:
    return pb.Operation(
        id="op-1",
        kind=pb.OPERATION_KIND_PRUNING_EVALUATION,
        state=pb.OPERATION_STATE_FAILED,
        progress=0.5,
        message="pruning 3/12",
        bundle="demo",
        created_at=ts(1_700_000_000, 5000),
        updated_at=ts(1_700_000_100),
        error=pb.OperationError(code=3, message="label out of range"),
        **result,
    )


REFERENCE_DATA = pb.ReferenceDataInfo(
    dataset="fashion-mnist:train",
    num_samples=60000,
    layer="layer3.0.conv2",
    method="grad_amap",
    num_filters=128,
    exemplars_per_filter=6,
)
EXEMPLAR = pb.Exemplar(
    id=59999, uri="fashion-mnist:train#59999", label=3, label_name="Dress", activation=0.5, image_png=b"\x89PNG."
)
DEVIATION = pb.FilterDeviation(
    layer="layer3.0.conv2",
    filter=17,
    alpha=1.5,
    mean=0.25,
    threshold=1.125,
    deviation=1.25,
    region=pb.Region(png=b"\x89PNG..", height=2, width=3, mask=bytes([0, 1, 1, 0, 0, 1])),
    exemplars=[EXEMPLAR, EXEMPLAR],
)
SURPRISE = pb.ExplainSurpriseResponse(
    sample_id=7,
    label=6,
    predicted=4,
    true_confidence=0.125,
    predicted_confidence=0.75,
    beta=-0.0625,
    layer="layer3.0.conv2",
    method="grad_amap",
    high_percentile=99.5,
    low_percentile=0.5,
    surprise=[DEVIATION],
    expectation=[DEVIATION, DEVIATION],
    alpha=[0.5, -1.25, 3.0],
    class_mean=[0.25, 0.0, 1.0],
)
SUPPRESSION = pb.SuppressionResult(
    reference=REFERENCE,
    layer="layer3.0.conv2",
    filter=17,
    rows=[
        pb.SuppressionRow(method="surprise", segments=50, blanked=2, predicted=6, true_confidence=0.625, corrected=True)
    ],
    fixed_by_surprise=True,
    fixed_by_vanilla=True,
)
EXPERIMENT = pb.ExperimentResult(
    name="pruning",
    references=60,
    seed=3,
    points=[
        pb.ExperimentPoint(
            selection="most", count=5, metric="corrected_fraction", mean=0.25, ci_low=0.125, ci_high=0.375, n=60
        )
    ],
    json='{"experiment": "pruning"}',
    plot_png=b"\x89PNG",
    seconds=12.5,
)
FILTER_COUNT = pb.FilterCount(layer="conv2", filter=5, count=12)
FAILURE_MODE = pb.FailureMode(
    id=1,
    size=40,
    confusions=[pb.ConfusionCount(label=6, predicted=2, count=30), pb.ConfusionCount(label=2, predicted=6, count=10)],
    top_filters=[FILTER],
    medoid_ids=[17, 2**40],
    cohesion=0.875,
    shared_surprise=[FILTER_COUNT],
    shared_expectation=[FILTER_COUNT, FILTER_COUNT],
    member_ids=[3, 17, 2**40],
)
MAP_POINT = pb.FailureMapPoint(id=17, x=-0.5, y=0.25, label=6, predicted=2, failure_mode=1)
FAILURE_MODES = pb.ListFailureModesResponse(
    modes=[FAILURE_MODE],
    method="k-means, k=2 by silhouette",
    silhouette=0.375,
    num_misclassified=41,
    num_unassigned=1,
    map=[MAP_POINT, MAP_POINT],
    map_method="PCA",
)
CONFUSION_MATRIX = pb.GetConfusionMatrixResponse(
    num_classes=2,
    class_names=["a", "b"],
    counts=[5, 1, 2, 7],
    per_class_accuracy=[5 / 6, 7 / 9],
    accuracy=0.8,
    num_samples=15,
)
SAMPLE_PAGE = pb.ListSamplesResponse(samples=[SAMPLE, SAMPLE], next_page_token="abc", total_size=90)

# (fully populated proto, from_proto, to_proto)
CASES = {
    "Layer": (pb.Layer(name="conv1", kind="conv2d", filters=64, offset=128), cv.layer_from_proto, cv.layer_to_proto),
    "FilterScore": (FILTER, cv.filter_score_from_proto, cv.filter_score_to_proto),
    "BundleInfo": (
        pb.BundleInfo(
            name="demo",
            model="demo-fashion",
            model_fingerprint="ab" * 32,
            dataset="fashion-mnist:test",
            num_samples=10000,
            num_misclassified=812,
            num_filters=96,
            index_type="Flat",
            layers=[pb.Layer(name="conv1", kind="conv2d", filters=32, offset=4)],
            class_names=["a", "b"],
            created_at=ts(1_700_000_000, 123_000),
            input_shape=[1, 28, 28],
            reference=REFERENCE_DATA,
        ),
        cv.bundle_info_from_proto,
        cv.bundle_info_to_proto,
    ),
    "Sample": (SAMPLE, cv.sample_from_proto, cv.sample_to_proto),
    "GetSampleResponse": (
        pb.GetSampleResponse(sample=SAMPLE, image_png=b"\x89PNG..."),
        cv.get_sample_response_from_proto,
        cv.get_sample_response_to_proto,
    ),
    "GetProfileResponse": (
        pb.GetProfileResponse(
            sample_id=0,
            label=1,
            predicted=2,
            true_confidence=0.25,
            predicted_confidence=0.5,
            loss=1.5,
            top_filters=[FILTER],
            vector=[0.5, -1.25, 3.0],
        ),
        cv.profile_from_proto,
        cv.profile_to_proto,
    ),
    "FindSimilarFailuresResponse": (
        pb.FindSimilarFailuresResponse(
            neighbors=[pb.Neighbor(id=9, similarity=0.875, sample=SAMPLE)],
            confusions=[pb.ConfusionCount(label=1, predicted=2, count=3)],
        ),
        cv.similar_failures_from_proto,
        cv.similar_failures_to_proto,
    ),
    "ExplainInputResponse": (
        pb.ExplainInputResponse(
            height=2,
            width=3,
            heatmap=[0, 0.25, 0.5, 0.75, 1, 0.125],
            overlay_png=b"png",
            filters=[FILTER],
            label=1,
            predicted=2,
        ),
        cv.explanation_from_proto,
        cv.explanation_to_proto,
    ),
    "ReferenceState": (REFERENCE, cv.reference_from_proto, cv.reference_to_proto),
    "FinetuneEvaluationResult": (FINETUNE, cv.finetune_result_from_proto, cv.finetune_result_to_proto),
    "PruningEvaluationResult": (PRUNING, cv.pruning_result_from_proto, cv.pruning_result_to_proto),
    "Operation(finetune)": (operation(finetune=FINETUNE), cv.operation_from_proto, cv.operation_to_proto),
    "Operation(pruning)": (operation(pruning=PRUNING), cv.operation_from_proto, cv.operation_to_proto),
    "ReferenceDataInfo": (REFERENCE_DATA, cvs.reference_info_from_proto, cvs.reference_info_to_proto),
    "Exemplar": (EXEMPLAR, cvs.exemplar_from_proto, cvs.exemplar_to_proto),
    "FilterDeviation": (DEVIATION, cvs.filter_deviation_from_proto, cvs.filter_deviation_to_proto),
    "ExplainSurpriseResponse": (SURPRISE, cvs.surprise_from_proto, cvs.surprise_to_proto),
    "SuppressionResult": (SUPPRESSION, cvs.suppression_result_from_proto, cvs.suppression_result_to_proto),
    "Operation(suppression)": (operation(suppression=SUPPRESSION), cv.operation_from_proto, cv.operation_to_proto),
    "ExperimentResult": (EXPERIMENT, cve.experiment_result_from_proto, cve.experiment_result_to_proto),
    "Operation(experiment)": (operation(experiment=EXPERIMENT), cv.operation_from_proto, cv.operation_to_proto),
    "FilterCount": (FILTER_COUNT, cvb.filter_count_from_proto, cvb.filter_count_to_proto),
    "FailureMode": (FAILURE_MODE, cvb.failure_mode_from_proto, cvb.failure_mode_to_proto),
    "FailureMapPoint": (MAP_POINT, cvb.failure_map_point_from_proto, cvb.failure_map_point_to_proto),
    "ListFailureModesResponse": (FAILURE_MODES, cvb.failure_modes_from_proto, cvb.failure_modes_to_proto),
    "GetConfusionMatrixResponse": (CONFUSION_MATRIX, cvb.confusion_matrix_from_proto, cvb.confusion_matrix_to_proto),
    "ListSamplesResponse": (SAMPLE_PAGE, cvb.sample_page_from_proto, cvb.sample_page_to_proto),
}


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_of_fully_populated_messages(name):
    msg, from_proto, to_proto = CASES[name]
    assert_all_fields_set(msg)
    value = from_proto(msg)
    back = to_proto(value)
    assert back == msg, f"{name}: {back} != {msg}"
    assert from_proto(back) == value  # dataclass equality, arrays compared by value


def test_round_trip_of_empty_messages():
    # Defaults survive too (sub-messages may come back present-but-empty, which reads the same).
    for msg, from_proto, to_proto in CASES.values():
        value = from_proto(type(msg)())
        assert from_proto(to_proto(value)) == value


def test_field_values_and_types():
    info = cv.bundle_info_from_proto(CASES["BundleInfo"][0])
    assert info.layers == [t.Layer("conv1", "conv2d", 32, 4)]
    assert info.input_shape == (1, 28, 28) and info.class_names == ["a", "b"]
    assert info.created_at == datetime(2023, 11, 14, 22, 13, 20, 123, tzinfo=timezone.utc)

    sample = cv.get_sample_response_from_proto(CASES["GetSampleResponse"][0])
    assert sample.image_png == b"\x89PNG..." and sample.top_filters[0] == t.FilterScore(40, "layer1.0.conv2", 8, 3.25)
    assert cv.get_sample_response_from_proto(pb.GetSampleResponse(sample=SAMPLE)).image_png is None

    profile = cv.profile_from_proto(CASES["GetProfileResponse"][0])
    assert profile.sample_id == 0  # an `optional` field set to 0 is still set
    assert profile.vector.dtype == np.float32 and profile.vector.tolist() == [0.5, -1.25, 3.0]
    empty = cv.profile_from_proto(pb.GetProfileResponse())
    assert empty.sample_id is None and empty.vector is None

    explanation = cv.explanation_from_proto(CASES["ExplainInputResponse"][0])
    assert explanation.heatmap.shape == (2, 3) and explanation.heatmap.dtype == np.float32
    assert explanation.heatmap[1, 0] == 0.75  # row-major

    similar = cv.similar_failures_from_proto(CASES["FindSimilarFailuresResponse"][0])
    assert len(similar) == 1 and [n.id for n in similar] == [9] and similar[0].sample.id == 42
    assert similar.ids.dtype == np.int64 and similar.similarities.tolist() == [0.875]

    op = cv.operation_from_proto(CASES["Operation(finetune)"][0])
    assert (op.kind, op.state, op.done) == ("pruning", "failed", True)
    assert op.error == t.OperationErrorInfo(grpc.StatusCode.INVALID_ARGUMENT, "label out of range")
    assert isinstance(op.result, t.FinetuneResult)
    assert op.result.neighbor_ids.dtype == np.int64 and op.result.neighbor_ids.tolist() == [7, 2**40]
    assert op.result.rows[0].selection == "random" and op.result.reference.sample_id == 0
    assert isinstance(cv.operation_from_proto(CASES["Operation(pruning)"][0]).result, t.PruningResult)

    blank = cv.operation_from_proto(pb.Operation())
    assert (blank.state, blank.kind, blank.result, blank.error, blank.created_at) == (
        "unspecified",
        "",
        None,
        None,
        None,
    )


def test_enum_tables_cover_every_proto_value():
    for value in pb.Selection.values():
        if value != pb.SELECTION_UNSPECIFIED:
            assert cv.selection_from_proto(value) in t.SELECTIONS
    for value in pb.OperationState.values():
        if value != pb.OPERATION_STATE_UNSPECIFIED:
            name = cv.state_from_proto(value)
            assert name in t.OPERATION_STATES and cv.state_to_proto(name) == value
    for value in pb.OperationKind.values():
        if value != pb.OPERATION_KIND_UNSPECIFIED:
            assert cv.kind_to_proto(cv.kind_from_proto(value)) == value
    assert t.TERMINAL_STATES == {"succeeded", "failed", "cancelled", "aborted"}


def test_selection_names():
    assert [cv.selection_to_proto(s) for s in ("most", "RANDOM", " least ")] == [
        pb.SELECTION_MOST_SALIENT,
        pb.SELECTION_RANDOM,
        pb.SELECTION_LEAST_SALIENT,
    ]
    for bad in ("best", "whole_network", "", 1):
        with pytest.raises(InvalidArgument):
            cv.selection_to_proto(bad)
    assert cv.state_to_proto(None) == pb.OPERATION_STATE_UNSPECIFIED
    with pytest.raises(InvalidArgument):
        cv.state_to_proto("done")


def test_malformed_heatmap_is_an_internal_error():
    with pytest.raises(Internal, match="heatmap has 5 values for 2x3"):
        cv.explanation_from_proto(pb.ExplainInputResponse(height=2, width=3, heatmap=[0] * 5))


def test_result_table_and_dicts():
    result = cv.finetune_result_from_proto(FINETUNE)
    dicts = result.to_dicts()
    assert dicts[0]["selection"] == "random" and dicts[0]["neighbors_evaluated"] == 8
    assert dicts[0]["collateral"]["flips"] == 6 and dicts[0]["filters"] == (3, 17, 600, 601, 671)
    table = result.table().splitlines()
    assert table[0].split() == [
        "selection",
        "count",
        "ref_fixed",
        "ref_dtrue",
        "nbr_fixed",
        "nbr_dtrue",
        "nbrs",
        "coll_flips",
        "coll_dacc",
        "coll_dtrue",
        "sd_ref_dtrue",
        "filters",
    ]
    expected = "random 5 yes -0.5000 0.2500 0.1250 8 6/480 -0.0125 -0.0312 0.1250 3,17,600,601,+1"
    assert table[2].split() == expected.split()
    assert t.PruningResult(result.reference, np.zeros(0, np.int64), []).table() == "(no rows)"


def test_the_whole_network_row_is_labelled_by_its_parameters():
    row = pb.FinetuneRow(selection=pb.SELECTION_WHOLE_NETWORK, count=0, parameters=1_234_567, neighbors_evaluated=0)
    result = cv.finetune_result_from_proto(pb.FinetuneEvaluationResult(reference=REFERENCE, rows=[row]))
    assert result.rows[0].label == "whole network (1,234,567 parameters)"
    assert result.rows[0].collateral is None and result.rows[0].spread is None  # not measured / no draws
    assert "whole network (1,234,567 parameters)" in result.table()


def test_array_dataclasses_compare_by_value_and_are_unhashable():
    a = cv.profile_from_proto(CASES["GetProfileResponse"][0])
    b = cv.profile_from_proto(CASES["GetProfileResponse"][0])
    assert a == b and a is not b
    c = cv.profile_from_proto(
        pb.GetProfileResponse(
            sample_id=0,
            label=1,
            predicted=2,
            true_confidence=0.25,
            predicted_confidence=0.5,
            loss=1.5,
            top_filters=[FILTER],
            vector=[0.5, -1.25, 4.0],
        )
    )
    assert a != c
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.label = 3
