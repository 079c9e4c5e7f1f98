"""Model specs: every kind loads, the spec reloads the same weights, fingerprints tell weights apart."""

from __future__ import annotations

import json
from pathlib import Path

import indexer_helpers as H
import pytest
import torch

from parasal.indexer.errors import ModelMismatch, ModelSpecError
from parasal.indexer.models import (
    IMAGENET_PREPROCESSING,
    load_model,
    load_model_from_manifest,
    override_preprocessing,
    state_dict_fingerprint,
)
from parasal.indexer.preprocessing import Preprocessing


def test_factory_spec_with_weights_round_trips(tmp_path):
    w = H.save_weights(tmp_path / "w.pt", seed=7)
    m = load_model(H.FACTORY, weights=w, preprocessing={"channels": "L", "mean": [0.5], "std": [0.5]})
    assert (
        not m.model.training
        and m.layout.num_filters == 18
        and [s.name for s in m.layout] == ["conv1", "conv2", "conv3"]
    )
    module = {"module": "indexer_helpers", "file": str(H.HERE / "indexer_helpers.py"), "pythonpath": str(H.HERE)}
    assert m.spec == {"kind": "factory", "factory": H.FACTORY, "weights": str(w.resolve()), "module": module}
    assert json.loads(json.dumps(m.spec)) == m.spec
    again = load_model(m.spec, preprocessing=m.preprocessing)
    assert again.fingerprint == m.fingerprint
    assert load_model(H.FACTORY).fingerprint != m.fingerprint  # factory's own init vs seed-7 weights
    assert m.preprocessing == Preprocessing(channels="L", mean=(0.5,), std=(0.5,))


def test_fingerprint_depends_on_values_not_on_key_order():
    a, b = H.tiny_net(), H.tiny_net()
    assert state_dict_fingerprint(a) == state_dict_fingerprint(b)
    with torch.no_grad():
        b.conv2.weight[0, 0, 0, 0] += 1e-6
    assert state_dict_fingerprint(a) != state_dict_fingerprint(b)


def test_torchvision_spec_infers_num_classes(tmp_path):
    import torchvision

    torch.manual_seed(0)
    w = tmp_path / "r18.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in torchvision.models.resnet18(num_classes=5).state_dict().items()}},
        w,
    )
    m = load_model("torchvision:resnet18", weights=w)
    assert m.spec["num_classes"] == 5 and m.model.fc.out_features == 5
    assert m.preprocessing == IMAGENET_PREPROCESSING
    assert len(m.layout) == 20 and m.layout.num_filters == 4800  # 17 convs + 3 downsample convs
    assert (
        load_model_from_manifest(
            {"model": {"spec": m.spec, "fingerprint": m.fingerprint}, "preprocessing": m.preprocessing.to_dict()}
        ).fingerprint
        == m.fingerprint
    )
    with pytest.raises(ModelMismatch):
        load_model_from_manifest(
            {"model": {"spec": m.spec, "fingerprint": "0" * 64}, "preprocessing": m.preprocessing.to_dict()}
        )
    with pytest.raises(ModelSpecError, match="needs --weights"):
        load_model("torchvision:resnet18")
    with pytest.raises(ModelSpecError, match="unknown torchvision architecture"):
        load_model("torchvision:resnet9000", weights=w)
    with pytest.raises(ModelSpecError, match="do not fit"):
        load_model("torchvision:resnet34", weights=w)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_spec(tmp_path):
    path = tmp_path / "net.pt"
    torch.jit.script(H.tiny_net()).save(str(path))
    for spec in (str(path), f"torchscript:{path}"):
        m = load_model(spec, preprocessing={"channels": "L", "mean": [0.5], "std": [0.5]})
        assert m.is_torchscript and m.spec == {"kind": "torchscript", "path": str(path)}
        assert [(s.name, s.filters) for s in m.layout] == [("conv1", 4), ("conv2", 6), ("conv3", 8)]
        assert m.fingerprint == load_model(H.FACTORY).fingerprint  # same tensors, same fingerprint
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(ModelSpecError, match="not a TorchScript archive"):
        load_model(str(tmp_path / "bad.pt"))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_model_indexes_like_the_eager_one(tmp_path):
    from parasal.indexer.bundle import open_bundle
    from parasal.indexer.pipeline import IndexJob, run_index

    data = H.make_image_folder(tmp_path / "d", per_class=3)
    path = tmp_path / "net.pt"
    torch.jit.script(H.tiny_net()).save(str(path))
    gray = {"channels": "L", "mean": (0.5,), "std": (0.5,)}
    run_index(IndexJob(data=str(data), out=tmp_path / "ts", model=str(path), preprocessing=gray, progress=False))
    run_index(IndexJob(data=str(data), out=tmp_path / "eager", model=H.FACTORY, preprocessing=gray, progress=False))
    with open_bundle(tmp_path / "ts") as a, open_bundle(tmp_path / "eager") as b:
        torch.testing.assert_close(
            torch.from_numpy(a.profiles(a.ids)), torch.from_numpy(b.profiles(b.ids)), rtol=1e-2, atol=1e-2
        )


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nonsense", "unknown model spec"),
        ("no_such_module_xyz:factory", "cannot import"),
        ("indexer_helpers:nope", "cannot import"),
        ("torchscript:/no/such/file.pt", "TorchScript file not found"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        load_model(spec)


def test_preprocessing_overrides():
    base = IMAGENET_PREPROCESSING
    p = override_preprocessing(base, resize=64, crop=56)
    assert (p.resize, p.crop, p.input_shape, p.mean) == (64, 56, None, base.mean)
    with pytest.raises(ModelSpecError, match="--channels L needs --mean with 1 value"):
        override_preprocessing(base, channels="L")
    assert override_preprocessing(base, channels="L", mean=[0.4], std=[0.2]).num_channels == 1
    with pytest.raises(ModelSpecError, match="mean/std need 3 values"):
        override_preprocessing(base, mean=[0.1, 0.2])


def test_demo_fashion_spec():
    from parasal.indexer.zoo import DEMO_PREPROCESSING, DEMO_WEIGHTS_PATH

    if not Path(DEMO_WEIGHTS_PATH).is_file():
        pytest.skip("demo-fashion weights not built yet")
    m = load_model("demo-fashion")
    assert m.spec == {"kind": "demo-fashion"} and m.preprocessing == DEMO_PREPROCESSING
    assert load_model(m.spec).fingerprint == m.fingerprint
