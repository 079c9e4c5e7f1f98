"""Datasets that go wrong silently (issue #13): the class -> index mapping is printed and
can be given (a list, or the model's own names), implausible error rates warn, --limit
is a seeded stratified sample, skipped rows are counted by reason and stop a bad run,
appends skip images the bundle holds, any torch dataset can be indexed from a factory,
and the output's parent directory is created."""

from __future__ import annotations

import logging
import subprocess
import sys

import indexer_helpers as H
import numpy as np
import pytest
import torch

from parasal.indexer.bundle import open_bundle
from parasal.indexer.cli import main
from parasal.indexer.datachecks import error_rate_warning, skip_kind
from parasal.indexer.errors import DataSpecError, IndexerError
from parasal.indexer.pipeline import IndexJob, run_index, work_dir_for
from parasal.indexer.sampling import stratified_sample

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}
ARGS = ["--model", H.FACTORY, "--channels", "L", "--mean", "0.5", "--std", "0.5", "--no-progress"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return H.make_image_folder(tmp_path_factory.mktemp("data") / "imgs", per_class=6)


def job(data, out, **kw):
    return IndexJob(data=str(data), out=out, model=H.FACTORY, preprocessing=GRAY, progress=False, **kw)


def labels_by_folder(bundle) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for i in bundle.ids:
        meta = bundle.meta(int(i))
        out.setdefault(meta.uri.split("/")[-2], set()).add(meta.label)
    return out


# --- 1. the class order ------------------------------------------------------------------


def test_the_class_mapping_is_printed_and_an_implausible_error_rate_warns(folder, tmp_path, capsys):
    assert main(["--data", str(folder), "--out", str(tmp_path / "b"), *ARGS]) == 0
    err = capsys.readouterr().err
    assert "parasal index: classes (sorted subfolder names): 0 a, 1 b, 2 c\n" in err
    # an untrained 3-class model: at chance, which is what a scrambled class order looks like
    assert "misclassified, about chance for 3 classes" in err and "class order" in err and "--classes" in err


@pytest.mark.parametrize("given", ["c,a,b", "file"])
def test_a_class_list_orders_an_image_folder(folder, tmp_path, capsys, given):
    if given == "file":
        (tmp_path / "order.txt").write_text("c\na\nb\n")
        given = str(tmp_path / "order.txt")
    assert main(["--data", str(folder), "--out", str(tmp_path / "b"), "--classes", given, *ARGS]) == 0
    assert "classes (--classes): 0 c, 1 a, 2 b" in capsys.readouterr().err
    with open_bundle(tmp_path / "b") as b:
        assert labels_by_folder(b) == {"c": {0}, "a": {1}, "b": {2}} and b.classes == ["c", "a", "b"]
    with pytest.raises(DataSpecError, match=r"subfolder\(s\) \['c'\] are not listed in --classes"):
        run_index(job(folder, tmp_path / "x", classes="a,b"))


def test_the_models_own_class_names_order_an_image_folder(folder, tmp_path):
    notes = []
    run_index(
        IndexJob(
            data=str(folder),
            out=tmp_path / "b",
            model="indexer_helpers:tiny_net_named",
            preprocessing=GRAY,
            progress=False,
            notify=notes.append,
        )
    )
    assert "classes (the model's class names): 0 c, 1 a, 2 b" in notes
    with open_bundle(tmp_path / "b") as b:
        assert labels_by_folder(b) == {"c": {0}, "a": {1}, "b": {2}}


def test_error_rate_warning_thresholds():
    mapping = "classes (sorted subfolder names): 0 a, 1 b"
    assert error_rate_warning(32, 64, 2, mapping) is not None  # the case: 50 % on two classes
    assert error_rate_warning(40, 64, 10, mapping) is not None  # above 50 %
    assert error_rate_warning(5, 64, 10, mapping) is None
    assert error_rate_warning(5, 6, 10, mapping) is None  # too few samples to say
    assert "about chance for 10 classes (90%)" in error_rate_warning(58, 64, 10, mapping)


# --- 2. --limit: a seeded stratified sample -------------------------------------------------


def test_stratified_sample_keeps_each_labels_share():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    pool = np.arange(100) * 3  # dataset indices, not positions
    chosen = stratified_sample(pool, labels, 10, seed=0)
    assert np.all(np.diff(chosen) > 0) and set(chosen) <= set(pool)
    assert np.bincount(labels[np.searchsorted(pool, chosen)]).tolist() == [5, 3, 2]
    assert np.array_equal(chosen, stratified_sample(pool, labels, 10, seed=0))
    assert not np.array_equal(chosen, stratified_sample(pool, labels, 10, seed=1))
    assert np.bincount(labels[np.searchsorted(pool, stratified_sample(pool, labels, 7, 0))]).sum() == 7
    assert np.array_equal(stratified_sample(pool, labels, 500, 0), pool)


def test_limit_samples_every_class_and_keeps_dataset_indices_as_ids(folder, tmp_path, capsys):
    # The first 6 in sorted order would all be class a.
    assert main(["--data", str(folder), "--out", str(tmp_path / "b"), "--limit", "6", *ARGS]) == 0
    err = capsys.readouterr().err
    assert "--limit 6: a stratified random sample of 6 of 18 samples (seed 0; per label 0: 2, 1: 2, 2: 2)" in err
    with open_bundle(tmp_path / "b") as b:
        assert np.bincount(b.labels).tolist() == [2, 2, 2]
        for i in b.ids:  # id = the sample's index in the dataset (sorted files: 6 per class)
            meta = b.meta(int(i))
            assert meta.uri.endswith(f"/{'abc'[i // 6]}/{i % 6:03d}.png")
        ids = b.ids.tolist()
    assert main(["--data", str(folder), "--out", str(tmp_path / "c"), "--limit", "6", "--seed", "1", *ARGS]) == 0
    with open_bundle(tmp_path / "c") as c:
        assert c.ids.tolist() != ids and np.bincount(c.labels).tolist() == [2, 2, 2]


# --- 3. skipped rows ------------------------------------------------------------------------


def test_too_many_skipped_rows_publish_nothing_and_say_why(tmp_path):
    data = H.make_image_folder(tmp_path / "d", per_class=4)
    H.corrupt_file(data / "a" / "001.png")
    (data / "b" / "002.png").unlink()
    (data / "b" / "002.png").symlink_to(data / "b" / "gone.png")  # a dangling link: a missing file
    out = tmp_path / "b"
    with pytest.raises(DataSpecError) as e:
        run_index(job(data, out, shard_size=5))
    message = str(e.value)
    assert message.startswith("skipped 2 of 12 samples (16.7%):")
    assert f"1 missing or unreadable file, e.g. {data / 'b' / '002.png'} (cannot open the file" in message
    assert f"1 undecodable image, e.g. {data / 'a' / '001.png'} (not an image (unknown format))" in message
    assert "more than --max-skipped 0.01 (1.0%)" in message and "pass --max-skipped 0.17" in message
    assert not out.exists()  # nothing published
    computed = []
    res = run_index(job(data, out, shard_size=5, max_skipped=0.17, on_shard_written=computed.append))
    assert computed == [] and (res.samples, res.skipped) == (10, 2)  # the shards were reused


def test_labels_out_of_range_are_counted_by_reason(tmp_path, caplog):
    data = H.make_image_folder(tmp_path / "d", per_class=4)
    rows = [f"{p.relative_to(tmp_path)},{k % 3}" for k, p in enumerate(sorted(data.rglob("*.png")))]
    rows[5] = rows[5].rsplit(",", 1)[0] + ",7"  # the model has 3 classes
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataSpecError, match=r"1 label out of range, e\.g\. .*\(label 7 outside the model's 3"):
        run_index(job(tmp_path / "list.csv", tmp_path / "b"))
    with caplog.at_level(logging.WARNING, logger="parasal.indexer"):
        run_index(job(tmp_path / "list.csv", tmp_path / "b", max_skipped=0.1))
    assert "skipped 1 of 12 samples (8.3%):\n  1 label out of range" in caplog.text
    assert skip_kind("image is 9x9 = 81 pixels; the limit is 80") == "image too large"
    assert skip_kind("its file lies outside the dataset's root (index with ...)") == "outside the dataset's root"


