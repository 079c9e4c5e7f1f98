"""The public surface of parasal.indexer (as tests/client/test_client_exports.py) and a cheap import."""

from __future__ import annotations

import dataclasses
import importlib
import json
import pickle
import subprocess
import sys
import textwrap

import indexer_helpers as H
import pytest

import parasal.indexer
from parasal.indexer import IndexJob, open_bundle, run_index


def test_every_exported_name_resolves_to_its_private_definition():
    exported = parasal.indexer.__all__
    assert len(set(exported)) == len(exported), "duplicates in __all__"
    assert exported == sorted(exported) and set(exported) == set(parasal.indexer._EXPORTS)
    for name in exported:
        member = getattr(parasal.indexer, name)
        module = importlib.import_module(f"parasal.indexer.{parasal.indexer._EXPORTS[name]}")
        assert getattr(module, name) is member, name
    for name in (
        "open_bundle",
        "Bundle",
        "Manifest",
        "SampleMeta",
        "load_model",
        "LoadedModel",
        "model_display_name",
        "IndexJob",
        "run_index",
        "open_dataset",
        "load_image",
        "Preprocessing",
        "cosine_top_k",
        "IndexerError",
        "BundleError",
        "BundleCorrupt",
        "ModelMismatch",
        "SampleNotFound",
        "NoReferenceData",
        "ReferenceData",
        "ReferenceInfo",
    ):
        assert name in exported, name


def test_unknown_names_raise_attribute_error_and_submodules_still_import():
    try:
        parasal.indexer.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("expected AttributeError")
    from parasal.indexer import faiss_index, scoring  # submodules are not shadowed by the lazy exports

    assert callable(faiss_index.build_index) and callable(scoring.cosine_top_k)
    assert set(parasal.indexer.__all__) <= set(dir(parasal.indexer))


IMPORT_SCRIPT = textwrap.dedent(
    """
    import sys
    import parasal.indexer
    import parasal.indexer.errors
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"faiss", "lmdb", "torch"})
    assert not heavy, heavy
    from parasal.indexer import SampleNotFound, model_display_name
    assert model_display_name({"kind": "torchvision", "arch": "resnet50"}) == "torchvision:resnet50"
    print("cheap ok")
    """
)


def test_importing_the_package_or_its_errors_loads_no_faiss_lmdb_or_torch():
    done = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cheap ok" in done.stdout


def test_model_display_name_spells_specs_as_users_write_them():
    name = parasal.indexer.model_display_name
    assert name({"kind": "demo-fashion"}) == "demo-fashion"
    assert name({"kind": "demo-fashion", "weights": "/w.pt"}) == "demo-fashion"
    assert name({"kind": "torchvision", "arch": "resnet18", "weights": "/w.pt"}) == "torchvision:resnet18"
    assert name({"kind": "torchscript", "path": "/m.pt"}) == "torchscript:/m.pt"
    assert name({"kind": "factory", "factory": "pkg.mod:make"}) == "pkg.mod:make"


@pytest.fixture(scope="module")
def built_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    data = H.make_image_folder(root / "imgs", per_class=3)
    res = run_index(
        IndexJob(
            data=str(data),
            out=root / "b",
            model=H.FACTORY,
            shard_size=4,
            progress=False,
            preprocessing={"channels": "L", "mean": (0.5,), "std": (0.5,)},
        )
    )
    return res.bundle


def test_manifest_parses_the_json_and_pickles(built_bundle):
    built_manifest_dict = json.loads((built_bundle / "gen-00001" / "manifest.json").read_text())
    m = parasal.indexer.Manifest.from_dict(built_manifest_dict)
    with open_bundle(built_bundle) as b:
        assert b.manifest == m
    assert m.generation == 1 and m.counts.samples == built_manifest_dict["counts"]["samples"]
    assert m.model.fingerprint == built_manifest_dict["model"]["fingerprint"]
    assert m.model.name == H.FACTORY and m.layout.num_filters == m.num_filters
    assert m.preprocessing.channels == "L" and m.classes == built_manifest_dict["datasets"][0]["description"]["classes"]
    assert m.dataset_specs == [d["spec"] for d in built_manifest_dict["datasets"]]
    assert m.index.type == built_manifest_dict["index"]["type"] and m.created == built_manifest_dict["created"]
    assert set(m.files) == set(built_manifest_dict["files"])
    assert pickle.loads(pickle.dumps(m)) == m
    changed = dataclasses.replace(m, model=dataclasses.replace(m.model, fingerprint="0" * 64))
    assert changed.model.fingerprint == "0" * 64 and m.model.fingerprint != changed.model.fingerprint
