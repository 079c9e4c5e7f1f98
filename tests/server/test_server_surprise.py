"""ExplainSurprise's domain (server/surprise.py), the suppression operation (server/suppression.py)
and the beta / surprise filters of FindSimilarFailures, on a real bundle with reference data,
each against an oracle computed here: numpy percentiles and β from the stored reference values,
core's filter_region / activation_maps / exemplar_png / suppress_surprise called directly."""

from __future__ import annotations

import io
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from parasal.core import (
    ClassFilterStats,
    activation_maps,
    exemplar_png,
    filter_importance,
    filter_region,
    suppress_surprise,
    surprise_expectation,
)
from parasal.indexer import NoReferenceData
from parasal.server._regions import filter_region_masks
from parasal.server.config import ServerConfig
from parasal.server.conversions import SampleMessages, surprise_to_proto
from parasal.server.errors import FailedPrecondition, InvalidArgument, status_for
from parasal.server.operations import Operations
from parasal.server.queries import ImageQuery, Queries, check_beta_filters, display_pixels
from parasal.server.registry import Registry
from parasal.server.store import OperationStore
from parasal.server.suppression import SuppressionParams, Suppressions
from parasal.server.surprise import (
    _LRU,
    SurpriseParams,
    Surprises,
    _Geometry,
    _region,
    check_class,
    check_params,
    reference_of,
    sample_surprise_lookup,
)
from parasal.v1 import saliency_pb2 as pb

pytestmark = pytest.mark.fashion_mnist


@pytest.fixture(scope="module")
def reference_bundle(tmp_path_factory) -> Path:
    from indexer_helpers import build_reference_bundle

    return build_reference_bundle(tmp_path_factory.mktemp("surprise") / "ref", limit=300, reference_limit=600)


@pytest.fixture(scope="module")
def registry(reference_bundle, tmp_path_factory):
    config = ServerConfig(
        bundles=[("ref", reference_bundle)], state_dir=tmp_path_factory.mktemp("state"), saliency_process=False
    )
    registry = Registry.load(config)
    yield registry, config
    registry.close()


@pytest.fixture(scope="module")
def surprises(registry):
    reg, config = registry
    return Surprises(reg, Queries(reg, config))


@pytest.fixture(scope="module")
def served(registry):
    return registry[0].get("ref")


def with_both_lists(served, n=3) -> list[int]:
    b = served.bundle
    ids = b.ids[(b.num_surprise > 0) & (b.num_expectation > 0)]
    assert len(ids) >= n, "the test bundle should have samples with both kinds of filters"
    return [int(i) for i in ids[:n]]


def numpy_oracle(alpha: np.ndarray, label: int, reference, high=99.9, low=0.1):
    """β, surprise and expectation filter sets straight from the sorted reference values."""
    values = reference.stats.values(label).astype(np.float64)  # (n_c, N)
    all_means = np.stack([reference.stats.values(c).astype(np.float64).mean(0) for c in range(10)])
    mu = values.mean(0)
    upper, lower = np.percentile(values, high, axis=0), np.percentile(values, low, axis=0)
    a = alpha.astype(np.float64)
    surprise = [int(n) for n in np.flatnonzero(a > upper)]
    expectation = [int(n) for n in np.flatnonzero((a < lower) & (mu > all_means[label].mean()))]
    return float((a - mu).mean()), sorted(surprise, key=lambda n: -(a[n] - mu[n])), expectation


# -- checks without a bundle -------------------------------------------------------------


def test_defaults_are_the_papers():
    checked = check_params(SurpriseParams(), exemplars_per_filter=6)
    assert (checked.high, checked.low, checked.top) == (99.9, 0.1, None)
    assert (checked.detailed, checked.exemplars, checked.segments) == (3, 6, 50)
    assert check_params(SurpriseParams(), exemplars_per_filter=4).exemplars == 4  # at most what the bundle kept