def test_max_skipped_must_be_a_fraction(folder, tmp_path):
    with pytest.raises(IndexerError, match="--max-skipped is a fraction"):
        run_index(job(folder, tmp_path / "b", max_skipped=5))


# --- 4. appends skip duplicate uris ---------------------------------------------------------


def test_append_skips_images_the_bundle_already_holds(tmp_path):
    first = H.make_image_folder(tmp_path / "first", per_class=2)
    second = H.make_image_folder(tmp_path / "second", per_class=2, seed=1)
    out = tmp_path / "b"
    run_index(job(first, out))
    old = sorted(str(p.relative_to(tmp_path)) for p in first.rglob("*.png"))[:3]
    new = sorted(str(p.relative_to(tmp_path)) for p in second.rglob("*.png"))
    (tmp_path / "more.csv").write_text("".join(f"{p},{p.split('/')[1] == 'b' and 1 or 0}\n" for p in old + new))
    notes = []
    res = run_index(IndexJob(data=str(tmp_path / "more.csv"), append_to=out, progress=False, notify=notes.append))
    assert "skipping 3 of 9 samples already in the bundle (same uri)" in notes
    assert (res.new_samples, res.samples) == (6, 12)
    with open_bundle(out) as b:
        uris = [m.uri for m in b.metas(b.ids)]
        assert len(set(uris)) == 12
    (tmp_path / "again.csv").write_text("".join(f"{p},0\n" for p in old))
    with pytest.raises(DataSpecError, match="all 3 samples of .* are already in .*nothing to append"):
        run_index(IndexJob(data=str(tmp_path / "again.csv"), append_to=out, progress=False))


