"""Domain <-> proto conversions survive a round trip; bad requests become InvalidArgument."""

import dataclasses
import math

import numpy as np
import pytest

from parasal.core import FilterLayout, LayerSpan
from parasal.core.evaluation import (
    WHOLE_NETWORK,
    FinetuneReport,
    FinetuneRow,
    PruningReport,
    PruningRow,
    ReferenceState,
)
from parasal.indexer import SampleMeta
from parasal.server import conversions as cv
from parasal.server.errors import InvalidArgument
from parasal.server.queries import (
    Confusion,
    Explanation,
    FilterScore,
    ImageQuery,
    Neighbor,
    ProfileResult,
    SimilarResult,
)
from parasal.v1 import saliency_pb2 as pb

LAYOUT = FilterLayout((LayerSpan("stem.0", "conv2d", 4, 0), LayerSpan("layer1.0.conv1", "conv2d", 6, 4)))
LOCATE = LAYOUT.locate


def meta(i=7, label=3, predicted=6):
    return SampleMeta(
        id=i,
        uri=f"fashion-mnist:test/{i}",
        label=label,
        predicted=predicted,
        true_confidence=0.125,
        predicted_confidence=0.75,
        loss=2.5,
        correct=label == predicted,
        top_filters=[(5, 9.5), (0, 3.25)],
    )


def test_sample_round_trip_with_layer_names_and_class_names():
    names = [f"class{i}" for i in range(10)]
    message = cv.sample_to_proto(meta(), LOCATE, names)
    assert [(f.layer, f.filter) for f in message.top_filters] == [("layer1.0.conv1", 1), ("stem.0", 0)]
    assert (message.label_name, message.predicted_name) == ("class3", "class6")
    assert cv.sample_from_proto(pb.Sample.FromString(message.SerializeToString())) == meta()
    assert cv.sample_to_proto(meta(), LOCATE, []).label_name == ""


def test_sample_messages_are_built_once_and_never_shared_into_responses():
    reads = []

    def read(i):
        reads.append(i)
        return meta(i)

    samples = cv.SampleMessages(read, LOCATE, [f"class{i}" for i in range(10)], maxsize=2)
    samples.warm([7, 8])
    assert samples(7) == cv.sample_to_proto(meta(7), LOCATE, [f"class{i}" for i in range(10)])
    assert samples(8).id == 8 and reads == [7, 8]  # warmed: no second read
    samples(9)  # over maxsize: the least recently used (7) goes
    samples(7)
    assert reads == [7, 8, 9, 7]
    # A response gets a copy: changing it leaves the cached message as it was.
    result = SimilarResult([Neighbor(7, 0.5, meta())], [Confusion(3, 6, 1)])
    response = cv.similar_to_proto(result, samples)
    response.neighbors[0].sample.label = 0
    assert samples(7).label == 3

    # Failed reads (unknown ids) are not cached.
    def missing(i):
        raise KeyError(i)

    empty = cv.SampleMessages(missing, LOCATE)
    for _ in range(2):
        with pytest.raises(KeyError):
            empty(5)


def test_top_filters_outside_the_layout_are_refused():
    for bad in (-1, 10):
        with pytest.raises(IndexError):
            cv.sample_to_proto(dataclasses.replace(meta(), top_filters=[(bad, 1.0)]), LOCATE)


def test_filter_score_and_profile_round_trip():
    score = FilterScore(5, "layer1.0.conv1", 1, 2.5)
    assert cv.filter_score_from_proto(cv.filter_score_to_proto(score)) == score
    vector = np.arange(10, dtype=np.float32) - 3.5
    for sample_id in (None, 0, 12):
        result = ProfileResult(sample_id, 2, 4, 0.25, 0.5, 1.5, [score], vector)
        back = cv.profile_from_proto(cv.profile_to_proto(result, include_vector=True))
        assert back.sample_id == sample_id
        np.testing.assert_array_equal(back.vector, vector)
        assert (back.label, back.predicted, back.top_filters, back.loss) == (2, 4, [score], 1.5)
    assert len(cv.profile_to_proto(result, include_vector=False).vector) == 0


