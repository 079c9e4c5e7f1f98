"""TorchScript archives of torchvision classifiers take the batched engine (issue #13).

A scripted or traced resnet18 loads as its eager twin (models.eager_twin): same state dict
(so the same fingerprint and filter layout as the archive), same logits; its batched
saliency is compared with the slow, obviously-correct per-sample loop run on the archive
itself. Archives without a twin (a changed forward, a custom model) stay scripted and keep
the slow path.
"""

from __future__ import annotations

import indexer_helpers as H
import numpy as np
import pytest
import torch
from PIL import Image

from parasal.core import filter_saliency
from parasal.core.reference import per_sample_filter_saliency
from parasal.indexer import IndexJob, open_bundle, run_index
from parasal.indexer.models import load_model, model_layout, state_dict_fingerprint

torchvision = pytest.importorskip("torchvision")
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
]


def _resnet18(num_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=num_classes).eval()


@pytest.fixture(scope="module", params=["script", "trace"])
def archive(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("ts") / f"r18-{request.param}.pt"
    model = _resnet18()
    scripted = (
        torch.jit.script(model) if request.param == "script" else torch.jit.trace(model, torch.randn(1, 3, 64, 64))
    )
    scripted.save(str(path))
    return path


def test_an_archive_of_a_torchvision_classifier_loads_as_its_eager_twin(archive):
    loaded = load_model(f"torchscript:{archive}")
    scripted = torch.jit.load(str(archive))
    assert not loaded.is_torchscript and type(loaded.model) is torchvision.models.ResNet
    assert loaded.spec == {"kind": "torchscript", "path": str(archive)}  # the spec is the archive's
    assert loaded.fingerprint == state_dict_fingerprint(scripted)
    assert loaded.layout == model_layout(scripted)


def test_the_twins_batched_saliency_equals_the_per_sample_loop_on_the_archive(archive):
    loaded = load_model(f"torchscript:{archive}")
    scripted = torch.jit.load(str(archive)).eval()
    x = torch.randn((3, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 2, 1])
    fast = filter_saliency(loaded.model, x, y, layout=loaded.layout)  # (3, F)
    slow = per_sample_filter_saliency(scripted, x, y, layout=loaded.layout)  # the oracle, on the archive
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-7)
    # The twin itself is exact: the same loop on it gives the archive's numbers bit for bit.
    assert torch.equal(per_sample_filter_saliency(loaded.model, x, y, layout=loaded.layout), slow)


class ResNet(torchvision.models.ResNet):  # the same name and weights, another function
    def _forward_impl(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1)) * 2.0


def test_an_archive_whose_forward_differs_stays_scripted(tmp_path):
    torch.manual_seed(0)
    model = ResNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=3).eval()
    path = tmp_path / "changed.pt"
    torch.jit.script(model).save(str(path))
    assert load_model(str(path)).is_torchscript


@pytest.fixture(scope="module")
def archive_bundle(archive, tmp_path_factory):
    """A bundle indexed from the archive: 3 classes x 1 RGB 32x32 PNG; (bundle dir, notes said)."""
    root = tmp_path_factory.mktemp("indexed")
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (root / "images" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "images" / cls / "0.png")
    notes: list[str] = []
    job = IndexJob(data=str(root / "images"), out=root / "b", model=str(archive), progress=False, notify=notes.append)
    run_index(job)
    return root / "b", notes


def test_indexing_an_archive_takes_the_batched_engine(archive_bundle):
    out, notes = archive_bundle
    assert not [n for n in notes if n.startswith("slow path")], notes
    with open_bundle(out) as bundle:
        assert bundle.manifest.job["saliency"] == "filter_saliency"
        assert bundle.load_model().fingerprint == bundle.fingerprint


def test_a_served_archive_answers_uploads_as_it_indexed_them(archive_bundle, tmp_path):
    """Scripted modules fail the server's upload saliency ("the module is RecursiveScriptModule");
    the twin answers, and an indexed image uploaded again gets its stored profile back."""
    from parasal.server.config import ServerConfig
    from parasal.server.queries import ImageQuery, Queries, encode_png
    from parasal.server.registry import Registry

    out, _ = archive_bundle
    config = ServerConfig(bundles=[("b", out)], state_dir=tmp_path / "state", device="cpu", saliency_process=False)
    registry = Registry.load(config.validate())
    try:
        bundle = registry.get().bundle
        sample = int(bundle.ids[0])
        upload = ImageQuery(encode_png(bundle.load_image(sample)), int(bundle.labels[0]))
        got = Queries(registry, config).profile("", upload)
        np.testing.assert_allclose(got.vector, bundle.profile(sample), rtol=2e-3, atol=2e-3)  # stored as float16
    finally:
        registry.close()


def test_custom_archives_keep_the_slow_path(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.script(H.tiny_net()).save(str(path))
    assert load_model(str(path)).is_torchscript
