"""Dataset files are trusted no more than uploads (issue #12 §2): a pixel limit checked on
the header before decoding, samples confined to their dataset's root (at index and read
time, with an explicit opt-in recorded in the bundle), errors that name the sample and not
the path, and a bundle whose mapped files shrink under a reader refusing reads instead of
dying of SIGBUS."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import indexer_helpers as H
import numpy as np
import pytest
from PIL import Image

from parasal.indexer import (
    BundleCorrupt,
    CorruptSample,
    DataSpecError,
    ImageRejected,
    ImageTooLarge,
    IndexJob,
    check_image_size,
    open_bundle,
    open_dataset,
    open_image_limited,
    run_index,
)

GRAY = {"channels": "L", "mean": (0.5,), "std": (0.5,)}


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height and whose data is one empty zlib stream:
    ~70 bytes that decode to gigabytes (or past Pillow's bomb limit)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def big_png(path, side: int = 8000):
    Image.new("L", (side, side)).save(path)  # ~60 KB on disk, 64 MB decoded
    return path


def build(tmp_path, data, **kw):
    return run_index(
        IndexJob(
            data=str(data),
            out=tmp_path / "b",
            model=H.FACTORY,
            preprocessing=GRAY,
            progress=False,
            **{"max_skipped": 0.5, **kw},  # these tests skip files on purpose
        )
    ).bundle


@pytest.fixture()
def no_decoding(monkeypatch):
    """Any pixel decoding fails loudly: proves a refusal came from the header alone."""
    from PIL import ImageFile

    def refuse(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- the one image limit ---------------------------------------------------------------


def test_header_is_checked_before_any_pixel_is_decoded(tmp_path, no_decoding):
    with pytest.raises(ImageTooLarge) as e:
        open_image_limited(big_png(tmp_path / "big.png"), 4096 * 4096)
    assert (e.value.width, e.value.height) == (8000, 8000)
    assert str(e.value) == "image is 8000x8000 = 64000000 pixels; the limit is 16777216"
    with pytest.raises(ImageTooLarge):  # past Pillow's own bomb limit: refused, not INTERNAL
        open_image_limited(png_header(50_000, 50_000), 4096 * 4096)
    with pytest.raises(ImageTooLarge):
        check_image_size(Image.open(tmp_path / "big.png"), 1000)


def test_rejections_are_image_rejected_and_name_no_file(tmp_path):
    missing = tmp_path / "secret-dir" / "gone.png"
    cases = [b"", b"not an image at all", png_header(10, 10)[:30], str(missing)]
    for source in cases:
        with pytest.raises(ImageRejected) as e:
            open_image_limited(source)
        assert "secret-dir" not in str(e.value) and str(e.value) == e.value.reason
    assert open_image_limited(big_png(tmp_path / "ok.png", 300), 300 * 300).size == (300, 300)


# --- pixel limit on dataset files ------------------------------------------------------


def test_oversized_dataset_images_are_skipped_at_index_and_refused_at_read(tmp_path, caplog):
    data = H.make_image_folder(tmp_path / "d", per_class=3)
    big_png(data / "a" / "001.png", 200)  # over --max-image-pixels below: skipped, undecoded
    root = build(tmp_path, data, max_image_pixels=150 * 150)
    with open_bundle(root, name="shop") as b:
        (skipped,) = b.manifest.skipped
        assert skipped.reason == "image is 200x200 = 40000 pixels; the limit is 22500"
        sample = int(b.ids[0])
        b.load_image(sample)  # a 28x28 image: fine
        big_png(b.meta(sample).uri)  # the indexed file is replaced by an 8000x8000 PNG
        with caplog.at_level(logging.WARNING, logger="parasal.indexer"), pytest.raises(CorruptSample) as e:
            b.load_image(sample)
    assert str(e.value) == f"cannot read the image of sample {sample}: image is 8000x8000 = 64000000 pixels; " + (
        "the limit is 16777216"
    )
    assert str(tmp_path) not in str(e.value)  # clients see the sample id and the reason ...
    assert str(data / "a" / "000.png") in caplog.text  # ... the server log keeps the path


def test_missing_file_message_names_the_sample_not_the_path(tmp_path):
    data = H.make_image_folder(tmp_path / "d", per_class=2)
    with open_bundle(build(tmp_path, data)) as b:
        os.unlink(b.meta(3).uri)
        with pytest.raises(CorruptSample) as e:
            b.load_image(3)
    assert str(e.value) == "cannot read the image of sample 3: cannot open the file (No such file or directory)"


# --- confinement to the dataset's root ---------------------------------------------------


def test_csv_row_outside_the_root_is_refused_unless_allowed(tmp_path):
    inside = H.make_image_folder(tmp_path / "list" / "imgs", per_class=2)
    outside = H.make_image_folder(tmp_path / "private", per_class=1)
    rows = [f"imgs/{c}/000.png,{k}" for k, c in enumerate("abc")] + [f"{outside / 'a' / '000.png'},0"]
    (tmp_path / "list" / "set.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "list" / "dotdot.csv").write_text("imgs/a/000.png,0\n../private/b/000.png,1\n")
    for csv in ("set.csv", "dotdot.csv"):
        with pytest.raises(DataSpecError, match="outside the dataset's root.*--allow-outside-root"):
            build(tmp_path, tmp_path / "list" / csv)
    assert not (tmp_path / "b").exists()
    assert len(open_dataset(str(inside))) == 6

    root = build(tmp_path, tmp_path / "list" / "set.csv", allow_outside_root=True)  # the explicit opt-in
    with open_bundle(root) as b:
        assert b.manifest.datasets[0].description["allow_outside_root"] is True
        assert b.load_image(3).size == (28, 28)  # the reader honours what the bundle records


def test_symlinks_leaving_the_root_are_refused_at_index_and_read_time(tmp_path):
    data = H.make_image_folder(tmp_path / "d", per_class=2)
    secret = tmp_path / "secret.png"
    Image.new("L", (28, 28), 200).save(secret)
    link = data / "b" / "009.png"
    link.symlink_to(secret)
    with pytest.raises(DataSpecError, match="1 sample.* outside the dataset's root"):
        build(tmp_path, data)
    link.unlink()
    (data / "b" / "010.png").symlink_to(data / "a" / "000.png")  # a symlink that stays inside is fine
    with open_bundle(build(tmp_path, data)) as b:
        assert b.num_samples == 7 and b.manifest.datasets[0].description["allow_outside_root"] is False
        victim = b.meta(0).uri
        os.unlink(victim)
        os.symlink(secret, victim)  # swapped for a symlink leaving the root after indexing
        with pytest.raises(CorruptSample, match="sample 0: its file lies outside the dataset's root") as e:
            b.load_image(0)
        assert str(tmp_path) not in str(e.value)
        os.unlink(victim)
        os.mkfifo(victim)  # a FIFO would block a reader for ever: refused at once
        with pytest.raises(CorruptSample, match="not a regular file"):
            b.load_image(0)


# --- files shrinking under an open bundle --------------------------------------------------

SHRINK = textwrap.dedent("""
    import os, sys
    from parasal.indexer import open_bundle, BundleCorrupt
    victim, other = open_bundle(sys.argv[1], name="victim"), open_bundle(sys.argv[2], name="other")
    victim.profile(5), victim.meta(5), other.profile(5)
    name = sys.argv[3]
    path = victim.generation_path / name
    os.truncate(path, 4096 if name == "meta.lmdb" else 0)
    for read in (lambda: victim.profile(7), lambda: victim.meta(7), lambda: victim.search(other.profiles([1]), 3)):
        try:
            read()
            print("read fine")
        except BundleCorrupt as e:
            print("refused:", e)
    print("other:", other.meta(7).id, len(other.search(other.profiles([1]), 3)[0]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["profiles.npy", "meta.lmdb"])
def test_a_file_truncated_under_a_reader_is_refused_not_sigbus(tmp_path, name):
    data = H.make_image_folder(tmp_path / "d", per_class=40)  # files larger than a page
    a = run_index(IndexJob(data=str(data), out=tmp_path / "a", model=H.FACTORY, preprocessing=GRAY, progress=False))
    b = run_index(IndexJob(data=str(data), out=tmp_path / "b", model=H.FACTORY, preprocessing=GRAY, progress=False))
    proc = subprocess.run(
        [sys.executable, "-c", SHRINK, str(a.bundle), str(b.bundle), name],
        env=H.env_with_helpers(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"reader died (status {proc.returncode}): {proc.stderr[-2000:]}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and lines[-1] == "other: 7 3"  # the other bundle keeps answering
    assert all(line.startswith("refused: bundle 'victim' is damaged: " + name + " shrank") for line in lines[:3])
    assert str(tmp_path) not in proc.stdout  # no path in what a client would see
    assert str(tmp_path) in proc.stderr  # the log line names it


def test_guard_is_cheap_and_a_closed_bundle_releases_it(tmp_path):
    data = H.make_image_folder(tmp_path / "d", per_class=2)
    with open_bundle(build(tmp_path, data)) as b:
        fds = len(os.listdir("/proc/self/fd"))
        assert np.isfinite(b.profile(1)).all()
    assert len(os.listdir("/proc/self/fd")) <= fds - 3  # its three guarded descriptors are closed
    with pytest.raises(BundleCorrupt):  # a bundle missing a guarded file fails to open, cleanly
        os.unlink(tmp_path / "b" / "gen-00001" / "index.faiss")
        open_bundle(tmp_path / "b", verify=False)
