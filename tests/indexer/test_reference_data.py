"""`--reference-data`: class-filter statistics, exemplars and per-sample α / β / counts in the bundle.

Every stored number is recomputed independently: the reference set's α with a plain
per-sample autograd loop (not core.filter_importance), percentiles with np.percentile per
class, β and the counts with explicit loops over samples and filters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap

import indexer_helpers as H
import numpy as np
import pytest
import torch

from parasal.core import surprise_expectation
from parasal.indexer import (
    BundleCorrupt,
    IndexerError,
    NoReferenceData,
    ReferenceData,
    ReferenceInfo,
    SampleNotFound,
    open_bundle,
)
from parasal.indexer.cli import main
from parasal.indexer.datasets import open_dataset
from parasal.indexer.errors import DataSpecError, ModelSpecError
from parasal.indexer.manifest import Manifest, read_manifest, write_manifest
from parasal.indexer.pipeline import IndexJob, run_index, work_dir_for

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}
LAYER = "conv3"  # TinyNet's last conv (8 filters)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("refdata")
    return {
        "data": H.make_image_folder(root / "data", per_class=8, seed=0),
        "reference": H.make_image_folder(root / "reference", per_class=30, seed=1),
        "more": H.make_image_folder(root / "more", per_class=4, seed=2),
    }


def job(data, out, reference=None, **kw):
    options = {"batch_size": 4, "shard_size": 7, "progress": False, **kw}
    reference = None if reference is None else str(reference)
    return IndexJob(data=str(data), out=out, model=H.FACTORY, preprocessing=GRAY, reference_data=reference, **options)


@pytest.fixture(scope="module")
def built(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "b"
    run_index(job(folders["data"], out, folders["reference"], exemplars=4))
    return out


@pytest.fixture(scope="module")
def plain(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "b"
    run_index(job(folders["data"], out))
    return out


def plain_grad_amap(model, images, labels, layer: str) -> np.ndarray:
    """(B, N) Grad-AMap (Hartley et al. eq. 1) one sample at a time: mean_HW(∂softmax_c/∂A ⊙ A)."""
    module = dict(model.named_modules())[layer]
    model.eval()
    rows = []
    for x, y in zip(images, labels):
        seen = {}
        handle = module.register_forward_hook(lambda m, args, out, seen=seen: seen.__setitem__("a", out))
        try:
            logits = model(x[None])
        finally:
            handle.remove()
        (grad,) = torch.autograd.grad(logits.softmax(1)[0, int(y)], seen["a"])
        rows.append((grad * seen["a"]).mean((2, 3))[0].detach().numpy())
    return np.stack(rows).astype(np.float64)


def images_of(b, uris):
    return torch.stack([b.preprocessing(open_dataset_image(u)) for u in uris])


def open_dataset_image(uri):
    from parasal.indexer.datasets import load_image

    return load_image(uri)


def test_reference_statistics_exemplars_beta_and_counts_match_a_plain_recomputation(built, folders):
    model = H.tiny_net()
    with open_bundle(built) as b:
        ref = b.reference
        assert b.has_reference and isinstance(ref, ReferenceData)
        assert (ref.layer, ref.method, ref.num_filters, ref.exemplars_per_filter) == (LAYER, "grad_amap", 8, 4)
        assert (ref.high, ref.low, ref.num_samples) == (99.9, 0.1, 90) and ref.dataset == str(folders["reference"])
        ds = open_dataset(str(folders["reference"]))
        assert ref.ids.tolist() == list(range(90)) and ref.uri(5) == ds.uri(5) and ref.label(45) == ds.label(45)
        x_ref = torch.stack([ref.preprocess(ref.load_image(int(i))) for i in ref.ids])  # (90, 1, 28, 28)
        a_ref = plain_grad_amap(model, x_ref, ref.labels, LAYER)  # (90, 8)
        stats = ref.stats
        assert stats.counts.tolist() == [30, 30, 30]
        for c in range(3):
            mine = a_ref[ref.labels == c]
            np.testing.assert_allclose(stats.values(c), np.sort(mine, axis=0), rtol=1e-5, atol=1e-9)
            for q in (99.9, 0.1, 50):
                np.testing.assert_allclose(stats.percentile(q)[c], np.percentile(mine, q, axis=0), rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(stats.mean[c], mine.mean(axis=0), rtol=1e-5, atol=1e-9)
        # exemplars: per filter the 4 highest α overall and per class (ids = reference dataset indices)
        ex = ref.exemplars
        for n in range(8):
            top = np.argsort(-a_ref[:, n], kind="stable")[:4]
            assert ex.overall_ids[n].tolist() == ref.ids[top].tolist()
            np.testing.assert_allclose(ex.overall_alpha[n], a_ref[top, n], rtol=1e-5, atol=1e-9)
            for c in range(3):
                rows = np.flatnonzero(ref.labels == c)
                top_c = rows[np.argsort(-a_ref[rows, n], kind="stable")[:4]]
                assert ex.class_ids[c, n].tolist() == ref.ids[top_c].tolist()

        # the indexed rows: α stored, β and the counts against the stored statistics
        metas = b.metas(b.ids)
        x = images_of(b, [m.uri for m in metas])
        alpha = b.alpha(b.ids)
        assert alpha.shape == (24, 8) and alpha.dtype == np.float32
        np.testing.assert_allclose(alpha, plain_grad_amap(model, x, b.labels, LAYER), rtol=1e-5, atol=1e-9)
        sorted_values = [stats.values(c).astype(np.float64) for c in range(3)]
        for row, y in enumerate(b.labels.tolist()):
            mu = sorted_values[y].mean(axis=0)
            a = alpha[row].astype(np.float64)
            assert b.beta[row] == pytest.approx(np.mean(a - mu), rel=1e-5, abs=1e-12)
            upper = np.percentile(sorted_values[y], 99.9, axis=0)
            lower = np.percentile(sorted_values[y], 0.1, axis=0)
            surprise = sum(1 for n in range(8) if a[n] > upper[n])
            expectation = sum(1 for n in range(8) if a[n] < lower[n] and mu[n] > mu.mean())
            assert (b.num_surprise[row], b.num_expectation[row]) == (surprise, expectation), row
        # and the vectorised counts equal core's per-sample answer
        answers = surprise_expectation(alpha, b.labels, stats)
        assert b.num_surprise.tolist() == [len(s.surprise) for s in answers]
        assert b.num_expectation.tolist() == [len(s.expectation) for s in answers]
        np.testing.assert_allclose(b.beta, [s.beta for s in answers], rtol=1e-6, atol=1e-12)
        assert b.beta.dtype == np.float32 and b.num_surprise.dtype == np.int32


def test_rows_where_filters_by_beta_and_by_surprise(built):
    with open_bundle(built) as b:
        beta, s, e = b.beta, b.num_surprise, b.num_expectation
        assert (s > 0).any() or (e > 0).any()  # the test means something on this data
        cut = float(np.median(beta))
        assert np.array_equal(b.rows_where(beta_below=cut), beta < cut)
        assert np.array_equal(b.rows_where(beta_above=cut), beta > cut)
        assert np.array_equal(b.rows_where(only_with_surprise=True), s > 0)
        assert np.array_equal(b.rows_where(only_with_expectation=True), e > 0)
        both = b.rows_where(misclassified=False, labels=[1], beta_below=cut, only_with_surprise=True)
        assert np.array_equal(both, b.correct & (b.labels == 1) & (beta < cut) & (s > 0))
        with pytest.raises(SampleNotFound):
            b.alpha([999])
        with pytest.raises(SampleNotFound):
            b.reference.uri(12345)


def test_a_bundle_without_reference_data_says_how_to_build_one(plain):
    with open_bundle(plain, name="fashion") as b:
        assert not b.has_reference and b.reference is None and b.manifest.reference is None
        assert b.rows_where(misclassified=True).shape == (24,)  # the old filters still work
        calls = [
            lambda: b.alpha([0]),
            lambda: b.beta,
            lambda: b.num_surprise,
            lambda: b.num_expectation,
            lambda: b.rows_where(beta_below=0.0),
            lambda: b.rows_where(beta_above=0.0),
            lambda: b.rows_where(only_with_surprise=True),
            lambda: b.rows_where(only_with_expectation=True),
        ]
        for call in calls:
            with pytest.raises(NoReferenceData) as info:
                call()
            assert str(info.value) == (
                "bundle fashion has no reference data; index it with "
                "`parasal index ... --reference-data fashion-mnist:train` (or any data spec)"
            )
    gen = plain / "gen-00001"
    assert sorted(p.name for p in gen.iterdir()) == [
        "index.faiss",
        "manifest.json",
        "meta.lmdb",
        "profiles.npy",
        "stats.npz",
        "table.npz",
    ]
    assert "reference" not in json.loads((gen / "manifest.json").read_text())
    assert sorted(np.load(gen / "table.npz").files) == sorted(
        ["ids", "label", "predicted", "correct", "true_confidence", "predicted_confidence", "loss"]
    )


def test_profiles_do_not_change_when_reference_data_is_added(built, plain):
    hashes, plain_hashes = H.data_hashes(built), H.data_hashes(plain)
    for name in ("profiles.npy", "stats.npz", "index.faiss"):
        assert hashes[name] == plain_hashes[name], name


def test_sharded_and_unsharded_reference_passes_give_equal_arrays(folders, built, tmp_path):
    out = tmp_path / "one-shard"
    run_index(job(folders["data"], out, folders["reference"], exemplars=4, shard_size=1000))
    with open_bundle(built) as a, open_bundle(out) as b:
        ra, rb = a.reference, b.reference
        assert ra.info == rb.info
        assert np.array_equal(ra.ids, rb.ids) and np.array_equal(ra.labels, rb.labels)
        for c in range(3):
            np.testing.assert_allclose(ra.stats.values(c), rb.stats.values(c), rtol=1e-6, atol=1e-12)
        assert np.array_equal(ra.exemplars.overall_ids, rb.exemplars.overall_ids)
        assert np.array_equal(ra.exemplars.class_ids, rb.exemplars.class_ids)
        np.testing.assert_allclose(a.alpha(a.ids), b.alpha(b.ids), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(a.beta, b.beta, rtol=1e-5, atol=1e-12)
        assert np.array_equal(a.num_surprise, b.num_surprise)
        assert np.array_equal(a.num_expectation, b.num_expectation)


def test_resume_after_a_kill_in_the_reference_pass_gives_the_clean_bundle(folders, built, tmp_path):
    out = tmp_path / "resumed"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from parasal.indexer.pipeline import IndexJob, run_index
        torch.set_num_threads({torch.get_num_threads()})  # same float reduction order as this process
        def crash(shard):
            if shard == 1:  # after the second reference shard file is durably written
                os.kill(os.getpid(), signal.SIGKILL)
        run_index(IndexJob(data={str(folders["data"])!r}, out={str(out)!r}, model={H.FACTORY!r},
                           preprocessing={GRAY!r}, batch_size=4, shard_size=7, progress=False,
                           reference_data={str(folders["reference"])!r}, exemplars=4,
                           on_reference_shard_written=crash))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=H.env_with_helpers(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    work = work_dir_for(out)
    assert sorted(p.name for p in (work / "reference").glob("shard-*.npz")) == [
        "shard-000000.npz",
        "shard-000001.npz",
    ]
    assert not out.exists()
    profiles, references = [], []
    res = run_index(
        job(
            folders["data"],
            out,
            folders["reference"],
            exemplars=4,
            on_shard_written=profiles.append,
            on_reference_shard_written=references.append,
        )
    )
    assert profiles == [] and references == list(range(2, 13))  # 90 reference samples / 7 = 13 shards
    assert res.resumed_shards == 4 + 2 and not work.exists()
    assert H.data_hashes(out) == H.data_hashes(built)  # byte-identical, reference.npz and alpha.npy included


def test_changed_reference_options_discard_the_old_reference_shards(folders, tmp_path):
    out = tmp_path / "b"

    def crash(shard):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_index(job(folders["data"], out, folders["reference"], on_reference_shard_written=crash))
    references = []
    run_index(
        job(
            folders["data"],
            out,
            folders["reference"],
            reference_method="l1",
            on_reference_shard_written=references.append,
        )
    )
    assert references == list(range(13))  # the grad_amap shard was not reused for l1
    with open_bundle(out) as b:
        assert b.reference.method == "l1"
        assert np.all(b.alpha(b.ids) >= 0)  # an l1 norm


def test_append_keeps_the_reference_statistics_frozen(folders, built, tmp_path):
    root = tmp_path / "appended"
    shutil.copytree(built, root)
    with pytest.raises(IndexerError, match="--reference-data does not apply to --append-to"):
        run_index(IndexJob(data=str(folders["more"]), append_to=root, reference_data=str(folders["reference"])))
    res = run_index(IndexJob(data=str(folders["more"]), append_to=root, batch_size=4, shard_size=7, progress=False))
    assert res.generation == 2 and res.new_samples == 12
    g1, g2 = root / "gen-00001", root / "gen-00002"
    assert (g1 / "reference.npz").stat().st_ino == (g2 / "reference.npz").stat().st_ino  # linked, unchanged
    with open_bundle(g1) as old, open_bundle(root) as new:
        assert new.manifest.reference == old.manifest.reference and new.reference.info.from_generation == 1
        n = old.num_samples
        assert np.array_equal(new.alpha(old.ids), old.alpha(old.ids))
        assert np.array_equal(new.beta[:n], old.beta) and np.array_equal(new.num_surprise[:n], old.num_surprise)
        fresh = new.ids[n:]
        assert len(fresh) == 12
        metas = new.metas(fresh)
        x = images_of(new, [m.uri for m in metas])
        labels = new.labels[n:]
        alpha = new.alpha(fresh)
        np.testing.assert_allclose(alpha, plain_grad_amap(H.tiny_net(), x, labels, LAYER), rtol=1e-5, atol=1e-9)
        frozen = old.reference.stats  # the new rows are compared with the base's statistics
        mu = frozen.mean[labels]
        np.testing.assert_allclose(new.beta[n:], (alpha.astype(np.float64) - mu).mean(axis=1), rtol=1e-5, atol=1e-12)
        answers = surprise_expectation(alpha, labels, frozen)
        assert new.num_surprise[n:].tolist() == [len(s.surprise) for s in answers]
        assert new.num_expectation[n:].tolist() == [len(s.expectation) for s in answers]


def test_append_to_a_bundle_without_reference_data_adds_none(folders, plain, tmp_path):
    root = tmp_path / "appended"
    shutil.copytree(plain, root)
    run_index(IndexJob(data=str(folders["more"]), append_to=root, batch_size=4, shard_size=7, progress=False))
    with open_bundle(root) as b:
        assert b.generation == 2 and not b.has_reference
    assert not (root / "gen-00002" / "alpha.npy").exists()


def corrupted_copy(built, tmp_path, name="c"):
    root = tmp_path / name
    shutil.copytree(built, root)
    return root, root / "gen-00001"


@pytest.mark.parametrize("name", ["reference.npz", "alpha.npy"])
def test_truncated_reference_files_are_bundle_corrupt(built, tmp_path, name):
    root, gen = corrupted_copy(built, tmp_path)
    path = gen / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for verify in (True, "size"):
        with pytest.raises(BundleCorrupt, match="truncated"):
            open_bundle(root, verify=verify)


def test_damaged_reference_contents_are_bundle_corrupt(built, tmp_path):
    root, gen = corrupted_copy(built, tmp_path, "garbage")
    path = gen / "reference.npz"
    path.write_bytes(b"\0" * path.stat().st_size)  # same size: only the checksum or the reader can tell
    with pytest.raises(BundleCorrupt, match="sha256"):
        open_bundle(root)
    with pytest.raises(BundleCorrupt, match="reference.npz cannot be read"):
        open_bundle(root, verify="size")

    root, gen = corrupted_copy(built, tmp_path, "inconsistent")
    arrays = dict(np.load(gen / "reference.npz"))
    arrays["counts"] = arrays["counts"] + np.array([1, -1, 0])  # no longer the labels' counts
    np.savez(gen / "reference.npz", **arrays)
    with open_bundle(root, verify=False) as b:  # opens: the members are all there
        with pytest.raises(BundleCorrupt, match="labels do not match the class counts"):
            _ = b.reference.stats


def test_reference_files_without_a_reference_entry_are_bundle_corrupt(built, tmp_path):
    root, gen = corrupted_copy(built, tmp_path)
    manifest = read_manifest(gen)
    manifest.pop("reference")
    write_manifest(gen, manifest)
    with pytest.raises(BundleCorrupt, match="reference"):
        open_bundle(root)


def test_alpha_shrinking_while_open_answers_bundle_corrupt(built, tmp_path):
    root, gen = corrupted_copy(built, tmp_path)
    with open_bundle(root) as b:
        b.alpha([0])
        with open(gen / "alpha.npy", "r+b") as f:
            f.truncate(200)
        with pytest.raises(BundleCorrupt, match="alpha.npy shrank"):
            b.alpha([0])


def test_manifest_reference_entry_round_trips(built):
    raw = read_manifest(built / "gen-00001")
    info = ReferenceInfo.from_dict(raw["reference"])
    assert ReferenceInfo.from_dict(info.to_dict()) == info
    assert info.description["kind"] == "image-folder" and info.limit is None and info.skipped == 0
    m = Manifest.from_dict(raw)
    assert m.reference == info and pickle.loads(pickle.dumps(m)) == m
    assert set(m.files) >= {"reference.npz", "alpha.npy"}
    with open_bundle(built) as b:
        assert b.manifest.reference == info
        assert dataclasses.replace(info, layer="x") != info
    digest = hashlib.sha256((built / "gen-00001" / "reference.npz").read_bytes()).hexdigest()
    assert raw["files"]["reference.npz"]["sha256"] == digest


def test_reference_limit_is_a_seeded_stratified_sample(folders, tmp_path):
    out = tmp_path / "b"
    run_index(job(folders["data"], out, folders["reference"], reference_limit=30, seed=3))
    with open_bundle(out) as b:
        ref = b.reference
        assert ref.num_samples == 30 and ref.info.limit == 30 and ref.stats.counts.tolist() == [10, 10, 10]
        assert ref.info.entry["sample"] == {"kind": "stratified", "by": "label", "seed": 3}
        assert ref.ids.tolist() != list(range(30))  # drawn from the whole set, ids stay dataset indices


def test_reference_classes_must_mean_the_same_as_the_indexed_ones(folders, tmp_path):
    other = H.make_image_folder(tmp_path / "other", per_class=3, classes=("x", "y", "z"))
    with pytest.raises(DataSpecError, match="classes"):
        run_index(job(folders["data"], tmp_path / "b", other))
    assert not (tmp_path / "b").exists() and not work_dir_for(tmp_path / "b").exists()


def test_a_layer_that_is_no_conv_is_refused_before_any_work(folders, tmp_path):
    with pytest.raises(ModelSpecError, match="not an nn.Conv2d"):
        run_index(job(folders["data"], tmp_path / "b", folders["reference"], reference_layer="fc"))
    assert not work_dir_for(tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--reference-method", "nope"], "--reference-method must be one of grad_amap"),
        (["--reference-layer", "conv2"], "--reference-layer need(s) --reference-data"),
        (["--exemplars", "0"], "--exemplars must be at least 1"),
        (["--reference-limit", "0"], "--reference-limit must be at least 1"),
    ],
)
def test_cli_reference_option_errors_are_one_line_exit_2(folders, tmp_path, capsys, extra, message):
    base = ["--model", H.FACTORY, "--channels", "L", "--data", str(folders["data"]), "--out", str(tmp_path / "b")]
    if extra[0] != "--reference-layer":
        base += ["--reference-data", str(folders["reference"])]
    assert main([*base, "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_cli_refuses_reference_data_with_append_to(built, folders, capsys):
    argv = ["--append-to", str(built), "--data", str(folders["more"]), "--reference-data", str(folders["reference"])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--reference-data does not apply to --append-to" in err and len(err.strip().splitlines()) == 1


def test_cli_builds_a_reference_bundle_with_a_chosen_layer_and_method(folders, tmp_path, capsys):
    out = tmp_path / "b"
    argv = ["--model", H.FACTORY, "--channels", "L", "--mean", "0.5", "--std", "0.5"]
    argv += [
        "--data",
        str(folders["data"]),
        "--out",
        str(out),
        "--reference-data",
        str(folders["reference"]),
        "--reference-layer",
        "conv2",
    ]
    argv += ["--reference-method", "taylor", "--exemplars", "2", "--no-progress"]
    assert main(argv) == 0
    with open_bundle(out) as b:
        ref = b.reference
        assert (ref.layer, ref.method, ref.num_filters, ref.exemplars_per_filter) == ("conv2", "taylor", 6, 2)
        assert b.alpha(b.ids).shape == (24, 6) and ref.exemplars.overall_ids.shape == (6, 2)


def test_concurrent_first_readers_see_the_same_statistics(built):
    import threading

    with open_bundle(built) as serial:
        expected = [serial.reference.stats.values(c).copy() for c in range(3)]
        upper = serial.reference.stats.percentile(99.9).copy()
    with open_bundle(built) as b:
        start, results = threading.Barrier(8), []

        def read():
            start.wait()
            stats = b.reference.stats
            results.append(([stats.values(c) for c in range(3)], stats.percentile(99.9)))

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8
        for values, high in results:
            assert all(np.array_equal(v, e) for v, e in zip(values, expected)) and np.array_equal(high, upper)
