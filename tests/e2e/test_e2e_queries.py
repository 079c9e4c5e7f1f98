"""Every SaliencyService capability through the SDK against a real server process."""

from __future__ import annotations

import dataclasses
import io

import grpc
import numpy as np
import pytest
from PIL import Image

from parasal.client import InvalidArgument, NotFound, ParasalError
from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow  # real server processes / real bundles: part of make test

SAMPLE = 3


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield pb_grpc.SaliencyServiceStub(channel)
    channel.close()


def misclassified_id(bundle) -> int:
    return int(bundle.ids[np.flatnonzero(~bundle.correct)[0]])


def brute_force(bundle, query: np.ndarray, k: int, *, exclude=(), mask=None, cols=None):
    """Cosine top-k over the stored profiles, in numpy: the oracle for the index."""
    profiles = bundle.profiles(bundle.ids).astype(np.float64)  # (N, F)
    q = query.astype(np.float64)
    if cols is not None:
        profiles, q = profiles[:, cols], q[cols]
    sims = profiles @ q / (np.linalg.norm(profiles, axis=1) * np.linalg.norm(q))
    keep = np.ones(len(sims), bool) if mask is None else mask.copy()
    keep &= ~np.isin(bundle.ids, list(exclude))
    order = [i for i in np.argsort(-sims, kind="stable") if keep[i]][:k]
    return [int(bundle.ids[i]) for i in order], sims[order]


def assert_same_neighbors(got, ids, sims):
    """Same ids in the same order, except where two similarities tie within float16 noise."""
    assert len(got.neighbors) == len(ids)
    np.testing.assert_allclose([n.similarity for n in got.neighbors], sims, atol=2e-3)
    for n, i, s in zip(got.neighbors, ids, sims):
        if n.id != i:
            assert abs(n.similarity - s) < 2e-3, (n.id, i)


def test_index_info(client, bundle):
    (info,) = client.index_info()
    assert info.num_samples == bundle.num_samples == 300
    assert info.num_misclassified == int((~bundle.correct).sum())
    assert info.num_filters == bundle.layout.num_filters and info.index_type == "Flat"
    assert [layer.name for layer in info.layers] == [s.name for s in bundle.layout]
    assert info.class_names[0] == "T-shirt/top" and len(info.class_names) == 10
    assert list(info.input_shape) == [1, 28, 28]
    assert info.model_fingerprint == bundle.fingerprint


def test_sample_with_png(client, bundle):
    sample = client.sample(SAMPLE, include_image=True)
    meta = bundle.meta(SAMPLE)
    assert (sample.id, sample.label, sample.predicted, sample.correct) == (
        SAMPLE,
        meta.label,
        meta.predicted,
        meta.correct,
    )
    assert sample.label_name == bundle.classes[meta.label]
    assert [f.index for f in sample.top_filters] == [i for i, _ in meta.top_filters]
    image = Image.open(io.BytesIO(sample.image_png))
    assert image.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(bundle.load_image(SAMPLE)))
    assert not client.sample(SAMPLE).image_png


def test_profile_by_id_and_by_upload_agree(client, bundle):
    stored = client.profile(sample_id=SAMPLE, full=True, top_k=5)
    np.testing.assert_array_equal(stored.vector, bundle.profile(SAMPLE))
    assert len(stored.top_filters) == 5 and stored.top_filters[0].z == pytest.approx(float(stored.vector.max()))
    image = client.sample(SAMPLE, include_image=True).image_png
    uploaded = client.profile(image=image, label=bundle.meta(SAMPLE).label, full=True)
    assert uploaded.sample_id is None
    np.testing.assert_allclose(uploaded.vector, stored.vector, rtol=2e-3, atol=2e-3)  # float16 storage
    assert uploaded.predicted == stored.predicted
    assert uploaded.true_confidence == pytest.approx(stored.true_confidence, abs=1e-4)


def test_find_similar_by_id_equals_brute_force(client, bundle):
    query = misclassified_id(bundle)
    got = client.find_similar_failures(sample_id=query, k=20)
    ids, sims = brute_force(bundle, bundle.profile(query), 20, exclude=[query])
    assert_same_neighbors(got, ids, sims)
    assert all(n.id != query for n in got.neighbors)
    with_self = client.find_similar_failures(sample_id=query, k=3, exclude_self=False)
    assert with_self.neighbors[0].id == query and with_self.neighbors[0].similarity == pytest.approx(1, abs=1e-3)


def test_neighbor_top_filters_only_when_asked(client, bundle):
    query = misclassified_id(bundle)
    plain = client.find_similar_failures(sample_id=query, k=5)
    full = client.find_similar_failures(sample_id=query, k=5, include_top_filters=True)
    assert [n.id for n in plain.neighbors] == [n.id for n in full.neighbors]
    assert all(n.sample.top_filters == [] for n in plain.neighbors)
    for with_filters, without in zip(full.neighbors, plain.neighbors):
        stored = client.sample(with_filters.id)
        assert with_filters.sample == stored and len(stored.top_filters) > 0
        assert without.sample == dataclasses.replace(stored, top_filters=[])


