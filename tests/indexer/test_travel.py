"""Bundles that travel (issue #13): the weights (or the TorchScript archive) are kept in the
bundle, listed with their sha256 and checked by the fingerprint, so a bundle whose original
weights were moved or deleted still opens and loads its model; ``weights=`` overrides the
copy, and a factory that cannot be imported says to set PYTHONPATH (the manifest records where
its module came from)."""

from __future__ import annotations

import hashlib
import shutil

import indexer_helpers as H
import pytest
import torch

from parasal.indexer.bundle import open_bundle
from parasal.indexer.errors import BundleCorrupt, ModelMismatch, ModelSpecError
from parasal.indexer.models import load_model
from parasal.indexer.pipeline import IndexJob, run_index

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_moved_bundle_loads_its_own_weights_after_the_originals_are_deleted(tmp_path):
    data = H.make_image_folder(tmp_path / "d", per_class=2)
    weights = H.save_weights(tmp_path / "w2.pth", seed=5)
    original = sha256(weights)
    run_index(
        IndexJob(
            data=str(data), out=tmp_path / "b", model=H.FACTORY, weights=weights, preprocessing=GRAY, progress=False
        )
    )
    moved = tmp_path / "elsewhere" / "b"
    moved.parent.mkdir()
    shutil.move(tmp_path / "b", moved)
    weights.unlink()
    with open_bundle(moved) as b:
        m = b.manifest
        assert m.model.file == "model.pt" and m.files["model.pt"].sha256 == original
        assert m.model.weights == str(weights)  # the spec still says where it was built from
        loaded = b.load_model()
        assert loaded.fingerprint == b.fingerprint and m.model.pythonpath == str(H.HERE)
    # the explicit override: checked against the fingerprint
    other = H.save_weights(tmp_path / "other.pth", seed=6)
    with open_bundle(moved, weights=other) as b, pytest.raises(ModelMismatch, match="fingerprint"):
        b.load_model()
    copy = shutil.copy(moved / "gen-00001" / "model.pt", tmp_path / "same.pth")
    with open_bundle(moved, weights=copy) as b:
        assert b.load_model().fingerprint == b.fingerprint
    # appends reuse the bundle's copy (the original is gone)
    more = H.make_image_folder(tmp_path / "more", per_class=1, seed=2)
    run_index(IndexJob(data=str(more), append_to=moved, progress=False))
    with open_bundle(moved) as b:
        assert b.generation == 2 and b.manifest.files["model.pt"].sha256 == original
        assert b.load_model().fingerprint == b.fingerprint
    # a damaged copy is refused when the bundle opens
    (moved / "gen-00002" / "model.pt").write_bytes(b"\0" * (moved / "gen-00002" / "model.pt").stat().st_size)
    with pytest.raises(BundleCorrupt, match="sha256 of model.pt"):
        open_bundle(moved)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_a_torchscript_bundle_keeps_its_archive(tmp_path):
    data = H.make_image_folder(tmp_path / "d", per_class=1)
    path = tmp_path / "net.pt"
    torch.jit.script(H.tiny_net()).save(str(path))
    run_index(IndexJob(data=str(data), out=tmp_path / "b", model=str(path), preprocessing=GRAY, progress=False))
    path.unlink()
    with open_bundle(tmp_path / "b") as b:
        assert b.load_model().is_torchscript and b.load_model().fingerprint == b.fingerprint


def test_the_embedded_demo_weights_are_not_copied(tmp_path):
    from parasal.indexer.manifest import MODEL_FILE

    data = H.make_image_folder(tmp_path / "d", per_class=1)
    run_index(IndexJob(data=str(data), out=tmp_path / "b", model="demo-fashion", progress=False))
    assert not (tmp_path / "b" / "gen-00001" / MODEL_FILE).exists()


def test_a_factory_that_cannot_be_imported_says_to_set_pythonpath():
    with pytest.raises(ModelSpecError, match=r"cannot import mymodels_xyz:r18: .*PYTHONPATH=\. from that directory"):
        load_model("mymodels_xyz:r18")
    recorded = {
        "kind": "factory",
        "factory": "mymodels_xyz:r18",
        "module": {"module": "mymodels_xyz", "file": "/src/mymodels_xyz.py", "pythonpath": "/src"},
    }
    with pytest.raises(ModelSpecError, match=r"built with it from /src/mymodels_xyz.py: run with PYTHONPATH=/src"):
        load_model(recorded)