def test_similar_and_explanation_round_trip():
    result = SimilarResult(
        [Neighbor(7, 0.5, meta()), Neighbor(9, 0.25, meta(9, 1, 1))], [Confusion(3, 6, 1), Confusion(1, 1, 1)]
    )
    metas = {7: meta(), 9: meta(9, 1, 1)}
    samples = cv.SampleMessages(metas.__getitem__, LOCATE, [])
    assert cv.similar_from_proto(cv.similar_to_proto(result, samples)) == result
    heatmap = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    explanation = Explanation(heatmap, b"\x89PNG", [FilterScore(0, "stem.0", 0, 1.0)], 3, 6)
    back = cv.explanation_from_proto(cv.explanation_to_proto(explanation))
    np.testing.assert_array_equal(back.heatmap, heatmap)
    assert (back.overlay_png, back.filters, back.label, back.predicted) == (b"\x89PNG", explanation.filters, 3, 6)


def test_queries_round_trip_through_the_oneof():
    for query in (0, 41, ImageQuery(b"png", 3)):
        request = pb.FindSimilarFailuresRequest()
        cv.query_to_proto(query, request)
        assert cv.query_from_proto(request) == query
    request = pb.FindSimilarFailuresRequest()
    cv.query_to_proto(np.array([1.0, -2.0], np.float32), request)
    np.testing.assert_array_equal(cv.query_from_proto(request), [1.0, -2.0])
    with pytest.raises(InvalidArgument, match="sets no query"):
        cv.query_from_proto(pb.GetProfileRequest())
    with pytest.raises(InvalidArgument, match="reference"):
        cv.query_from_proto(pb.StartFinetuneEvaluationRequest(), "reference")


def test_selections():
    for name in ("most", "random", "least"):
        assert cv.selection_from_proto(cv.selection_to_proto(name)) == name
    assert cv.selections_from_proto([1, 3, 1]) == ("most", "least")
    for bad in (pb.SELECTION_UNSPECIFIED, pb.SELECTION_WHOLE_NETWORK, 99):
        with pytest.raises(InvalidArgument):
            cv.selection_from_proto(bad)


def test_evaluation_rows_round_trip():
    rows = [
        FinetuneRow("most", 5, True, 0.25, 0.5, 0.125, 8),
        FinetuneRow(WHOLE_NETWORK, 10, False, -0.5, 0.0, 0.0, 8),
        FinetuneRow("least", 1, False, 0.0, float("nan"), float("nan"), 0),
    ]
    for row in rows:
        back = cv.finetune_row_from_proto(pb.FinetuneRow.FromString(cv.finetune_row_to_proto(row).SerializeToString()))
        assert back.selection == row.selection and back.count == row.count
        assert back.reference_corrected == row.reference_corrected
        for a, b in [
            (back.neighbors_corrected_fraction, row.neighbors_corrected_fraction),
            (back.reference_true_confidence_delta, row.reference_true_confidence_delta),
        ]:
            assert a == b or (math.isnan(a) and math.isnan(b))
    assert cv.finetune_row_to_proto(rows[1]).selection == pb.SELECTION_WHOLE_NETWORK
    assert WHOLE_NETWORK == "whole_network"
    prune = PruningRow("random", 25, 25, -0.25, 0.125, True, -0.5, 0.25, 0.75, 3)
    assert cv.pruning_row_from_proto(cv.pruning_row_to_proto(prune)) == prune


def test_reference_state_sets_sample_id_only_when_known():
    state = ReferenceState(label=1, predicted=2, true_confidence=0.125, predicted_confidence=0.875)
    assert not cv.reference_state_to_proto(state, None).HasField("sample_id")
    assert cv.reference_state_to_proto(state, 0).sample_id == 0
    assert cv.reference_state_to_proto(state, 0).HasField("sample_id")
    assert cv.reference_state_from_proto(cv.reference_state_to_proto(state, 7)) == state


def test_evaluation_reports_carry_the_reference_state():
    state = ReferenceState(label=3, predicted=1, true_confidence=0.25, predicted_confidence=0.5)
    row = FinetuneRow("most", 5, True, 0.25, 0.5, 0.125, 8)
    finetune = FinetuneReport(
        rows=[row], reference=state, neighbors_total=9, neighbors_misclassified=8, num_filters=40, step_size=0.001
    )
    message = cv.finetune_result_to_proto(finetune, 11, [4, 5])
    assert (message.reference.sample_id, message.reference.label, message.reference.predicted) == (11, 3, 1)
    assert list(message.neighbor_ids) == [4, 5] and message.step_size == pytest.approx(0.001)
    pruning = PruningReport(rows=[], reference=state, neighbors_total=0, neighbors_misclassified=0, num_filters=40)
    assert cv.reference_state_from_proto(cv.pruning_result_to_proto(pruning, None, []).reference) == state
