"""Surprise and expectation over a real server: ExplainSurprise by id and by upload, Sample and
BundleInfo fields, the beta / surprise neighbour filters, the suppression operation (to completion
and cancelled), the CLI, and the error cases. Oracle: core.surprise_expectation (and core's
filter_importance for uploads) computed in this process on the same bundle."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest

from parasal.client import Client, FailedPrecondition, InvalidArgument, NotFound, OperationCancelled, cli
from parasal.core import filter_importance, surprise_expectation
from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.slow, pytest.mark.fashion_mnist]


@pytest.fixture(scope="module")
def ref_server(start_server, reference_bundle_dir):
    return start_server(bundle=reference_bundle_dir)


@pytest.fixture(scope="module")
def ref_client(ref_server):
    with Client(ref_server.address, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def ref_bundle(reference_bundle_dir):
    from parasal.indexer import open_bundle

    with open_bundle(reference_bundle_dir, gpu=False) as b:
        yield b


@pytest.fixture
def run(capsys, monkeypatch):
    """run(target, *argv) -> (exit status, stdout, stderr) of the `parasal` CLI."""
    for name in (cli.TOKEN_ENV, cli.TOKEN_FILE_ENV):
        monkeypatch.delenv(name, raising=False)

    def run(target, *argv):
        status = cli.main(["--target", target, *[str(a) for a in argv]])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def interesting(b, n=2) -> list[int]:
    """Samples with both surprise and expectation filters, misclassified ones first."""
    both = (b.num_surprise > 0) & (b.num_expectation > 0)
    order = np.argsort(b.correct[both], kind="stable")
    return [int(i) for i in b.ids[both][order][:n]]


def assert_lists_equal(got, want, layer):
    assert [(d.filter, d.layer) for d in got] == [(w.filter, layer) for w in want]
    np.testing.assert_allclose([d.alpha for d in got], [w.alpha for w in want], rtol=1e-6)
    np.testing.assert_allclose([d.mean for d in got], [w.mean for w in want], rtol=1e-6)
    np.testing.assert_allclose([d.threshold for d in got], [w.threshold for w in want], rtol=1e-6)
    np.testing.assert_allclose([d.deviation for d in got], [w.deviation for w in want], rtol=1e-5, atol=1e-12)


def test_explain_an_indexed_sample_equals_core(ref_client, ref_bundle):
    reference = ref_bundle.reference
    for sample_id in interesting(ref_bundle):
        got = ref_client.surprise(sample_id, include_exemplar_images=True)
        label = int(ref_bundle.meta(sample_id).label)
        alpha = ref_bundle.alpha([sample_id])
        (want,) = surprise_expectation(alpha, [label], reference.stats)
        assert got.sample_id == sample_id and got.label == label and got.layer == reference.layer
        assert (got.high_percentile, got.low_percentile) == (pytest.approx(99.9), pytest.approx(0.1))
        np.testing.assert_array_equal(got.alpha, alpha[0])
        np.testing.assert_allclose(got.class_mean, reference.stats.mean[label], rtol=1e-6)
        assert got.beta == pytest.approx(want.beta, rel=1e-5)
        assert_lists_equal(got.surprise, want.surprise, reference.layer)
        assert_lists_equal(got.expectation, want.expectation, reference.layer)
        for filters in (got.surprise, got.expectation):
            for rank, d in enumerate(filters):
                detailed = rank < 3
                assert (d.region_png is not None) == detailed and bool(d.exemplars) == detailed
                if detailed:
                    assert d.region_mask.shape == (28, 28) and 0 < d.region_mask.sum() < 28 * 28
                    assert d.region_png.startswith(b"\x89PNG") and len(d.exemplars) <= 6
                    assert all(e.label == label and e.image_png.startswith(b"\x89PNG") for e in d.exemplars)
        document = got.to_dict()
        json.dumps(document, allow_nan=False)
        assert document["surprise"][0]["region_mask"]["height"] == 28


def test_explain_an_upload_equals_core_on_the_served_model(ref_client, ref_bundle):
    sample_id = interesting(ref_bundle)[0]
    image = ref_client.sample(sample_id, include_image=True).image_png
    label = int(ref_bundle.meta(sample_id).label)
    got = ref_client.surprise(image=image, label=label, detailed=1, exemplars=2)
    assert got.sample_id is None and got.label == label
    model = ref_bundle.load_model().model
    from PIL import Image

    x = ref_bundle.preprocessing(Image.open(io.BytesIO(image)))[None]
    alpha = filter_importance(model, x, [label], layer=ref_bundle.reference.layer, method="grad_amap")
    np.testing.assert_allclose(got.alpha, alpha[0].numpy(), rtol=1e-5, atol=1e-12)
    (want,) = surprise_expectation(alpha.numpy(), [label], ref_bundle.reference.stats)
    assert [d.filter for d in got.surprise] == [w.filter for w in want.surprise]
    assert [d.filter for d in got.expectation] == [w.filter for w in want.expectation]
    assert got.surprise[0].region_png is not None and len(got.surprise[0].exemplars) <= 2
    assert all(e.image_png is None for e in got.surprise[0].exemplars)  # ids only unless asked


def test_concurrent_explanations_each_get_their_own_answer(ref_server, ref_client, ref_bundle):
    """More callers than model replicas (2 by default): each answer equals its serial one."""
    from concurrent.futures import ThreadPoolExecutor

    ids = interesting(ref_bundle, 4)
    serial = {i: ref_client.surprise(i, include_exemplar_images=True) for i in ids}

    def call(sample_id):
        with Client(ref_server.address, timeout=120) as c:
            return sample_id, c.surprise(sample_id, include_exemplar_images=True)

    with ThreadPoolExecutor(6) as pool:
        for sample_id, got in pool.map(call, ids + ids[:2]):
            assert got == serial[sample_id]


def test_bundle_info_samples_and_neighbours_carry_surprise(ref_client, ref_bundle):
    (info,) = ref_client.index_info()
    reference = ref_bundle.reference
    assert info.reference is not None
    assert (info.reference.dataset, info.reference.layer, info.reference.method) == (
        reference.dataset,
        reference.layer,
        reference.method,
    )
    assert info.reference.num_filters == reference.num_filters and info.reference.num_samples == 600
    sample_id = interesting(ref_bundle)[0]
    row = int(ref_bundle.rows_of([sample_id])[0])
    sample = ref_client.sample(sample_id)
    assert sample.beta == pytest.approx(float(ref_bundle.beta[row]))
    assert (sample.num_surprise, sample.num_expectation) == (
        int(ref_bundle.num_surprise[row]),
        int(ref_bundle.num_expectation[row]),
    )
    found = ref_client.find_similar_failures(sample_id, k=8, beta_below=0.0, only_with_surprise=True)
    assert len(found) > 0
    assert all(n.sample.beta < 0.0 and n.sample.num_surprise > 0 for n in found)
    above = ref_client.find_similar_failures(sample_id, k=8, beta_above=0.0)
    assert all(n.sample.beta > 0.0 for n in above)
    with pytest.raises(InvalidArgument, match="no beta lies between"):
        ref_client.find_similar_failures(sample_id, beta_below=0.0, beta_above=0.5)


def test_bad_requests_are_refused_with_the_documented_codes(ref_client, ref_server, ref_bundle):
    with pytest.raises(NotFound):
        ref_client.surprise(10**9)
    with pytest.raises(InvalidArgument, match="above low_percentile"):
        ref_client.surprise(0, high=5.0, low=10.0)
    with pytest.raises(InvalidArgument, match="detailed"):
        ref_client.surprise(0, detailed=17)
    with pytest.raises(InvalidArgument, match="exemplars"):
        ref_client.surprise(0, exemplars=ref_bundle.reference.exemplars_per_filter + 1)
    with pytest.raises(InvalidArgument, match="segments"):
        ref_client.surprise(0, segments=1001)
    with pytest.raises(InvalidArgument):
        ref_client.surprise(image=b"\x89PNG\r\n\x1a\nnot really", label=1)
    with pytest.raises(InvalidArgument, match="label"):
        ref_client.surprise(image=ref_client.sample(0, include_image=True).image_png, label=10)
    # What the SDK would refuse itself, straight on the wire: the server's own check.
    with grpc.insecure_channel(ref_server.address) as channel:
        stub = pb_grpc.SaliencyServiceStub(channel)
        for request in (
            pb.ExplainSurpriseRequest(sample_id=0, high_percentile=100.0),
            pb.ExplainSurpriseRequest(sample_id=0, low_percentile=-1.0),
            pb.ExplainSurpriseRequest(sample_id=0, max_filters=-1),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ExplainSurprise(request, timeout=60)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgument):
        ref_client.start_suppression(0, segments=[1])
    assert ref_server.proc.poll() is None  # still serving


def test_a_bundle_without_reference_data_is_failed_precondition(client, ref_bundle):
    for call in (
        lambda: client.surprise(0),
        lambda: client.start_suppression(0),
        lambda: client.find_similar_failures(0, beta_below=0.0),
        lambda: client.find_similar_failures(0, only_with_surprise=True),
    ):
        with pytest.raises(FailedPrecondition, match="--reference-data"):
            call()
    (info,) = client.index_info()
    assert info.reference is None
    sample = client.sample(0)
    assert sample.beta is None and sample.num_surprise == 0


def test_suppression_operation_runs_to_completion(ref_client, ref_bundle):
    sample_id = interesting(ref_bundle)[0]
    handle = ref_client.start_suppression(sample_id, segments=[25, 50], blank_counts=[1, 2])
    result = handle.result(timeout=300)
    assert handle.operation.kind == "suppression"
    assert result.reference.sample_id == sample_id and result.layer == ref_bundle.reference.layer
    (want,) = surprise_expectation(
        ref_bundle.alpha([sample_id]), [int(ref_bundle.meta(sample_id).label)], ref_bundle.reference.stats
    )
    assert result.filter == want.surprise[0].filter
    assert {(r.method, r.segments, r.blanked) for r in result.rows} == {
        (m, s, b) for m in ("surprise", "vanilla") for s in (25, 50) for b in (1, 2)
    }
    assert result.fixed_by_surprise == any(r.corrected for r in result.rows if r.method == "surprise")
    assert all(r.corrected == (r.predicted == result.reference.label) for r in result.rows)
    op = ref_client.operation(handle.id)
    assert op.state == "succeeded" and op.result == result  # persisted with its result


def test_suppression_can_be_cancelled(ref_client, ref_bundle):
    sample_id = interesting(ref_bundle)[0]
    handle = ref_client.start_suppression(sample_id, segments=list(range(100, 1000, 60)), blank_counts=[1, 2, 3])
    handle.cancel()
    with pytest.raises(OperationCancelled):
        handle.result(timeout=300)


def test_cli_surprise_suppress_and_similar(run, ref_server, server, ref_bundle, tmp_path):
    sample_id = interesting(ref_bundle)[0]
    out = tmp_path / "surprise"
    status, stdout, _ = run(ref_server.address, "surprise", "--sample", sample_id, "--out", out, "--json")
    assert status == 0
    document = json.loads(stdout)
    assert document["surprise"]["sample_id"] == sample_id
    assert json.loads((out / "surprise.json").read_text()) == document
    regions = sorted(out.glob("*-region.png"))
    strips = sorted(out.glob("*-exemplars.png"))
    detailed = min(3, len(document["surprise"]["surprise"])) + min(3, len(document["surprise"]["expectation"]))
    assert len(regions) == len(strips) == detailed
    status, stdout, _ = run(ref_server.address, "surprise", "--sample", sample_id, "--detailed", "1")
    assert status == 0 and "surprise filters" in stdout and "expectation filters" in stdout and "beta" in stdout
    status, stdout, _ = run(
        ref_server.address, "similar", "--sample", sample_id, "--beta-below", "0", "--only-with-surprise", "--json"
    )
    assert status == 0
    assert all(n["sample"]["beta"] < 0 and n["sample"]["num_surprise"] > 0 for n in json.loads(stdout)["neighbors"])
    status, stdout, _ = run(
        ref_server.address, "suppress", "--sample", sample_id, "--segments", "25", "--blank-counts", "1,2"
    )
    assert status == 0 and "fixed by surprise" in stdout and "vanilla" in stdout
    status, _, stderr = run(server.address, "surprise", "--sample", "0", "--json")
    error = json.loads(stderr)["error"]
    assert status == 1 and error["code"] == "FAILED_PRECONDITION" and "--reference-data" in error["message"]
