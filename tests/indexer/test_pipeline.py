"""End-to-end indexing: crash + resume gives the clean run's bundle, bad inputs fail early
(or are skipped and listed), and the CLI reports user errors as one line with status 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import indexer_helpers as H
import numpy as np
import pytest
import torch

from parasal.indexer.bundle import open_bundle
from parasal.indexer.cli import main
from parasal.indexer.errors import InputMismatch, OutputExists
from parasal.indexer.pipeline import IndexJob, run_index, work_dir_for

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}
# The `images` folder holds one corrupt file in 33 (3 %): over the default --max-skipped.
ARGS = [
    "--model",
    H.FACTORY,
    "--channels",
    "L",
    "--mean",
    "0.5",
    "--std",
    "0.5",
    "--no-progress",
    "--max-skipped",
    "0.1",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = H.make_image_folder(tmp_path_factory.mktemp("data") / "imgs", per_class=11)
    H.corrupt_file(root / "b" / "004.png")
    return root


def job(data, out, **kw):
    return IndexJob(
        data=str(data),
        out=out,
        model=H.FACTORY,
        preprocessing=GRAY,
        batch_size=4,
        shard_size=7,
        progress=False,
        **{"max_skipped": 0.1, **kw},
    )


def test_resume_after_kill_gives_the_clean_bundle(images, tmp_path):
    out = tmp_path / "resumed"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from parasal.indexer.pipeline import IndexJob, run_index
        torch.set_num_threads({torch.get_num_threads()})  # same float reduction order as this process
        def crash(shard):
            if shard == 1:  # after the second shard file is durably written
                os.kill(os.getpid(), signal.SIGKILL)
        run_index(IndexJob(data={str(images)!r}, out={str(out)!r}, model={H.FACTORY!r},
                           preprocessing={GRAY!r}, batch_size=4, shard_size=7, progress=False,
                           max_skipped=0.1, on_shard_written=crash))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=H.env_with_helpers(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    work = work_dir_for(out)
    assert sorted(p.name for p in work.glob("shard-*.npz")) == ["shard-000000.npz", "shard-000001.npz"]
    assert not out.exists()  # nothing half-written is visible

    computed = []
    resumed = run_index(job(images, out, on_shard_written=computed.append))
    assert computed == [2, 3, 4] and resumed.resumed_shards == 2  # 33 samples / 7 = 5 shards
    assert not work.exists()
    clean = run_index(job(images, tmp_path / "clean"))

    assert H.data_hashes(out) == H.data_hashes(tmp_path / "clean")  # byte-identical data files
    a = json.loads((out / "gen-00001" / "manifest.json").read_text())
    b = json.loads((tmp_path / "clean" / "gen-00001" / "manifest.json").read_text())
    for key in ("created", "manifest_sha256"):
        a.pop(key), b.pop(key)
    assert a == b
    with open_bundle(out) as r, open_bundle(tmp_path / "clean") as c:
        assert np.array_equal(r.ids, c.ids) and r.num_samples == clean.samples == 32
        assert np.array_equal(r.stats.mean, c.stats.mean) and np.array_equal(r.stats.m2, c.stats.m2)
        q = c.profiles(c.ids[::5])
        assert r.search(q, 5) == c.search(q, 5)


def test_stale_shards_of_another_job_are_not_reused(images, tmp_path):
    out = tmp_path / "b"
    work = work_dir_for(out)
    crashed = []

    def crash(shard):
        crashed.append(shard)
        raise RuntimeError("injected")

    with pytest.raises(RuntimeError, match="injected"):
        run_index(job(images, out, on_shard_written=crash))
    assert (work / "shard-000000.npz").is_file()
    done = []
    run_index(
        IndexJob(
            data=str(images),
            out=out,
            model=H.FACTORY,
            preprocessing=GRAY,
            batch_size=5,
            shard_size=7,
            progress=False,
            max_skipped=0.1,
            on_shard_written=done.append,
        )
    )
    assert done == [0, 1, 2, 3, 4]  # different batch size: every shard recomputed


def test_corrupt_image_is_skipped_and_listed(images, tmp_path):
    res = run_index(job(images, tmp_path / "b"))
    assert (res.samples, res.skipped) == (32, 1)
    with open_bundle(res.bundle) as b:
        (entry,) = b.manifest.skipped
        assert entry.id == 15 and entry.uri == str(images / "b" / "004.png")
        assert entry.reason == "not an image (unknown format)"  # names no file (clients may see reasons)
        assert 15 not in b.ids and b.manifest.counts.skipped == 1


def test_channel_mismatch_fails_before_any_work(images, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(InputMismatch, match=r"channel mismatch.*takes 1 channel\(s\).*preprocessed to 3.*--channels L"):
        run_index(IndexJob(data=str(images), out=out, model=H.FACTORY, progress=False))  # default RGB preprocessing
    assert not out.exists() and not work_dir_for(out).exists()
    rgb = H.make_image_folder(tmp_path / "rgb", per_class=2, mode="RGB")
    with pytest.raises(InputMismatch, match="channel mismatch.*mode RGB"):
        run_index(IndexJob(data=str(rgb), out=out, model=H.FACTORY, preprocessing={"channels": "RGB"}, progress=False))
    # with conversion to one channel, RGB images are fine
    res = run_index(IndexJob(data=str(rgb), out=out, model=H.FACTORY, preprocessing=GRAY, progress=False))
    assert res.samples == 6


def test_size_mismatch_fails_before_any_work(images, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(InputMismatch, match=r"size mismatch.*1x20x20"):
        run_index(
            IndexJob(
                data=str(images),
                out=out,
                model="indexer_helpers:fixed_size_net",
                preprocessing={**GRAY, "resize": 20},
                progress=False,
            )
        )
    assert not out.exists() and not work_dir_for(out).exists()


def test_existing_output_is_refused_without_overwrite(images, tmp_path, capsys):
    out = tmp_path / "b"
    run_index(job(images, out))
    before = H.data_hashes(out)
    capsys.readouterr()  # the library run's warnings (skipped, error rate), when an earlier main() set up logging
    assert main(["--data", str(images), "--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err and "Traceback" not in err
    with pytest.raises(OutputExists):
        run_index(job(images, out))
    assert H.data_hashes(out) == before
    (tmp_path / "notabundle").mkdir()
    (tmp_path / "notabundle" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExists, match="not a parasal bundle"):
        run_index(job(images, tmp_path / "notabundle", overwrite=True))
    assert main(["--data", str(images), "--out", str(out), "--overwrite", "--limit", "9", *ARGS]) == 0
    assert "indexed 9 samples" in capsys.readouterr().out
    with open_bundle(out) as b:
        assert b.num_samples == 9 and sorted(p.name for p in tmp_path.iterdir()) == ["b", "notabundle"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "nonsense", "--data", "{data}", "--out", "{out}"], "unknown model spec 'nonsense'"),
        (
            [
                "--model",
                H.FACTORY,
                "--data",
                "/no/such/dir",
                "--out",
                "{out}",
                "--channels",
                "L",
                "--mean",
                "0.5",
                "--std",
                "0.5",
            ],
            "unknown dataset spec",
        ),
        (["--model", H.FACTORY, "--data", "{data}", "--out", "{out}", "--channels", "L"], "--channels L needs --mean"),
        (
            [
                "--model",
                H.FACTORY,
                "--data",
                "{data}",
                "--out",
                "{out}",
                "--channels",
                "L",
                "--mean",
                "0.5",
                "--std",
                "0.5",
                "--index-type",
                "Bogus12",
            ],
            "invalid FAISS factory string 'Bogus12'",
        ),
        (
            [
                "--model",
                H.FACTORY,
                "--data",
                "{data}",
                "--out",
                "{out}",
                "--channels",
                "L",
                "--mean",
                "0.5",
                "--std",
                "0.5",
                "--index-type",
                "IVF64,Flat",
            ],
            "64 IVF lists but only 33 samples",
        ),
        (["--model", "torchvision:resnet18", "--data", "{data}", "--out", "{out}"], "needs --weights"),
        (["--data", "{data}"], "exactly one of --out"),
        (["--model", H.FACTORY, "--data", "{data}", "--append-to", "{out}"], "drop --model"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2(images, tmp_path, capsys, argv, message):
    out = tmp_path / "b"
    argv = [a.format(data=images, out=out) for a in argv]
    assert main(["index", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("parasal index: error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists() and not work_dir_for(out).exists()


def test_python_dash_m_entry_point(images, tmp_path):
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "parasal.indexer", "--data", str(images), "--out", str(out), "--limit", "5", *ARGS]
    ok = subprocess.run(cmd, env=H.env_with_helpers(), capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "indexed 5 samples (" in ok.stdout and str(out) in ok.stdout
    again = subprocess.run(cmd, env=H.env_with_helpers(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.fashion_mnist
def test_demo_model_on_fashion_mnist_subset(tmp_path):
    from parasal.indexer.zoo import DEMO_WEIGHTS_PATH

    if not Path(DEMO_WEIGHTS_PATH).is_file():
        pytest.skip("demo-fashion weights not built yet")
    res = run_index(
        IndexJob(
            data="fashion-mnist:test",
            out=tmp_path / "f",
            model="demo-fashion",
            limit=40,
            batch_size=16,
            shard_size=16,
            progress=False,
        )
    )
    with open_bundle(res.bundle) as b:
        # --limit: a stratified sample, 4 per class; ids stay the split's indices
        assert b.num_samples == 40 and np.bincount(b.labels, minlength=10).tolist() == [4] * 10
        assert b.ids.max() > 40 and b.manifest.datasets[0].entry["sample"]["kind"] == "stratified"
        first = int(b.ids[0])
        assert b.classes[0] == "T-shirt/top" and b.meta(first).uri == f"fashion-mnist:test/{first}"
        assert b.preprocessing.channels == "L" and b.manifest.preprocessing.input_shape == (1, 28, 28)
        assert b.num_misclassified < 20  # a trained model gets most of them right
        assert b.load_model().fingerprint == b.fingerprint


def test_failure_while_publishing_leaves_nothing_visible_and_reruns_from_shards(images, tmp_path, monkeypatch):
    import parasal.indexer.pipeline as pipeline

    out = tmp_path / "b"

    def boom(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(pipeline, "write_current", boom)
    with pytest.raises(OSError, match="injected"):
        run_index(job(images, out))
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["b.partial"]  # no staging left behind
    monkeypatch.undo()
    computed = []
    res = run_index(job(images, out, on_shard_written=computed.append))
    assert computed == [] and res.resumed_shards == 5 and res.samples == 32


def test_decoding_workers_give_the_same_bundle(images, tmp_path):
    run_index(job(images, tmp_path / "w0"))
    run_index(job(images, tmp_path / "w2", workers=2))
    assert H.data_hashes(tmp_path / "w0") == H.data_hashes(tmp_path / "w2")