@pytest.mark.parametrize(
    "params, words",
    [
        (SurpriseParams(high_percentile=100.0), "high_percentile"),
        (SurpriseParams(high_percentile=-1.0), "high_percentile"),
        (SurpriseParams(low_percentile=float("nan")), "low_percentile"),
        (SurpriseParams(high_percentile=5.0, low_percentile=5.0), "above low_percentile"),
        (SurpriseParams(high_percentile=1.0, low_percentile=2.0), "above low_percentile"),
        (SurpriseParams(max_filters=-1), "max_filters"),
        (SurpriseParams(detailed=17), "detailed"),
        (SurpriseParams(exemplars=7), "exemplars"),
        (SurpriseParams(segments=1001), "segments"),
    ],
)
def test_bad_options_are_invalid_arguments_naming_the_option(params, words):
    with pytest.raises(InvalidArgument, match=words):
        check_params(params, exemplars_per_filter=6)


def test_no_reference_data_is_failed_precondition_saying_how_to_index_one():
    plain = SimpleNamespace(name="plain", bundle=SimpleNamespace(has_reference=False, reference=None))
    with pytest.raises(NoReferenceData) as caught:
        reference_of(plain)
    code, message = status_for(caught.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "--reference-data" in message and "plain" in message
    assert sample_surprise_lookup(plain) is None


def test_a_class_without_reference_samples_is_failed_precondition():
    stats = ClassFilterStats.of(np.ones((2, 3), np.float32), np.array([0, 0]), num_classes=2)
    check_class(stats, 0)
    with pytest.raises(FailedPrecondition, match="class 1"):
        check_class(stats, 1)


def test_beta_filters_refuse_empty_intervals_and_non_finite_bounds():
    assert check_beta_filters(None, None, False) == ()
    assert check_beta_filters(0.5, None, False) == (0.5, None, False)
    assert check_beta_filters(None, None, True) == (None, None, True)
    with pytest.raises(InvalidArgument, match="no beta lies between"):
        check_beta_filters(0.0, 0.0, False)
    with pytest.raises(InvalidArgument, match="finite"):
        check_beta_filters(float("inf"), None, False)


def test_the_exemplar_cache_is_bounded_by_bytes_and_drops_the_least_recent():
    cache = _LRU(max_bytes=10)
    cache.put_many({1: b"aaaa", 2: b"bbbb"})
    assert cache.get_many([1]) == {1: b"aaaa"}  # 1 is now the most recent
    cache.put_many({3: b"cccc"})  # 12 bytes: 2 goes
    assert cache.get_many([1, 2, 3]) == {1: b"aaaa", 3: b"cccc"} and cache.bytes == 8
    cache.put_many({1: b"a"})  # replacing counts the new size only
    assert cache.bytes == 5


def test_regions_map_back_onto_the_original_image_through_resize_and_crop():
    """A 40x20 RGB upload resized (shorter side 10) and centre-cropped to 8x8: a mask over the
    model's input lands on the matching part of the original image, at the original size."""
    from parasal.indexer import Preprocessing

    preprocessing = Preprocessing(channels="RGB", resize=10, crop=8, input_shape=(3, 8, 8))
    image = Image.new("RGB", (40, 20), (200, 100, 50))
    geometry = _Geometry(preprocessing, image)
    assert geometry.pixels.shape == (20, 40, 3) and geometry.display().shape == (8, 8, 3)
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True  # the left half of the crop
    region = _region(mask, geometry)
    assert region.mask.shape == (20, 40)
    # resized 20x10, crop columns 6..13 and rows 1..8: the left half, columns 6..9, is the
    # original's columns 12..19; rows 1..8 its rows 2..17 (bilinear edges thresholded at 0.5)
    assert np.flatnonzero(region.mask.any(0)).tolist() == list(range(12, 20))
    rows = np.flatnonzero(region.mask.any(1))
    assert rows.min() in (1, 2, 3) and rows.max() in (16, 17, 18) and region.mask[4:15, 12:20].all()
    assert Image.open(io.BytesIO(region.png)).size == (40, 20)


def test_alpha_beta_and_lists_equal_core_and_a_numpy_oracle(surprises, served):
    reference = served.bundle.reference
    for sample_id in with_both_lists(served):
        result = surprises.explain("ref", sample_id, SurpriseParams(include_alpha=True))
        label = int(served.bundle.meta(sample_id).label)
        stored = served.bundle.alpha([sample_id])[0]
        np.testing.assert_array_equal(result.alpha, stored)
        np.testing.assert_allclose(result.class_mean, reference.stats.mean[label], rtol=1e-6)
        (core,) = surprise_expectation(stored[None], [label], reference.stats)
        assert result.beta == pytest.approx(core.beta, rel=1e-12)
        for got, want in ((result.surprise, core.surprise), (result.expectation, core.expectation)):
            assert [(d.filter, d.alpha, d.mean, d.threshold, d.deviation) for d in got] == [
                (w.filter, w.alpha, w.mean, w.threshold, w.deviation) for w in want
            ]
            assert all(d.layer == reference.layer for d in got)
        beta, surprise, expectation = numpy_oracle(stored, label, reference)
        assert result.beta == pytest.approx(beta, rel=1e-9, abs=1e-15)
        assert [d.filter for d in result.surprise] == surprise
        assert sorted(d.filter for d in result.expectation) == expectation
        assert result.beta == pytest.approx(float(served.bundle.beta[served.row(sample_id)]), rel=1e-5)


def test_only_the_detailed_filters_get_regions_and_exemplars(surprises, served):
    sample_id = with_both_lists(served)[0]
    result = surprises.explain("ref", sample_id, SurpriseParams(detailed=1, max_filters=2))
    assert len(result.surprise) <= 2 and len(result.expectation) <= 2
    for filters in (result.surprise, result.expectation):
        assert filters[0].region is not None and filters[0].exemplars
        assert all(d.region is None and not d.exemplars for d in filters[1:])


def test_regions_are_core_filter_region_through_the_true_class(surprises, served):
    sample_id = with_both_lists(served)[0]
    result = surprises.explain("ref", sample_id, SurpriseParams(segments=30))
    image = served.bundle.load_image(sample_id)
    x = served.preprocessing(image)
    display = display_pixels(served.preprocessing, image).astype(np.float64) / 255.0
    label = int(served.bundle.meta(sample_id).label)
    with served.replica() as model:
        for d in [*result.surprise[:3], *result.expectation[:3]]:
            want = filter_region(
                model, x, d.filter, target=label, layer=d.layer, segments=30, display_image=display
            ).mask
            np.testing.assert_array_equal(d.region.mask, want)  # 28x28: the original size is the model's
            png = Image.open(io.BytesIO(d.region.png))
            assert png.size == image.size


@pytest.mark.parametrize("sample_id", [0, 7, 42])
def test_the_batched_regions_equal_core_filter_region_one_by_one(served, sample_id):
    """The fast path (one pass for every filter) against core's one-filter-at-a-time oracle."""
    image = served.bundle.load_image(sample_id)
    x = served.preprocessing(image)
    display = display_pixels(served.preprocessing, image).astype(np.float64) / 255.0
    layer = served.bundle.reference.layer
    filters = [int(f) for f in np.random.default_rng(sample_id).choice(128, 12, replace=False)] + [5, 5]
    with served.replica() as model:
        model.layer1.train()  # a flag the fast path must leave as it found it
        masks = filter_region_masks(model, x, filters, target=3, layer=layer, segments=40, display_image=display)
        assert model.layer1.training and not model.training
        model.layer1.eval()
        assert not any(m._forward_hooks for m in model.modules())
        for f, mask in zip(filters, masks):
            want = filter_region(model, x, f, target=3, layer=layer, segments=40, display_image=display).mask
            np.testing.assert_array_equal(mask, want, err_msg=f"filter {f}")
    with pytest.raises(ValueError, match="filters must lie"):
        filter_region_masks(served.master, x, [128], target=3, layer=layer, segments=40, display_image=display)
    assert filter_region_masks(served.master, x, [], target=3, layer=layer, segments=40, display_image=display) == []


def test_exemplars_come_from_the_bundle_with_their_images(surprises, served):
    reference = served.bundle.reference
    sample_id = with_both_lists(served)[0]
    label = int(served.bundle.meta(sample_id).label)
    for any_class in (False, True):
        result = surprises.explain(
            "ref", sample_id, SurpriseParams(exemplars=4, exemplars_any_class=any_class, include_exemplar_images=True)
        )
        d = result.surprise[0]
        table = reference.exemplars
        ids = table.overall_ids[d.filter] if any_class else table.class_ids[label, d.filter]
        scores = table.overall_alpha[d.filter] if any_class else table.class_alpha[label, d.filter]
        want = [(int(i), float(a)) for i, a in zip(ids[:4], scores[:4]) if i >= 0]
        assert [(e.id, e.activation) for e in d.exemplars] == want
        assert all(e.label == reference.label(e.id) and e.uri == reference.uri(e.id) for e in d.exemplars)
        assert all(e.label_name == served.class_names[e.label] for e in d.exemplars)
        if not any_class:
            assert {e.label for e in d.exemplars} == {label}
            class_pngs = [e.image_png for e in d.exemplars]
        first = d.exemplars[0]
        pil = reference.load_image(first.id)
        with served.replica() as model:
            heat = activation_maps(model, served.preprocessing(pil)[None], [d.filter], layer=d.layer)[0]
        assert first.image_png == exemplar_png(np.asarray(pil), heat)
    cached = surprises.explain("ref", sample_id, SurpriseParams(exemplars=4, include_exemplar_images=True))
    assert [e.image_png for e in cached.surprise[0].exemplars] == class_pngs  # from the cache, the same bytes
    plain = surprises.explain("ref", sample_id, SurpriseParams())
    assert all(e.image_png == b"" for e in plain.surprise[0].exemplars)


def test_exemplar_images_drawn_in_small_batches_are_the_same(registry, surprises, served, monkeypatch):
    import parasal.server.surprise as module

    reg, config = registry
    sample_id = with_both_lists(served)[1]
    params = SurpriseParams(detailed=3, include_exemplar_images=True)
    want = surprises.explain("ref", sample_id, params)
    monkeypatch.setattr(module, "EXEMPLAR_BATCH", 5)
    got = Surprises(reg, Queries(reg, config)).explain("ref", sample_id, params)  # its own, empty cache
    for a, b in zip([*got.surprise, *got.expectation], [*want.surprise, *want.expectation]):
        assert [e.image_png for e in a.exemplars] == [e.image_png for e in b.exemplars]
    assert sum(len(d.exemplars) for d in got.surprise + got.expectation) > 5


def test_other_percentiles_move_the_thresholds(surprises, served):
    reference = served.bundle.reference
    sample_id = with_both_lists(served)[0]
    label = int(served.bundle.meta(sample_id).label)
    result = surprises.explain("ref", sample_id, SurpriseParams(high_percentile=90.0, low_percentile=10.0))
    assert (result.high_percentile, result.low_percentile) == (90.0, 10.0)
    upper = reference.stats.percentile(90.0)[label]
    assert result.surprise and all(d.threshold == pytest.approx(upper[d.filter]) for d in result.surprise)
    default = surprises.explain("ref", sample_id, SurpriseParams())
    assert len(result.surprise) >= len(default.surprise)


def test_an_upload_gets_the_alpha_the_indexer_stored(surprises, served):
    sample_id = with_both_lists(served)[1]
    image = served.bundle.load_image(sample_id)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    label = int(served.bundle.meta(sample_id).label)
    result = surprises.explain("ref", ImageQuery(buffer.getvalue(), label), SurpriseParams(include_alpha=True))
    assert result.sample_id is None and result.label == label
    reference = served.bundle.reference
    with served.replica() as model:
        want = filter_importance(
            model, served.preprocessing(image)[None], [label], layer=reference.layer, method=reference.method
        )[0].numpy()
    np.testing.assert_array_equal(result.alpha, want)
    np.testing.assert_allclose(result.alpha, served.bundle.alpha([sample_id])[0], rtol=1e-4, atol=1e-9)
    (core,) = surprise_expectation(want[None], [label], reference.stats)
    assert [d.filter for d in result.surprise] == [d.filter for d in core.surprise]
    assert result.predicted == int(served.bundle.meta(sample_id).predicted)


def test_bad_uploads_are_invalid_arguments(surprises):
    with pytest.raises(InvalidArgument):
        surprises.explain("ref", ImageQuery(b"not an image", 0), SurpriseParams())
    with pytest.raises(InvalidArgument, match="label"):
        surprises.explain("ref", ImageQuery(b"not an image", 10), SurpriseParams())


def test_the_response_message_carries_everything(surprises, served):
    sample_id = with_both_lists(served)[0]
    result = surprises.explain("ref", sample_id, SurpriseParams(include_alpha=True, include_exemplar_images=True))
    message = surprise_to_proto(result)
    assert message.sample_id == sample_id and message.layer == result.layer and message.method == "grad_amap"
    assert len(message.alpha) == len(message.class_mean) == served.bundle.reference.num_filters
    first = message.surprise[0]
    mask = np.frombuffer(first.region.mask, np.uint8).reshape(first.region.height, first.region.width)
    np.testing.assert_array_equal(mask.astype(bool), result.surprise[0].region.mask)
    assert first.exemplars[0].image_png == result.surprise[0].exemplars[0].image_png


# -- Sample messages and neighbour filters -----------------------------------------------


def test_sample_messages_carry_beta_and_counts(served):
    messages = SampleMessages(
        served.meta, served.layout.locate, served.class_names, surprise=sample_surprise_lookup(served)
    )
    b = served.bundle
    for sample_id in with_both_lists(served) + [int(b.ids[0])]:
        message = messages(sample_id)
        row = served.row(sample_id)
        assert message.HasField("beta") and message.beta == pytest.approx(float(b.beta[row]))
        assert (message.num_surprise, message.num_expectation) == (
            int(b.num_surprise[row]),
            int(b.num_expectation[row]),
        )
    plain = SampleMessages(served.meta, served.layout.locate, served.class_names)
    assert not plain(int(b.ids[0])).HasField("beta")


def test_neighbours_filtered_by_beta_and_surprise_match_a_brute_force_search(registry, served):
    reg, config = registry
    queries = Queries(reg, config)
    b = served.bundle
    query = with_both_lists(served)[0]
    result = queries.find_similar("ref", query, k=5, beta_below=0.0, only_with_surprise=True)
    ok = (b.beta < 0.0) & (b.num_surprise > 0) & (b.ids != query)
    vectors = b.profiles(b.ids).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    q = vectors[served.row(query)]
    scores = np.where(ok, vectors @ q, -np.inf)
    want = [int(b.ids[i]) for i in np.argsort(-scores, kind="stable")[: min(5, int(ok.sum()))]]
    assert [n.id for n in result.neighbors] == want
    above = queries.find_similar("ref", query, k=5, beta_above=0.0)
    assert all(float(b.beta[served.row(n.id)]) > 0.0 for n in above.neighbors)


# -- the suppression operation -----------------------------------------------------------


def wait(operations: Operations, op_id: str, timeout=120.0) -> pb.Operation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = operations.get(op_id)
        if op.state not in (pb.OPERATION_STATE_PENDING, pb.OPERATION_STATE_RUNNING):
            return op
        time.sleep(0.05)
    raise AssertionError(f"operation {op_id} did not finish")


@pytest.fixture
def suppressions(registry, tmp_path):
    reg, config = registry
    operations = Operations(OperationStore(tmp_path), progress_interval_s=0.0)
    yield Suppressions(reg, Queries(reg, config), operations), operations
    operations.close()


def test_suppression_equals_core_on_the_most_surprising_filter(suppressions, served):
    runner, operations = suppressions
    b = served.bundle
    wrong = b.ids[(b.num_surprise > 0) & ~b.correct]
    sample_id = int(wrong[0]) if len(wrong) else with_both_lists(served)[0]
    op = runner.start(SuppressionParams("ref", sample_id, segments=[20, 40], blank_counts=[1, 3]))
    assert op.kind == pb.OPERATION_KIND_SUPPRESSION
    done = wait(operations, op.id)
    assert done.state == pb.OPERATION_STATE_SUCCEEDED, done.message
    result = done.suppression
    meta = b.meta(sample_id)
    reference = b.reference
    (found,) = surprise_expectation(b.alpha([sample_id]), [int(meta.label)], reference.stats)
    image = b.load_image(sample_id)
    display = display_pixels(served.preprocessing, image).astype(np.float64) / 255.0
    report = suppress_surprise(
        served.master,
        served.preprocessing(image),
        int(meta.label),
        found.surprise[0].filter,
        layer=reference.layer,
        segment_counts=(20, 40),
        blank_counts=(1, 3),
        display_image=display,
    )
    assert (result.layer, result.filter) == (reference.layer, found.surprise[0].filter)
    assert result.reference.sample_id == sample_id and result.reference.label == meta.label
    assert [(r.method, r.segments, r.blanked, r.predicted, r.corrected) for r in result.rows] == [
        (r.method, r.segments, r.blanked, r.predicted, r.fixed) for r in report.rows
    ]
    np.testing.assert_allclose([r.true_confidence for r in result.rows], [r.label_confidence for r in report.rows])
    assert result.fixed_by_surprise == any(r.fixed for r in report.rows if r.method == "surprise")
    assert result.fixed_by_vanilla == any(r.fixed for r in report.rows if r.method == "vanilla")


def test_a_sample_without_surprise_filters_gets_vanilla_rows_only(suppressions, served):
    runner, operations = suppressions
    b = served.bundle
    plain = b.ids[b.num_surprise == 0]
    assert len(plain)
    done = wait(operations, runner.start(SuppressionParams("ref", int(plain[0]), segments=[20], blank_counts=[1])).id)
    assert done.state == pb.OPERATION_STATE_SUCCEEDED, done.message
    assert done.suppression.filter == -1 and not done.suppression.fixed_by_surprise
    assert [r.method for r in done.suppression.rows] == ["vanilla"]


def test_suppression_checks_its_input_before_starting(suppressions):
    runner, _ = suppressions
    with pytest.raises(InvalidArgument, match="segment"):
        runner.start(SuppressionParams("ref", 0, segments=[1]))
    with pytest.raises(InvalidArgument, match="at most 16"):
        runner.start(SuppressionParams("ref", 0, blank_counts=list(range(1, 18))))
    with pytest.raises(InvalidArgument):
        runner.start(SuppressionParams("ref", ImageQuery(b"junk", 1)))
    from parasal.server.errors import NotFound

    with pytest.raises(NotFound):
        runner.start(SuppressionParams("ref", 10**9))


def test_suppression_can_be_cancelled(suppressions):
    runner, operations = suppressions
    op = runner.start(SuppressionParams("ref", 0, segments=list(range(20, 420, 25)), blank_counts=[1, 2, 3, 5]))
    operations.cancel(op.id)
    done = wait(operations, op.id)
    assert done.state == pb.OPERATION_STATE_CANCELLED


def test_uploads_and_torch_state_are_left_alone(suppressions, served):
    runner, operations = suppressions
    image = served.bundle.load_image(3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    before = {k: v.clone() for k, v in served.master.state_dict().items()}
    label = int(served.bundle.meta(3).label)
    done = wait(operations, runner.start(SuppressionParams("ref", ImageQuery(buffer.getvalue(), label), [20], [1])).id)
    assert done.state == pb.OPERATION_STATE_SUCCEEDED, done.message
    assert not done.suppression.reference.HasField("sample_id")
    after = served.master.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks for m in served.master.modules())