def test_find_similar_with_filters_and_layers(client, bundle):
    query = misclassified_id(bundle)
    profile = bundle.profile(query)
    got = client.find_similar_failures(sample_id=query, k=10, only_misclassified=True)
    ids, sims = brute_force(bundle, profile, 10, exclude=[query], mask=~bundle.correct)
    assert_same_neighbors(got, ids, sims)
    assert all(not n.sample.correct for n in got.neighbors)
    # confusions: (label, predicted) counts of the neighbors, most frequent first
    pairs = [(n.sample.label, n.sample.predicted) for n in got.neighbors]
    assert [(c.label, c.predicted, c.count) for c in got.confusions][0][2] == max(pairs.count(p) for p in pairs)
    assert sum(c.count for c in got.confusions) == len(got.neighbors)

    label = int(bundle.labels[0])
    by_label = client.find_similar_failures(sample_id=query, k=5, true_labels=[label], predicted_labels=None)
    assert by_label.neighbors and all(n.sample.label == label for n in by_label.neighbors)
    predicted = int(bundle.predicted[0])
    by_pred = client.find_similar_failures(sample_id=query, k=5, predicted_labels=[predicted])
    assert by_pred.neighbors and all(n.sample.predicted == predicted for n in by_pred.neighbors)

    deep = [s for s in bundle.layout][-2:]
    cols = np.concatenate([np.arange(s.offset, s.stop) for s in deep])
    got = client.find_similar_failures(sample_id=query, k=10, layers=[s.name for s in deep])
    ids, sims = brute_force(bundle, profile, 10, exclude=[query], cols=cols)
    assert_same_neighbors(got, ids, sims)


def test_concurrent_queries_each_get_their_own_exact_answer(server, bundle):
    """Concurrent searches are batched on the server (several queries per matrix product,
    grouped by k and filters): each caller must still get exactly its own neighbors."""
    from concurrent.futures import ThreadPoolExecutor

    from parasal.client import Client

    wrong = ~bundle.correct
    queries = [(int(i), k, only) for i, k, only in zip(bundle.ids[:48], [5, 10, 7] * 16, [False, False, True] * 16)]

    def ask(chunk):
        with Client(server.address, timeout=60) as c:
            return [(q, c.find_similar_failures(sample_id=q[0], k=q[1], only_misclassified=q[2])) for q in chunk]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for part in pool.map(ask, [queries[j::8] for j in range(8)]) for a in part]
    assert len(answers) == len(queries)
    for (query, k, only), got in answers:
        ids, sims = brute_force(bundle, bundle.profile(query), k, exclude=[query], mask=wrong if only else None)
        assert_same_neighbors(got, ids, sims)


def test_find_similar_by_image_and_by_vector(client, bundle):
    query = misclassified_id(bundle)
    image = client.sample(query, include_image=True).image_png
    by_image = client.find_similar_failures(image=image, label=bundle.meta(query).label, k=5)
    assert by_image.neighbors[0].id == query and by_image.neighbors[0].similarity > 0.99  # itself, not excluded
    vector = bundle.profile(query)
    by_vector = client.find_similar_failures(vector=vector, k=5)
    ids, sims = brute_force(bundle, vector, 5)
    assert_same_neighbors(by_vector, ids, sims)


def test_explain_input(client, bundle):
    explanation = client.explain_input(sample_id=SAMPLE, top_k=5)
    heatmap = np.asarray(explanation.heatmap)
    assert heatmap.shape == (28, 28) and 0 <= heatmap.min() and heatmap.max() <= 1 and heatmap.max() > 0
    assert len(explanation.filters) == 5
    overlay = Image.open(io.BytesIO(explanation.overlay_png))
    assert overlay.size == (28, 28) and overlay.mode == "RGB"
    chosen = client.explain_input(sample_id=SAMPLE, filters=[0, 7])
    assert sorted(f.index for f in chosen.filters) == [0, 7]


def test_errors_have_codes_and_no_tracebacks(client, stub, bundle):
    grey = np.zeros((28, 28), np.uint8)
    cases = [
        (lambda: client.sample(SAMPLE, bundle="nope"), grpc.StatusCode.NOT_FOUND),
        (lambda: client.sample(10**9), grpc.StatusCode.NOT_FOUND),
        (lambda: client.profile(sample_id=-5), grpc.StatusCode.NOT_FOUND),
        (lambda: client.operation("0000deadbeef"), grpc.StatusCode.NOT_FOUND),
        (lambda: client.profile(image=b"\x89PNG\r\n\x1a\nnot really", label=1), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.profile(image=b"GIF89a...", label=1), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.profile(image=np.zeros((32, 32), np.uint8), label=1), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.profile(image=grey, label=10), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.find_similar_failures(vector=np.ones(5), k=3), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.find_similar_failures(sample_id=SAMPLE, k=1001), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.find_similar_failures(sample_id=SAMPLE, k=0), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.find_similar_failures(sample_id=SAMPLE, layers=["nope"]), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.find_similar_failures(sample_id=SAMPLE, true_labels=[42]), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.explain_input(sample_id=SAMPLE, filters=[10**6]), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for call, code in cases:
        with pytest.raises(ParasalError) as err:
            call()
        assert err.value.code == code, (err.value.code, err.value.details)
        assert "Traceback" not in str(err.value) and 'File "' not in str(err.value)
    assert isinstance(err.value, InvalidArgument)
    # What the SDK refuses before calling, the server refuses too.
    raw = [
        pb.FindSimilarFailuresRequest(vector=pb.ProfileVector(values=[np.nan] * bundle.layout.num_filters)),
        pb.FindSimilarFailuresRequest(sample_id=SAMPLE, k=-1),
        pb.FindSimilarFailuresRequest(vector=pb.ProfileVector(values=[0.0] * bundle.layout.num_filters)),
        pb.FindSimilarFailuresRequest(),
    ]
    for request in raw:
        with pytest.raises(grpc.RpcError) as err:
            stub.FindSimilarFailures(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    with pytest.raises(NotFound):
        client.index_info(bundle="nope")


def test_health_and_reflection(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in (
            "",
            "parasal.v1.SaliencyService",
            "parasal.v1.EvaluationService",
            "parasal.v1.OperationsService",
        ):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {
            "parasal.v1.SaliencyService",
            "parasal.v1.EvaluationService",
            "parasal.v1.OperationsService",
            "grpc.health.v1.Health",
        } <= services
