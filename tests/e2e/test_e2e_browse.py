"""BrowseService end to end: ListSamples, GetConfusionMatrix and ListFailureModes through the SDK,
the raw stub and the CLI against a real server process, checked against the bundle opened in
the test process (a plain filter + sort, counting, the indexer's own failure modes)."""

from __future__ import annotations

import json
from collections import Counter

import grpc
import numpy as np
import pytest

from parasal.client import FailedPrecondition, InvalidArgument
from parasal.client import cli as client_cli
from parasal.indexer.failure_modes import bundle_failure_modes
from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.slow, pytest.mark.fashion_mnist]  # a real server on the demo bundle of 300 images


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield pb_grpc.BrowseServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def metas(bundle):
    return bundle.metas(bundle.ids.tolist())


def cli(server, capsys, *argv) -> tuple[int, str, str]:
    status = client_cli.main(["--target", server.address, *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return status, out, err


def test_listing_pages_through_the_wire_like_a_plain_filter_and_sort(client, bundle, metas):
    names = bundle.classes
    wrong = [m for m in metas if not m.correct]
    expected = [m.id for m in sorted(wrong, key=lambda m: (-m.loss, m.id))]
    found = client.samples(correct=False, order_by="loss", descending=True, page_size=7)
    assert found.total_size == len(wrong)
    got = list(found)
    assert [s.id for s in got] == expected
    assert all(not s.correct and s.label_name == names[s.label] for s in got)
    # labels by name, two ranges, ascending confidence, a limit
    shirts = [m for m in metas if names[m.label] == "Shirt" and 0.1 <= m.true_confidence <= 0.9 and m.loss >= 0.05]
    expected = [m.id for m in sorted(shirts, key=lambda m: (m.true_confidence, m.id))][:5]
    got = client.samples(
        true_labels=["shirt"],
        min_true_confidence=0.1,
        max_true_confidence=0.9,
        min_loss=0.05,
        order_by="true_confidence",
        limit=5,
    )
    assert [s.id for s in got] == expected and got.total_size == len(shirts)
    # id order, descending, predicted label by number, top filters on request
    got = list(client.samples(predicted_labels=[6], descending=True, include_top_filters=True))
    assert [s.id for s in got] == sorted((m.id for m in metas if m.predicted == 6), reverse=True)
    assert all(len(s.top_filters) == 10 for s in got)
    assert not any(s.top_filters for s in client.samples(limit=3))


def test_a_token_from_other_filters_is_refused(stub):
    first = stub.ListSamples(pb.ListSamplesRequest(page_size=5, order_by=pb.SAMPLE_ORDER_LOSS))
    assert first.next_page_token and first.total_size == 300 and len(first.samples) == 5
    following = stub.ListSamples(
        pb.ListSamplesRequest(page_size=5, order_by=pb.SAMPLE_ORDER_LOSS, page_token=first.next_page_token)
    )
    assert following.samples[0].loss >= first.samples[-1].loss
    for request in (
        pb.ListSamplesRequest(page_size=5, page_token=first.next_page_token),
        pb.ListSamplesRequest(page_size=5, order_by=pb.SAMPLE_ORDER_LOSS, page_token="garbage"),
        pb.ListSamplesRequest(page_size=1001),
        pb.ListSamplesRequest(min_loss=2.0, max_loss=1.0),
        pb.ListSamplesRequest(true_labels=[10]),
        pb.ListSamplesRequest(failure_mode=1000),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.ListSamples(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request


def test_beta_filters_need_reference_data(client, stub):
    with pytest.raises(FailedPrecondition, match="--reference-data"):
        list(client.samples(beta_below=0.0))
    with pytest.raises(grpc.RpcError) as info:
        stub.ListSamples(pb.ListSamplesRequest(order_by=pb.SAMPLE_ORDER_BETA))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_the_sdk_checks_its_arguments_before_calling(client):
    for kwargs in (
        dict(order_by="colour"),
        dict(page_size=0),
        dict(page_size=1001),
        dict(min_loss=float("nan")),
        dict(true_labels=["no such class"]),
        dict(correct="yes"),
        dict(limit=0),
    ):
        with pytest.raises(InvalidArgument):
            list(client.samples(**kwargs))
    with pytest.raises(InvalidArgument):
        client.failure_modes(medoids=101)


def test_the_confusion_matrix_counts_the_bundle(client, metas, bundle):
    m = client.confusion_matrix()
    pairs = Counter((s.label, s.predicted) for s in metas)
    assert m.num_classes == 10 and m.num_samples == 300 and m.class_names == bundle.classes
    assert m.counts.dtype == np.int64 and m.counts.tolist() == [[pairs[(t, p)] for p in range(10)] for t in range(10)]
    assert m.accuracy == pytest.approx(sum(s.correct for s in metas) / 300)
    for c in range(10):
        of_class = [s for s in metas if s.label == c]
        assert m.per_class_accuracy[c] == pytest.approx(sum(s.correct for s in of_class) / len(of_class))
    assert "Shirt" in m.table()


def test_failure_modes_are_the_indexers_and_samples_carry_their_mode(client, bundle, metas):
    expected = bundle_failure_modes(bundle)
    modes = client.failure_modes(include_map=True, include_members=True, medoids=3, top_filters=4)
    assert modes.method == expected.method and modes.silhouette == pytest.approx(expected.silhouette)
    assert modes.num_misclassified == int((~bundle.correct).sum()) and modes.num_unassigned == 0
    assert len(modes) == len(expected.modes) >= 2
    for got, want in zip(modes, expected.modes, strict=True):
        assert (got.id, got.size) == (want.id, want.size)
        assert got.member_ids.tolist() == want.member_ids.tolist()
        assert got.medoid_ids.tolist() == want.medoid_ids[:3].tolist()
        assert [(c.label, c.predicted, c.count) for c in got.confusions] == want.confusions
        assert [f.index for f in got.top_filters] == [i for i, _ in want.top_filters[:4]]
        assert got.cohesion == pytest.approx(want.cohesion, abs=1e-6)
    assert sorted(p.id for p in modes.map) == expected.ids.tolist() and modes.map_method.startswith("PCA")
    plain = client.failure_modes()
    assert all(len(m.medoid_ids) == min(5, m.size) and not len(m.member_ids) for m in plain) and not plain.map
    # once computed, listed samples carry their mode
    wanted = {int(i): int(m) for i, m in zip(expected.ids, expected.assignment)}
    for s in client.samples(page_size=1000):
        assert s.failure_mode == wanted.get(s.id)
    wrong_id, right_id = int(expected.ids[0]), int(bundle.ids[bundle.correct][0])
    assert client.sample(wrong_id).failure_mode == wanted[wrong_id]  # GetSample too
    assert client.sample(right_id).failure_mode is None
    members = list(client.samples(failure_mode=1, order_by="loss"))
    assert sorted(s.id for s in members) == modes[1].member_ids.tolist()


def test_the_cli_prints_tables_and_json(server, capsys, bundle):
    status, out, _ = cli(server, capsys, "samples", "--misclassified", "--order-by", "loss", "--desc", "--limit", "3")
    assert status == 0 and "of" in out and "matching samples" in out
    status, out, _ = cli(server, capsys, "samples", "--true-labels", "Shirt", "--json", "--all")
    document = json.loads(out)
    assert status == 0 and document["total_size"] == len(document["samples"])
    assert {s["label_name"] for s in document["samples"]} == {"Shirt"}
    status, out, _ = cli(server, capsys, "confusions", "--json")
    matrix = json.loads(out)["confusion_matrix"]
    assert status == 0 and matrix["num_samples"] == 300 and len(matrix["counts"]) == 10
    status, out, _ = cli(server, capsys, "confusions")
    assert status == 0 and "accuracy" in out and "Ankle boot" in out
    status, out, _ = cli(server, capsys, "modes", "--members")
    assert status == 0 and "failure modes of" in out and "silhouette" in out
    status, out, _ = cli(server, capsys, "modes", "--json")
    assert status == 0 and json.loads(out)["failure_modes"]["modes"]
    status, _, err = cli(server, capsys, "samples", "--mode", "999", "--json")
    assert status == 2 and json.loads(err)["error"]["code"] == "INVALID_ARGUMENT"
    status, _, err = cli(server, capsys, "samples", "--beta-below", "0")
    assert status == 1 and "FAILED_PRECONDITION" in err and "--reference-data" in err
    status, _, err = cli(server, capsys, "samples", "--true-labels", "Spaceship")
    assert status == 2 and "unknown class" in err


@pytest.fixture(scope="module")
def reference_server(start_server, reference_bundle_dir):
    return start_server(bundle=reference_bundle_dir)


def test_beta_listing_on_a_bundle_with_reference_data(reference_server, reference_bundle_dir):
    from parasal.client import Client
    from parasal.indexer import open_bundle

    with open_bundle(reference_bundle_dir) as b, Client(reference_server.address, timeout=120) as client:
        beta, surprise = b.beta, b.num_surprise
        rows = [i for i in range(len(b.ids)) if beta[i] < 0 and surprise[i] > 0]
        expected = [int(b.ids[i]) for i in sorted(rows, key=lambda i: (-beta[i], b.ids[i]))]
        got = list(client.samples(beta_below=0.0, only_with_surprise=True, order_by="beta", descending=True))
        assert [s.id for s in got] == expected
        assert all(s.beta is not None and s.beta < 0 and s.num_surprise > 0 for s in got)
        modes = client.failure_modes()
        assert any(m.shared_surprise for m in modes)  # reference data: shared surprise filters are counted
        for m in modes:
            counts = [f.count for f in m.shared_surprise]
            assert counts == sorted(counts, reverse=True) and all(0 < c <= m.size for c in counts)
            assert all(f.layer == b.reference.layer for f in m.shared_surprise)
