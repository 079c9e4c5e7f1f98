"""`--reference-data fashion-mnist:train` with the demo model, through the CLI (the bundle other tests serve)."""

from __future__ import annotations

import indexer_helpers as H
import numpy as np
import pytest
import torch

from parasal.core import filter_importance, last_conv_layer
from parasal.indexer import load_model, open_bundle

pytestmark = pytest.mark.fashion_mnist


@pytest.fixture(scope="module")
def reference_bundle(tmp_path_factory):
    return H.build_reference_bundle(tmp_path_factory.mktemp("fashion") / "ref", limit=100, reference_limit=300)


def test_demo_bundle_with_reference_data(reference_bundle):
    loaded = load_model("demo-fashion")
    with open_bundle(reference_bundle) as b:
        ref = b.reference
        example = torch.zeros((1, *b.preprocessing.input_shape))
        assert ref.layer == last_conv_layer(loaded.model, example) and ref.method == "grad_amap"
        assert (ref.dataset, ref.num_samples, ref.info.limit) == ("fashion-mnist:train", 300, 300)
        assert ref.stats.counts.tolist() == [30] * 10  # stratified
        assert ref.num_filters == ref.stats.num_filters == b.alpha([0]).shape[1]
        first = int(ref.ids[0])
        assert ref.uri(first) == f"fashion-mnist:train/{first}"
        x_ref = ref.preprocess(ref.load_image(first))
        assert tuple(x_ref.shape) == tuple(b.preprocessing.input_shape)
        # the stored α of indexed samples is filter_importance of their images
        x = torch.stack([b.preprocessing(b.load_image(i)) for i in range(10)])
        expected = filter_importance(loaded.model, x, torch.as_tensor(b.labels[:10]), layer=ref.layer)
        np.testing.assert_allclose(b.alpha(range(10)), expected.numpy(), rtol=1e-4, atol=1e-9)
        mu = ref.stats.mean[b.labels]  # (100, N)
        np.testing.assert_allclose(b.beta, (b.alpha(b.ids).astype(np.float64) - mu).mean(1), rtol=1e-5, atol=1e-12)
        # every class exemplar is of its class
        for c in range(10):
            ids = ref.exemplars.class_ids[c].reshape(-1)
            assert {ref.label(int(i)) for i in ids if i >= 0} == {c}
        assert ref.exemplars.overall_ids.shape == (ref.num_filters, 6)
