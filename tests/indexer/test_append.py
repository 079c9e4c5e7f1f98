"""Appending data: new ids after the old ones, old vectors untouched, statistics frozen,
a new generation published atomically, readers of the old generation unaffected."""

from __future__ import annotations

import indexer_helpers as H
import numpy as np
import pytest
import torch

from parasal.core.saliency import filter_saliency
from parasal.indexer.bundle import open_bundle
from parasal.indexer.cli import main
from parasal.indexer.datasets import load_image
from parasal.indexer.errors import BundleCorrupt
from parasal.indexer.pipeline import IndexJob, run_index

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}


def test_append_publishes_a_new_generation(tmp_path, capsys):
    first = H.make_image_folder(tmp_path / "first", per_class=8, seed=0)
    H.corrupt_file(first / "c" / "007.png")  # the last id (23) is skipped: new ids must still start after it
    second = H.make_image_folder(tmp_path / "second", per_class=5, seed=1)
    out = tmp_path / "b"
    run_index(
        IndexJob(
            data=str(first),
            out=out,
            model=H.FACTORY,
            preprocessing=GRAY,
            shard_size=10,
            progress=False,
            max_skipped=0.1,
        )
    )

    old = open_bundle(out)
    old_ids, old_rows = old.ids.copy(), old.profiles(old.ids)
    old_stats = (old.stats.count, old.stats.mean.copy(), old.stats.m2.copy())
    q = old_rows[[0, 11]]
    old_hits = old.search(q, 6)
    old_gen_files = H.tree_snapshot(out / "gen-00001")

    assert main(["--append-to", str(out), "--data", str(second), "--shard-size", "6", "--no-progress"]) == 0
    assert "indexed 38 samples" in capsys.readouterr().out  # 23 + 15
    assert (out / "CURRENT").read_text() == "gen-00002\n"
    assert H.tree_snapshot(out / "gen-00001") == old_gen_files  # the old generation is never touched

    # the reader opened before the append still sees generation 1, whole
    assert old.generation == 1 and old.num_samples == 23 and old.search(q, 6) == old_hits
    with open_bundle(out) as new:
        assert new.generation == 2 and new.num_samples == 38 and new.manifest.parent_generation == 1
        assert np.array_equal(new.ids, np.concatenate([old_ids, np.arange(24, 39)]))  # next_id = 24, no collision
        assert np.array_equal(new.profiles(old_ids), old_rows)  # old vectors unchanged
        assert new.stats.count == old_stats[0]  # frozen statistics
        assert np.array_equal(new.stats.mean, old_stats[1]) and np.array_equal(new.stats.m2, old_stats[2])
        assert new.manifest.statistics["frozen_since"] == 2
        assert [d.id_offset for d in new.manifest.datasets] == [0, 24]
        assert new.manifest.skipped[0].id == 23 and new.num_skipped == 1

        # new rows are standardized with the frozen statistics, not their own
        meta = new.meta(30)
        assert meta.uri.startswith(str(second))
        model = new.load_model()
        x = model.preprocessing(load_image(meta.uri))[None]
        raw = filter_saliency(model.model, x, torch.tensor([meta.label]), layout=model.layout).numpy()[0]
        np.testing.assert_allclose(new.profile(30), old.stats.standardize(raw), rtol=2e-3, atol=2e-3)
        with torch.no_grad():
            probs = torch.softmax(model.model(x).double(), dim=1)[0].numpy()  # (K,)
        assert meta.predicted == int(probs.argmax()) and meta.correct == (meta.predicted == meta.label)
        np.testing.assert_allclose(
            [meta.true_confidence, meta.predicted_confidence], [probs[meta.label], probs.max()], rtol=1e-5
        )

        # the exact index covers old and new rows alike
        q2 = new.profiles([30, 2])
        x = new.profiles(new.ids).astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        sims = (q2 / np.linalg.norm(q2, axis=1, keepdims=True)) @ x.T
        want = [new.ids[np.argsort(-s, kind="stable")[:5]].tolist() for s in sims]
        assert [[i for i, _ in h] for h in new.search(q2, 5)] == want
    old.close()


def test_append_refuses_a_changed_model(tmp_path):
    data = H.make_image_folder(tmp_path / "d", per_class=3)
    weights = H.save_weights(tmp_path / "w.pt", seed=3)
    out = tmp_path / "b"
    run_index(IndexJob(data=str(data), out=out, model=H.FACTORY, weights=weights, preprocessing=GRAY, progress=False))
    H.save_weights(weights, seed=4)  # the original file changes: the bundle keeps its own copy
    H.save_weights(out / "gen-00001" / "model.pt", seed=4)  # the bundle's copy is swapped
    more = H.make_image_folder(tmp_path / "more", per_class=2, seed=1)
    with pytest.raises(BundleCorrupt, match="modified: model.pt"):  # checked before it is loaded
        run_index(IndexJob(data=str(more), append_to=out, progress=False))
    assert (out / "CURRENT").read_text() == "gen-00001\n"


def test_a_stray_gen_directory_does_not_break_an_append(tmp_path):
    """A user's own `gen-old` beside the generations is neither counted nor touched."""
    first = H.make_image_folder(tmp_path / "first", per_class=3, seed=0)
    second = H.make_image_folder(tmp_path / "second", per_class=2, seed=1)
    out = tmp_path / "b"
    run_index(IndexJob(data=str(first), out=out, model=H.FACTORY, preprocessing=GRAY, progress=False))
    (out / "gen-old").mkdir()
    (out / "gen-old" / "notes.txt").write_text("mine")
    run_index(IndexJob(data=str(second), append_to=out, progress=False))
    with open_bundle(out) as b:
        assert b.generation == 2 and b.num_samples == 9 + 6
    assert (out / "gen-old" / "notes.txt").read_text() == "mine"
