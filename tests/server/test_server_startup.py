"""Start-up does not wait for the upload saliency process (issue #13).

The child's imports and model load take as long as the server's own (seconds); the server
now listens without waiting for it and computes uploads itself until it is ready. Shown
causally: a child that never finishes loading (a fake) does not hold up opening the
bundle, and uploads are then answered in the server, equal to --no-saliency-process; the
real child is used once it is ready, and one that cannot load its model is given up.
"""

from __future__ import annotations

import dataclasses
import time

import indexer_helpers as H
import numpy as np
import pytest

from parasal.indexer import IndexJob, run_index
from parasal.server import registry as registry_module
from parasal.server.config import ServerConfig
from parasal.server.queries import ImageQuery, Queries, encode_png
from parasal.server.registry import Registry
from parasal.server.saliency_process import SaliencyProcess


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    images = H.make_image_folder(root / "images", per_class=4)
    out = root / "bundle"
    job = IndexJob(
        data=str(images),
        out=out,
        model=H.FACTORY,
        preprocessing={"channels": "L", "mean": [0.5], "std": [0.5]},
        progress=False,
    )
    run_index(job)
    return out


def _served(bundle_dir, tmp_path, **settings):
    config = ServerConfig(bundles=[("b", bundle_dir)], state_dir=tmp_path / "state", device="cpu", **settings)
    registry = Registry.load(config.validate())
    return registry, Queries(registry, config)


def _image(registry) -> ImageQuery:
    bundle = registry.get().bundle
    return ImageQuery(encode_png(bundle.load_image(int(bundle.ids[0]))), int(bundle.labels[0]))


class _NeverReady:
    """A saliency process still loading its model, for as long as the test lasts."""

    instances: list = []

    def __init__(self, *args, **kwargs):
        self.closed = False
        _NeverReady.instances.append(self)

    def settled(self) -> bool:
        return False

    def wait_ready(self):
        raise AssertionError("start-up waited for the saliency process")

    def compute(self, x, y):
        raise AssertionError("an upload waited for a saliency process that is not ready")

    def close(self):
        self.closed = True


def test_the_bundle_opens_and_uploads_are_answered_while_the_child_loads(tiny_bundle, tmp_path, monkeypatch):
    plain, plain_queries = _served(tiny_bundle, tmp_path / "plain", saliency_process=False)
    monkeypatch.setattr(registry_module, "SaliencyProcess", _NeverReady)
    registry, queries = _served(tiny_bundle, tmp_path / "fast")
    try:
        assert registry.get().batcher._process is _NeverReady.instances[-1]
        got = queries.profile("", _image(registry), top_k=5)
        want = plain_queries.profile("", _image(plain), top_k=5)
        np.testing.assert_allclose(got.vector, want.vector, rtol=1e-5, atol=1e-6)
        assert got.predicted == want.predicted
    finally:
        registry.close()
        plain.close()
    assert _NeverReady.instances[-1].closed


def _until(condition, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_the_child_computes_once_ready(tiny_bundle, tmp_path):
    registry, queries = _served(tiny_bundle, tmp_path)
    try:
        process = registry.get().batcher._process
        _until(process.settled)
        calls = []
        compute = process.compute
        process.compute = lambda x, y: calls.append(len(x)) or compute(x, y)
        queries.profile("", _image(registry))
        assert calls == [1]
    finally:
        registry.close()


def test_a_child_that_cannot_load_its_model_is_given_up_and_uploads_stay_in_the_server(
    registry_bundle_manifest, caplog
):
    process = SaliencyProcess(registry_bundle_manifest)
    try:
        assert not process.settled()  # loading
        _until(lambda: not process.settled() and process.pid is None)  # its ModelMismatch arrived: given up
        assert not process.settled()  # for good: no new child per upload
        assert "failed to start (ModelMismatch" in caplog.text and "computed in the server" in caplog.text
    finally:
        process.close()


@pytest.fixture
def registry_bundle_manifest(tiny_bundle):
    from parasal.indexer import open_bundle

    with open_bundle(tiny_bundle, gpu=False) as bundle:
        model = dataclasses.replace(bundle.manifest.model, fingerprint="0" * 64)
        return dataclasses.replace(bundle.manifest, model=model)
