"""The server's fast paths against its plain ones, on the real test bundle (in process):
precomputed neighbour lists vs searching, the saliency child process vs computing in the
server, and what happens when that child dies."""

from __future__ import annotations

import dataclasses
import os
import signal

import numpy as np
import pytest
import torch

from parasal.core.saliency import filter_saliency
from parasal.server.config import ServerConfig
from parasal.server.errors import Unavailable
from parasal.server.queries import ImageQuery, Queries, encode_png
from parasal.server.registry import Registry
from parasal.server.saliency_process import SaliencyProcess

pytestmark = pytest.mark.slow  # real server processes / real bundles: part of make test


def queries_for(bundle_dir, tmp_path, **settings):
    config = ServerConfig(
        bundles=[("fashion", bundle_dir)], state_dir=tmp_path / "state", device="cpu", model_replicas=1, **settings
    )
    registry = Registry.load(config.validate())
    return registry, Queries(registry, config)


@pytest.fixture(scope="module")
def fast(bundle_dir, tmp_path_factory):
    registry, queries = queries_for(bundle_dir, tmp_path_factory.mktemp("fast"))
    yield registry, queries
    registry.close()


@pytest.fixture(scope="module")
def plain(bundle_dir, tmp_path_factory):
    registry, queries = queries_for(
        bundle_dir, tmp_path_factory.mktemp("plain"), neighbor_lists=0, saliency_process=False
    )
    yield registry, queries
    registry.close()


def same_answer(a, b):
    assert [n.id for n in a.neighbors] == [n.id for n in b.neighbors]
    np.testing.assert_allclose(
        [n.similarity for n in a.neighbors], [n.similarity for n in b.neighbors], rtol=0, atol=2e-6
    )
    assert a.confusions == b.confusions


def test_listed_neighbours_equal_searched_ones(fast, plain, bundle):
    (registry, lists), (plain_registry, search) = fast, plain
    served = registry.get()
    assert served.neighbor_lists is not None and plain_registry.get().neighbor_lists is None
    labels = sorted({int(v) for v in bundle.labels})
    asks = [
        dict(k=10),
        dict(k=1, include_query=True),
        dict(k=60),
        dict(k=200),
        dict(k=10, only_misclassified=True),
        dict(k=5, true_labels=labels[:2]),
        dict(k=5, only_misclassified=True, predicted_labels=labels[:3]),
    ]
    listed = 0
    for sample_id in bundle.ids[::7]:
        for ask in asks:
            same_answer(lists.find_similar("", int(sample_id), **ask), search.find_similar("", int(sample_id), **ask))
            allowed = (
                bundle.rows_where(
                    misclassified=True if ask.get("only_misclassified") else None,
                    labels=ask.get("true_labels"),
                    predicted=ask.get("predicted_labels"),
                )
                if len(ask) > 1 and "include_query" not in ask
                else None
            )
            listed += (
                served.listed_neighbors(int(sample_id), ask["k"], allowed, exclude_self=not ask.get("include_query"))
                is not None
            )
    assert listed >= 3 * len(bundle.ids[::7])  # most plain asks came from the lists, not searches


def test_saliency_process_equals_computing_in_the_server(fast, plain, bundle):
    (registry, queries), (_, plain_queries) = fast, plain
    served = registry.get()
    assert served.batcher._process is not None
    images = [ImageQuery(encode_png(bundle.load_image(int(i))), int(bundle.meta(int(i)).label)) for i in bundle.ids[:6]]
    for image in images:
        a = queries.profile("", image, top_k=5)
        b = plain_queries.profile("", image, top_k=5)
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-4, atol=1e-4)
        assert (a.predicted, a.top_filters[0].index) == (b.predicted, b.top_filters[0].index)
        assert a.true_confidence == pytest.approx(b.true_confidence, abs=1e-6)
    # And the raw batch against the engine on the served model itself.
    x = torch.stack([served.preprocessing(bundle.load_image(int(i))) for i in bundle.ids[:4]])
    y = torch.tensor([int(v) for v in bundle.labels[:4]])
    raw, logits = served.batcher._process.compute(x.numpy(), y.numpy())
    with served.replica() as model:
        want_raw, want_logits = filter_saliency(model, x, y, layout=served.layout, return_logits=True)
    np.testing.assert_allclose(raw, want_raw.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(logits, want_logits.numpy(), rtol=1e-5, atol=1e-5)


def test_a_killed_saliency_process_fails_its_batch_and_is_replaced(bundle_dir, bundle, tmp_path):
    registry, queries = queries_for(bundle_dir, tmp_path, neighbor_lists=0)
    try:
        process = registry.get().batcher._process
        image = ImageQuery(encode_png(bundle.load_image(int(bundle.ids[0]))), int(bundle.labels[0]))
        before = queries.profile("", image).vector
        first_pid = process.pid
        os.kill(first_pid, signal.SIGKILL)
        with pytest.raises(Unavailable, match="retry"):
            for _ in range(50):  # until the pool has noticed the death
                queries.profile("", image)
        process.wait_ready()
        assert process.pid not in (None, first_pid)
        np.testing.assert_allclose(queries.profile("", image).vector, before, rtol=1e-5, atol=1e-6)
    finally:
        registry.close()


def test_a_saliency_process_that_cannot_load_its_model_says_why(bundle):
    manifest = dataclasses.replace(
        bundle.manifest, model=dataclasses.replace(bundle.manifest.model, fingerprint="0" * 64)
    )
    process = SaliencyProcess(manifest)
    with pytest.raises(RuntimeError, match="failed to start: ModelMismatch: .*has changed since the bundle was built"):
        process.wait_ready()
    assert process.pid is None  # nothing left running
    process.close()


def test_a_batch_the_child_refuses_raises_its_error_and_the_child_carries_on(fast, bundle):
    registry, _ = fast
    process = registry.get().batcher._process
    pid = process.pid
    x = torch.stack([registry.get().preprocessing(bundle.load_image(int(i))) for i in bundle.ids[:2]]).numpy()
    with pytest.raises(ValueError, match="targets must lie in"):
        process.compute(x, np.array([0, 10_000]))
    raw, logits = process.compute(x, np.array([0, 1]))
    assert process.pid == pid and raw.shape == (2, registry.get().layout.num_filters) and logits.shape == (2, 10)
