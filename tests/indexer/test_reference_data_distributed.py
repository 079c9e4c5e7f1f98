"""torchrun with 2 CPU processes and --reference-data gives the reference statistics of 1 process."""

from __future__ import annotations

import subprocess
import sys

import indexer_helpers as H
import numpy as np
import pytest

from parasal.indexer import open_bundle
from parasal.indexer.pipeline import IndexJob, run_index, work_dir_for

pytestmark = pytest.mark.slow  # two torchrun worker processes

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}


def test_two_process_torchrun_reference_pass_equals_one_process(tmp_path):
    data = H.make_image_folder(tmp_path / "imgs", per_class=5)
    reference = H.make_image_folder(tmp_path / "ref", per_class=23, seed=1)  # 69 samples: 10 shards of 7, uneven
    H.corrupt_file(reference / "b" / "004.png")  # a skipped reference sample is counted once
    run_index(
        IndexJob(
            data=str(data),
            out=tmp_path / "one",
            model=H.FACTORY,
            preprocessing=GRAY,
            batch_size=4,
            shard_size=7,
            progress=False,
            reference_data=str(reference),
            max_skipped=0.1,
        )
    )
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(H.free_port()), "-m", "parasal.indexer"]
    cmd += ["--model", H.FACTORY, "--channels", "L", "--mean", "0.5", "--std", "0.5", "--data", str(data)]
    cmd += ["--out", str(two), "--batch-size", "4", "--shard-size", "7", "--device", "cpu", "--no-progress"]
    cmd += ["--reference-data", str(reference), "--max-skipped", "0.1"]
    proc = subprocess.run(cmd, env=H.env_with_helpers(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not work_dir_for(two).exists()
    with open_bundle(tmp_path / "one") as a, open_bundle(two) as b:
        assert b.manifest.job["world_size"] == 2
        ra, rb = a.reference, b.reference
        assert ra.info == rb.info and ra.num_samples == 68 and ra.info.skipped == 1
        assert np.array_equal(ra.ids, rb.ids) and np.array_equal(ra.labels, rb.labels)
        for c in range(3):
            np.testing.assert_allclose(ra.stats.values(c), rb.stats.values(c), rtol=1e-6, atol=1e-12)
        assert np.array_equal(ra.exemplars.overall_ids, rb.exemplars.overall_ids)
        assert np.array_equal(ra.exemplars.class_ids, rb.exemplars.class_ids)
        np.testing.assert_allclose(a.alpha(a.ids), b.alpha(b.ids), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(a.beta, b.beta, rtol=1e-5, atol=1e-12)
        assert np.array_equal(a.num_surprise, b.num_surprise)
        assert np.array_equal(a.num_expectation, b.num_expectation)