# --- 5. any torch dataset, from a factory ---------------------------------------------------


def test_a_factory_dataset_is_indexed_with_its_ids_uris_and_images(tmp_path):
    out = tmp_path / "b"
    notes = []
    res = run_index(job("indexer_helpers:tiny_dataset", out, max_skipped=0.2, notify=notes.append))
    assert "classes (indexer_helpers:tiny_dataset().classes): 0 x, 1 y, 2 z" in notes
    assert (res.samples, res.skipped) == (8, 1)
    ds = H.tiny_dataset()
    with open_bundle(out) as b:
        (skipped,) = b.manifest.skipped
        assert skipped.uri == "indexer_helpers:tiny_dataset/8" and "outside [0, 1]" in skipped.reason
        assert b.ids.tolist() == list(range(8)) and b.labels.tolist() == ds.targets[:8]
        assert b.meta(4).uri == "indexer_helpers:tiny_dataset/4"
        for i in (0, 1, 2):  # PIL, uint8 array, float tensor: the same pixels come back
            assert np.array_equal(np.asarray(b.load_image(i)), ds.arrays[i])
        assert b.manifest.datasets[0].description["kind"] == "factory"


def test_a_dataset_factory_that_cannot_be_imported_says_how_to_fix_it(tmp_path):
    with pytest.raises(DataSpecError, match="cannot import no_such_mod_xyz:make.*PYTHONPATH"):
        run_index(job("no_such_mod_xyz:make", tmp_path / "b"))


# --- 6. the output's parent directory ------------------------------------------------------


def test_index_creates_the_outputs_parent_directory(folder, tmp_path):
    out = tmp_path / "bundles" / "deeper" / "b"
    res = run_index(job(folder, out, limit=3))
    assert res.bundle == out and (out / "CURRENT").is_file() and not work_dir_for(out).exists()


# --- 8. faiss's loader chatter, 9. the TorchScript slow path ----------------------------------


def test_faiss_loader_fallback_is_not_logged_as_information():
    code = "import logging; logging.basicConfig(level=logging.INFO); import parasal.indexer.faiss_index"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Could not load library" not in done.stderr and "faiss.loader" not in done.stderr


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_models_say_that_they_take_the_slow_path(folder, tmp_path):
    path = tmp_path / "net.pt"
    torch.jit.script(H.tiny_net()).save(str(path))
    notes = []
    run_index(
        IndexJob(
            data=str(folder),
            out=tmp_path / "b",
            model=str(path),
            preprocessing=GRAY,
            progress=False,
            limit=3,
            notify=notes.append,
        )
    )
    (slow,) = [n for n in notes if n.startswith("slow path")]
    assert "one backward pass per image" in slow and "nn.Conv2d" in slow and "--weights" in slow
    with open_bundle(tmp_path / "b") as b:
        assert b.manifest.job["saliency"] == "reference"
