"""Every experiment end to end on a small real bundle with reference data (300 Fashion-MNIST
test images, statistics over 600 training images): tidy points, strict JSON, a PNG, seeded
determinism, cancel, the caller's model untouched, and the preconditions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from parasal.core import Cancelled
from parasal.server.experiments import NAMES, Context, run_experiment

pytestmark = pytest.mark.fashion_mnist

#: Small sizes per experiment (references, options) so each runs in seconds.
SMALL = {
    "pruning": (4, {"counts": "1,5"}),
    "finetune": (2, {"counts": "1,5", "k": "3", "collateral": "20", "collateral_references": "1", "random_draws": "2"}),
    "neighbors": (5, {}),
    "masking": (4, {}),
    "sanity": (2, {}),
    "ranking": (20, {"steps": "4", "methods": "grad_amap,random"}),
    "beta": (0, {}),
    "suppression": (3, {"segments": "25", "blank_counts": "1,3"}),
}


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    from indexer_helpers import build_reference_bundle

    from parasal.indexer import open_bundle

    path = build_reference_bundle(tmp_path_factory.mktemp("exp") / "ref", limit=300, reference_limit=600)
    with open_bundle(path, gpu=False) as bundle:
        model = bundle.load_model().model
        yield bundle, model, Context(bundle, model)


@pytest.mark.parametrize("name", NAMES)
def test_each_experiment_runs_on_a_small_bundle(opened, name):
    bundle, model, ctx = opened
    before = {k: v.clone() for k, v in model.state_dict().items()}
    references, options = SMALL[name]
    seen = []
    out = run_experiment(
        name,
        bundle,
        model,
        references=references,
        seed=3,
        options=options,
        context=ctx,
        progress=lambda fraction, message: seen.append(fraction),
    )
    assert out.points and out.plot_png.startswith(b"\x89PNG")
    assert seen and seen == sorted(seen) and 0 <= seen[0] and seen[-1] == pytest.approx(1.0)  # progress
    doc = json.loads(out.json)
    assert doc["experiment"] == name and doc["seed"] == 3 and doc["references"] == out.references
    json.dumps(doc, allow_nan=False)
    for p in doc["points"]:
        assert {"selection", "count", "metric", "mean", "ci_low", "ci_high", "n"} <= set(p)
        if p["ci_low"] is not None:
            assert p["ci_low"] <= p["mean"] + 1e-9 and p["mean"] <= p["ci_high"] + 1e-9
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_same_seed_gives_the_same_points_and_another_seed_other_references(opened):
    bundle, model, ctx = opened

    def run(seed):
        return run_experiment("masking", bundle, model, references=4, seed=seed, context=ctx)

    a, b, c = run(5), run(5), run(6)
    assert [p.to_dict() for p in a.points] == [p.to_dict() for p in b.points]
    assert [p.to_dict() for p in a.points] != [p.to_dict() for p in c.points]


def test_pruning_random_rows_differ_between_references(opened):
    """The random baseline is drawn per reference: two references' random rows are not one set."""
    from parasal.core.evaluation import random_filters, reference_key

    bundle, _, _ = opened
    ids = bundle.ids[~bundle.correct][:2]
    sets = [random_filters(bundle.num_filters, 5, seed=0, key=reference_key(int(i))) for i in ids]
    assert sets[0] != sets[1]


def test_an_experiment_stops_when_asked(opened):
    bundle, model, _ = opened
    calls = []

    def progress(fraction, message):
        calls.append(fraction)

    with pytest.raises(Cancelled):
        run_experiment(
            "pruning",
            bundle,
            model,
            references=6,
            options={"counts": "1"},
            progress=progress,
            should_stop=lambda: len(calls) >= 2,
        )
    assert len(calls) == 2


def test_the_reference_experiments_need_reference_data():
    from parasal.indexer.errors import NoReferenceData
    from parasal.server.experiments import check_request

    class NoRef:
        has_reference = False
        name = "plain"

    for name in ("beta", "suppression"):
        with pytest.raises(NoReferenceData, match="--reference-data"):
            check_request(name, NoRef(), {})


def test_references_beyond_the_pool_are_refused(opened):
    from parasal.server.errors import InvalidArgument
    from parasal.server.experiments.service import check_references

    bundle, _, _ = opened
    check_references("masking", bundle, int(bundle.num_misclassified))
    with pytest.raises(InvalidArgument):
        check_references("masking", bundle, int(bundle.num_misclassified) + 1)
    with pytest.raises(InvalidArgument):
        check_references("ranking", bundle, -1)
    check_references("ranking", bundle, int(bundle.num_samples))
    assert np.all(bundle.ids >= 0)
