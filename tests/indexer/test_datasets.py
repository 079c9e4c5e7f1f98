"""Dataset specs: Fashion-MNIST (Debian package), image folders, CSV lists, uris."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parasal.indexer import datasets as ds
from parasal.indexer.datasets import (
    FASHION_MNIST_CLASSES,
    CorruptSample,
    Sample,
    fashion_mnist_dir,
    load_image,
    open_dataset,
)

FMNIST = fashion_mnist_dir()


# --- Fashion-MNIST ---------------------------------------------------------------------


@pytest.mark.fashion_mnist
@pytest.mark.parametrize("split,size", [("test", 10_000), ("train", 60_000)])
def test_fashion_mnist_split(split, size):
    d = open_dataset(f"fashion-mnist:{split}")
    assert len(d) == size
    assert d.classes == list(FASHION_MNIST_CLASSES) and len(d.classes) == 10
    labels = np.array([d.label(i) for i in range(size)])
    assert labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).tolist() == [size // 10] * 10  # Fashion-MNIST is balanced
    sample = d[size - 1]
    assert isinstance(sample, Sample)
    assert sample.uri == f"fashion-mnist:{split}/{size - 1}" == d.uri(-1)
    assert sample.label == d.label(size - 1)
    assert sample.image.size == (28, 28) and sample.image.mode == "L"
    with pytest.raises(IndexError):
        d[size]


@pytest.mark.fashion_mnist
def test_fashion_mnist_known_values():
    # Published facts about the test split: first label is 9 (Ankle boot), second 2 (Pullover).
    d = open_dataset("fashion-mnist:test")
    assert [d.label(0), d.label(1)] == [9, 2]
    assert d.classes[d.label(0)] == "Ankle boot"
    pixels = np.asarray(d[0].image)
    assert pixels.dtype == np.uint8 and pixels.shape == (28, 28) and pixels.max() > 200


@pytest.mark.fashion_mnist
@pytest.mark.parametrize("uri_index", [0, 123, 9_999])
def test_fashion_uri_round_trip(uri_index):
    d = open_dataset("fashion-mnist:test")
    sample = d[uri_index]
    assert sample.uri == f"fashion-mnist:test/{uri_index}"
    again = load_image(sample.uri)
    assert np.array_equal(np.asarray(again), np.asarray(sample.image))
    # and the pixels are those of the raw IDX file
    with gzip.open(FMNIST / "t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    assert np.array_equal(np.asarray(again), raw[uri_index])


@pytest.mark.fashion_mnist
def test_fashion_arrays_cached_and_samples_independent():
    a, b = open_dataset("fashion-mnist:test"), open_dataset("fashion-mnist:test")
    assert a.images is b.images  # decoded once per process
    assert not a.images.flags.writeable
    image = a[5].image
    image.putpixel((0, 0), 255 - image.getpixel((0, 0)))  # a caller's edit must not reach the cache
    assert np.asarray(a[5].image)[0, 0] != image.getpixel((0, 0))


@pytest.mark.fashion_mnist
def test_fashion_describe_is_json_with_fingerprint():
    desc = open_dataset("fashion-mnist:test").describe()
    assert json.loads(json.dumps(desc)) == desc
    assert desc["spec"] == "fashion-mnist:test" and desc["kind"] == "fashion-mnist" and desc["size"] == 10_000
    assert desc["classes"] == list(FASHION_MNIST_CLASSES)
    assert Path(desc["path"]) == FMNIST.resolve()
    name = "t10k-images-idx3-ubyte.gz"
    assert desc["sha256"][name] == hashlib.sha256((FMNIST / name).read_bytes()).hexdigest()


@pytest.mark.fashion_mnist
def test_fashion_dir_from_env(tmp_path, monkeypatch):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).symlink_to(FMNIST / name)
    monkeypatch.setenv(ds.FASHION_MNIST_ENV, str(tmp_path))
    d = open_dataset("fashion-mnist:test")
    assert len(d) == 10_000
    # the train files are not there: the error names the path and the Debian package
    with pytest.raises(FileNotFoundError) as e:
        open_dataset("fashion-mnist:train")
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(e.value)
    assert "dataset-fashion-mnist" in str(e.value) and ds.FASHION_MNIST_ENV in str(e.value)


def test_fashion_missing_dir_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ds.FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        open_dataset("fashion-mnist:test")


def test_fashion_truncated_idx_is_rejected(tmp_path, monkeypatch):
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write((2051).to_bytes(4, "big") + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(100))
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write((2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(3))
    monkeypatch.setenv(ds.FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="truncated"):
        open_dataset("fashion-mnist:test")


# --- image folders ---------------------------------------------------------------------


def _png(path: Path, value: int, size=(5, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=value).save(path)
    return path


def _folder(root: Path) -> Path:
    _png(root / "zebra" / "z1.png", 10)
    _png(root / "apple" / "a2.png", 20)
    _png(root / "apple" / "a1.png", 30)
    _png(root / "mango" / "nested" / "m1.png", 40)  # subfolders of a class count too
    (root / "mango" / "notes.txt").write_text("not an image")  # ignored: not an image extension
    return root


def test_image_folder_sorted_classes(tmp_path):
    d = open_dataset(str(_folder(tmp_path / "data")))
    assert d.classes == ["apple", "mango", "zebra"]
    assert len(d) == 4
    rows = [(Path(d.uri(i)).name, d.label(i)) for i in range(len(d))]
    assert rows == [("a1.png", 0), ("a2.png", 0), ("m1.png", 1), ("z1.png", 2)]
    s = d[0]
    assert os.path.isabs(s.uri) and np.asarray(s.image)[0, 0] == 30
    assert np.array_equal(np.asarray(load_image(s.uri)), np.asarray(s.image))
    desc = d.describe()
    assert json.loads(json.dumps(desc)) == desc
    assert desc["kind"] == "image-folder" and desc["size"] == 4 and desc["classes"] == d.classes
    assert desc["path"] == str((tmp_path / "data").resolve())


def test_image_folder_classes_txt_order(tmp_path):
    root = _folder(tmp_path / "data")
    (root / "classes.txt").write_text("zebra\napple\n\nmango\nkiwi\n")  # kiwi: listed, no images
    d = open_dataset(str(root))
    assert d.classes == ["zebra", "apple", "mango", "kiwi"]
    labels = {Path(d.uri(i)).name: d.label(i) for i in range(len(d))}
    assert labels == {"z1.png": 0, "a1.png": 1, "a2.png": 1, "m1.png": 2}


def test_image_folder_unlisted_subfolder_is_an_error(tmp_path):
    root = _folder(tmp_path / "data")
    (root / "classes.txt").write_text("zebra\napple\n")
    with pytest.raises(ValueError, match="mango"):
        open_dataset(str(root))


def test_image_folder_without_images(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        open_dataset(str(tmp_path / "empty"))


# --- CSV -------------------------------------------------------------------------------


def test_csv_relative_paths_header_and_corrupt(tmp_path):
    _png(tmp_path / "imgs" / "ok.png", 77)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good_abs = _png(tmp_path / "elsewhere" / "abs.png", 5)
    csv_path = tmp_path / "lists" / "set.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(f"path,label\n../imgs/ok.png,3\n../imgs/bad.png,1\n\n{good_abs},0\n../imgs/missing.png,2\n")
    with pytest.raises(ValueError, match="4 sample.* outside the dataset's root.*--allow-outside-root"):
        open_dataset(str(csv_path))  # every row leaves lists/: refused unless asked for
    d = open_dataset(str(csv_path), allow_outside_root=True)
    assert len(d) == 4 and d.classes is None
    assert d.uri(0) == str(tmp_path / "imgs" / "ok.png")
    assert [d.label(i) for i in range(4)] == [3, 1, 0, 2]
    assert np.asarray(d[0].image)[0, 0] == 77 and d[0].label == 3
    assert np.asarray(d[2].image)[0, 0] == 5
    # uri/label need no decoding, so they work for the corrupt row too
    assert d.uri(1).endswith("bad.png") and d.label(1) == 1
    with pytest.raises(CorruptSample) as e:
        d[1]
    assert e.value.uri == d.uri(1) and e.value.reason
    with pytest.raises(CorruptSample) as e:
        d[3]
    assert e.value.uri == d.uri(3)
    with pytest.raises(CorruptSample):
        load_image(d.uri(1))
    again = pickle.loads(pickle.dumps(e.value))  # worker processes send it back pickled
    assert (again.uri, again.reason, str(again)) == (e.value.uri, e.value.reason, str(e.value))


def test_csv_truncated_image_is_corrupt(tmp_path):
    path = _png(tmp_path / "big.png", 0, size=(64, 64))
    Image.effect_noise((64, 64), 50).save(path)  # noise compresses poorly: truncation bites
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (tmp_path / "list.csv").write_text("big.png,0\n")
    with pytest.raises(CorruptSample):
        open_dataset(str(tmp_path / "list.csv"))[0]


def test_csv_class_names_without_header(tmp_path):
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "list.csv").write_text("a.png,dog\nb.png,0\n")
    d = open_dataset(str(tmp_path / "list.csv"))
    assert d.classes == ["cat", "dog"]
    assert [d.label(0), d.label(1)] == [1, 0]
    assert d.describe()["kind"] == "csv"
    # an explicit classes list wins over classes.txt
    d2 = open_dataset(str(tmp_path / "list.csv"), classes=["dog", "cat", "eel"])
    assert [d2.label(0), d2.label(1)] == [0, 0]


def test_csv_bad_labels(tmp_path):
    _png(tmp_path / "a.png", 1)
    (tmp_path / "names.csv").write_text("path,label\na.png,dog\n")
    with pytest.raises(ValueError, match=r"names.csv:2.*'dog'.*classes.txt"):
        open_dataset(str(tmp_path / "names.csv"))
    (tmp_path / "neg.csv").write_text("a.png,-1\n")
    with pytest.raises(ValueError, match="out of range"):
        open_dataset(str(tmp_path / "neg.csv"))
    (tmp_path / "wide.csv").write_text("a.png,1,extra\n")
    with pytest.raises(ValueError, match="expected 'path,label'"):
        open_dataset(str(tmp_path / "wide.csv"))


# --- specs and uris --------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["fashion-mnist:val", "fashion-mnist", "mnist:test", "/no/such/dir", "x.txt"])
def test_unknown_spec(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("a.png,1\n")
    with pytest.raises(ValueError, match="unknown dataset spec"):
        open_dataset(spec)


@pytest.mark.parametrize(
    "uri", ["fashion-mnist:val/3", "fashion-mnist:test", "fashion-mnist:test/-1", "fashion-mnist:test/x", "rel/a.png"]
)
def test_load_image_malformed_uri(uri):
    with pytest.raises(ValueError):
        load_image(uri)


@pytest.mark.fashion_mnist
def test_load_image_out_of_range():
    with pytest.raises(IndexError):
        load_image("fashion-mnist:test/10000")
