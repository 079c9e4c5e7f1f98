"""Re-running an interrupted append (issue #12 §3): killed before any one of its file-system
mutations, the same command then gives exactly the bundle of one clean append (same ids,
byte-identical data files, the same manifest but for its timestamp, no extra file in or
beside the bundle); re-running a finished append changes nothing; one append at a time."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import indexer_helpers as H
import kill_points as K
import numpy as np
import pytest
import torch

from parasal.indexer import IndexerError, IndexJob, open_bundle, run_index
from parasal.indexer.appends import AppendLock

pytestmark = pytest.mark.slow  # a child process per kill point (forked from one server: ~0.3 s each)

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}
OPTIONS = {"shard_size": 4, "batch_size": 4, "progress": False}


def append_job(data: Path, bundle: Path) -> dict:
    return {"data": str(data), "append_to": str(bundle), **OPTIONS}


def state(bundle: Path) -> dict:
    """What must equal a clean append's: files in and beside the bundle (names), the
    current generation's data bytes, and its manifest without the timestamp and seal."""
    gen = bundle / (bundle / "CURRENT").read_text().strip()
    manifest = json.loads((gen / "manifest.json").read_text())
    for key in ("created", "manifest_sha256"):
        manifest.pop(key)
    with open_bundle(bundle) as b:
        ids = b.ids.tolist()
    return {
        "files": sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*")),
        "siblings": sorted(p.name for p in bundle.parent.iterdir()),
        "data": H.data_hashes(bundle),
        "manifest": manifest,
        "ids": ids,
    }


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recovery")
    first = H.make_image_folder(tmp / "first", per_class=4, seed=0)
    second = H.make_image_folder(tmp / "second", per_class=3, seed=1)
    base = tmp / "base" / "b"
    base.parent.mkdir()
    run_index(IndexJob(data=str(first), out=base, model=H.FACTORY, preprocessing=GRAY, **OPTIONS))
    clean = tmp / "clean" / "b"
    shutil.copytree(base, clean)
    run_index(IndexJob(**append_job(second, clean)))
    # the same append in a child that is never killed: the list of its mutations
    counted = tmp / "counted" / "b"
    shutil.copytree(base, counted)
    assert K.run_killed_at(0, str(tmp / "steps.json"), torch.get_num_threads(), **append_job(second, counted)) == 0
    steps = json.loads((tmp / "steps.json").read_text())
    assert state(counted) == state(clean)
    return {"tmp": tmp, "first": first, "second": second, "base": base, "clean": state(clean), "steps": steps}


def fresh(setting, name: str) -> Path:
    bundle = setting["tmp"] / name / "b"
    shutil.copytree(setting["base"], bundle)
    return bundle


def test_a_rerun_after_a_kill_at_any_step_gives_the_clean_append(setting):
    steps = setting["steps"]
    # the two kill points of the issue are among the swept ones
    current = next(i for i, s in enumerate(steps) if s.startswith("replace .CURRENT.tmp-"))
    assert steps[current - 1].startswith("rename .gen-00002.staging-")  # published, CURRENT not yet swapped
    assert any(s.startswith(("rmtree b.partial", "unlink shard-")) for s in steps[current + 1 :])  # clean-up
    failures = []
    for n in range(1, len(steps) + 1):
        bundle = fresh(setting, f"kill-{n:02d}")
        code = K.run_killed_at(
            n, str(bundle.parent / "steps.json"), torch.get_num_threads(), **append_job(setting["second"], bundle)
        )
        assert code == -signal.SIGKILL, f"step {n} ({steps[n - 1]}): exit {code}"
        result = run_index(IndexJob(**append_job(setting["second"], bundle)))  # the same command, again
        got = state(bundle)
        got["siblings"] = [s for s in got["siblings"] if s != "steps.json"]
        if got != setting["clean"]:
            diff = sorted(k for k in got if got[k] != setting["clean"][k])
            failures.append(f"killed before step {n} ({steps[n - 1]}): {diff} differ; {got['files']}")
        assert result.samples == 21 and result.generation == 2
    assert not failures, "\n".join(failures)


def test_rerunning_a_finished_append_changes_nothing(setting, caplog):
    bundle = fresh(setting, "twice")
    run_index(IndexJob(**append_job(setting["second"], bundle)))
    before = H.tree_snapshot(bundle.parent)
    again = run_index(IndexJob(**append_job(setting["second"], bundle)))
    assert H.tree_snapshot(bundle.parent) == before  # not one byte or timestamp changed
    assert (again.generation, again.samples, again.new_samples, again.computed_samples) == (2, 21, 9, 0)
    assert "already holds this append (generation 2" in caplog.text
    with open_bundle(bundle) as b:  # and the data is not listed twice
        assert [d.spec for d in b.manifest.datasets] == [str(setting["first"]), str(setting["second"])]


def test_an_orphan_of_another_append_is_removed_and_debris_cleared(setting):
    bundle = fresh(setting, "orphan")
    other = H.make_image_folder(setting["tmp"] / "other", per_class=2, seed=5)
    swap = "replace .CURRENT.tmp-"  # killed after publishing gen-00002, before CURRENT names it
    code = K.run_killed_at(swap, str(bundle.parent / "x.json"), torch.get_num_threads(), **append_job(other, bundle))
    assert code == -signal.SIGKILL
    assert (bundle / "gen-00002").is_dir() and list(bundle.glob(".CURRENT.tmp-*"))  # the debris of the issue
    run_index(IndexJob(**append_job(setting["second"], bundle)))  # a different append
    assert state(bundle) == setting["clean"]


def test_one_append_at_a_time(setting):
    bundle = fresh(setting, "locked")
    with AppendLock(bundle), pytest.raises(IndexerError, match="another .* is running"):
        run_index(IndexJob(**append_job(setting["second"], bundle)))
    assert (bundle / "CURRENT").read_text() == "gen-00001\n"
    assert np.array_equal(open_bundle(bundle).ids, np.arange(12))
