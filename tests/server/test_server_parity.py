"""The server reads an upload exactly as the indexer read the same file: a grayscale PNG
for an RGB model gives the profile stored for it; explanations are drawn on the original
image; layer names may be module prefixes; both evaluations default to 10 neighbours.
One tiny real bundle, in process."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from types import SimpleNamespace

import indexer_helpers as H
import numpy as np
import pytest
from PIL import Image

from parasal.core import FilterLayout, LayerSpan
from parasal.indexer.pipeline import IndexJob, run_index
from parasal.server.config import ServerConfig
from parasal.server.errors import InvalidArgument
from parasal.server.evaluations import DEFAULT_NEIGHBORS, Evaluations, PruningParams
from parasal.server.queries import ImageQuery, Queries, check_layers
from parasal.server.registry import Registry

pytestmark = pytest.mark.slow  # indexes a bundle (a few seconds on 2 cores)


@pytest.fixture(scope="module")
def grey_rgb(tmp_path_factory):
    """A bundle of 28x28 grayscale PNGs (mode L) indexed for an RGB model taking 32x32, served in process."""
    tmp = tmp_path_factory.mktemp("parity")
    data = H.make_image_folder(tmp / "imgs", per_class=2, mode="L")
    out = tmp / "bundle"
    # Resized 28 -> 32, as the model did: explanations must undo it.
    job = IndexJob(data=str(data), out=out, model="indexer_helpers:tiny_net_rgb", preprocessing={"resize": 32})
    run_index(dataclasses.replace(job, progress=False))
    config = ServerConfig(
        bundles=[("grey", out)],
        state_dir=tmp / "state",
        device="cpu",
        model_replicas=1,
        neighbor_lists=0,
        saliency_process=False,
    )
    registry = Registry.load(config.validate())
    yield registry, Queries(registry, config), data
    registry.close()


def stored_file(served, data: Path, sample_id: int) -> Path:
    uri = served.meta(sample_id).uri
    matches = [p for p in data.rglob("*.png") if uri.endswith(str(p.relative_to(data)))]
    assert len(matches) == 1, uri
    return matches[0]


def test_a_grayscale_png_uploaded_gives_the_profile_it_was_indexed_with(grey_rgb):
    registry, queries, data = grey_rgb
    served = registry.get()
    assert served.preprocessing.channels == "RGB"
    path = stored_file(served, data, 0)
    assert Image.open(path).mode == "L"
    uploaded = queries.profile("", ImageQuery(path.read_bytes(), int(served.meta(0).label)), top_k=5)
    indexed = queries.profile("", 0, top_k=5)
    # Stored profiles are float16: equal to its precision.
    np.testing.assert_allclose(uploaded.vector, indexed.vector, rtol=2e-3, atol=2e-3)
    assert uploaded.predicted == indexed.predicted
    assert [f.index for f in uploaded.top_filters] == [f.index for f in indexed.top_filters]


def test_the_explanation_is_drawn_on_the_original_image(grey_rgb):
    registry, queries, data = grey_rgb
    served = registry.get()
    image = served.bundle.load_image(0)
    explanation = queries.explain("", 0, top_k=3)
    overlay = Image.open(io.BytesIO(explanation.overlay_png))
    assert overlay.size == image.size  # what `sample --image-out` writes, pixel for pixel
    assert image.size == (28, 28) and explanation.heatmap.shape == (32, 32)


LAYOUT = FilterLayout(
    (
        LayerSpan("stem", "conv2d", 4, 0),
        LayerSpan("layer4.0.conv1", "conv2d", 4, 4),
        LayerSpan("layer4.0.conv2", "conv2d", 4, 8),
        LayerSpan("layer40.conv", "conv2d", 4, 12),
    )
)


def test_layer_names_may_be_module_prefixes():
    served = SimpleNamespace(layout=LAYOUT)
    assert check_layers(served, ["layer4"]) == ["layer4.0.conv1", "layer4.0.conv2"]  # not layer40
    assert check_layers(served, ["layer4.0.conv2", "layer4."]) == ["layer4.0.conv2", "layer4.0.conv1"]
    assert check_layers(served, ["stem"]) == ["stem"]
    with pytest.raises(InvalidArgument, match="unknown layer.*'layer5'.*module name"):
        check_layers(served, ["layer5"])


def test_pruning_defaults_to_the_neighbours_fine_tuning_uses(grey_rgb):
    """0 (unset) neighbours means 10 for both evaluations, as the proto says of both."""
    registry, queries, _ = grey_rgb
    served = registry.get()
    run_now = SimpleNamespace(start=lambda kind, name, job: job)  # the job itself, run here
    evaluations = Evaluations(registry, queries, run_now, SimpleNamespace(max_neighbors=1000))
    job = evaluations.start_pruning(PruningParams(bundle="", reference=0, counts=[1], selections=["most"]))
    result = job(lambda fraction, message: None, lambda: False)
    misclassified = [i for i in range(1, served.bundle.num_samples) if not served.meta(i).correct]
    assert len(result.neighbor_ids) == min(DEFAULT_NEIGHBORS, len(misclassified)) > 0
