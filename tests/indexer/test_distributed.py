"""torchrun with 2 CPU processes (gloo) gives the bundle of 1 process: same ids, statistics
(<= 1e-6 relative) and neighbour lists, with shards split j % world over uneven sizes."""

from __future__ import annotations

import subprocess
import sys

import indexer_helpers as H
import numpy as np
import pytest

from parasal.indexer.bundle import open_bundle
from parasal.indexer.pipeline import IndexJob, run_index, work_dir_for
from parasal.indexer.shards import ShardPlan

pytestmark = pytest.mark.slow  # two torchrun worker processes

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}


def test_shard_plan_covers_every_id_once_for_any_world_size():
    plan = ShardPlan(num_samples=33, shard_size=7, id_offset=100)
    for world in (1, 2, 3, 8):
        parts = [plan.for_rank(r, world) for r in range(world)]
        ids = sorted(i for part in parts for sh in part for i in range(sh.start, sh.stop))
        assert ids == list(range(33))
        assert [sh.index for sh in parts[0]] == list(range(0, 5, world))


def test_two_process_torchrun_equals_one_process(tmp_path):
    data = H.make_image_folder(tmp_path / "imgs", per_class=11)
    H.corrupt_file(data / "a" / "003.png")
    one = run_index(
        IndexJob(
            data=str(data),
            out=tmp_path / "one",
            model=H.FACTORY,
            preprocessing=GRAY,
            batch_size=4,
            shard_size=7,
            progress=False,
            max_skipped=0.1,
        )
    )
    two = tmp_path / "two"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(H.free_port()),
        "-m",
        "parasal.indexer",
        "--model",
        H.FACTORY,
        "--channels",
        "L",
        "--mean",
        "0.5",
        "--std",
        "0.5",
        "--data",
        str(data),
        "--out",
        str(two),
        "--max-skipped",
        "0.1",
        "--batch-size",
        "4",
        "--shard-size",
        "7",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, env=H.env_with_helpers(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "indexed 32 samples (" in proc.stdout and not work_dir_for(two).exists()
    with open_bundle(tmp_path / "one") as a, open_bundle(two) as b:
        assert b.manifest.job["world_size"] == 2 and a.manifest.job["world_size"] == 1
        assert np.array_equal(a.ids, b.ids) and a.num_samples == one.samples == 32
        assert a.manifest.skipped == b.manifest.skipped and a.manifest.skipped[0].id == 3
        assert a.stats.count == b.stats.count
        np.testing.assert_allclose(b.stats.mean, a.stats.mean, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(b.stats.m2, a.stats.m2, rtol=1e-6, atol=1e-12)
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.predicted, b.predicted)
        q = a.profiles(a.ids)
        ha, hb = a.search(q, 5), b.search(q, 5)
        assert [[i for i, _ in h] for h in ha] == [[i for i, _ in h] for h in hb]
        np.testing.assert_allclose([[s for _, s in h] for h in ha], [[s for _, s in h] for h in hb], atol=1e-3)
