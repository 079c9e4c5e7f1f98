"""Dataset specs -> datasets of ``Sample(image, label, uri)``.

Specs accepted by :func:`open_dataset`:

- ``fashion-mnist:test`` / ``fashion-mnist:train``: the Debian package
  ``dataset-fashion-mnist`` (four gzipped IDX files), read with numpy. The directory is
  ``$PARASAL_FASHION_MNIST`` or ``/usr/share/datasets/fashion-mnist``. Sample ``i`` has
  uri ``fashion-mnist:<split>/<i>``; its id is ``i``.
- an image-folder directory: one subfolder per class (searched recursively); class index =
  sorted subfolder order, or the order of ``classes.txt`` (one name a line) inside it.
- a ``.csv`` file of ``path,label`` rows (header optional). Relative paths are resolved
  against the CSV's directory; labels are ints, or class names when a classes list is
  given (``classes=`` or a ``classes.txt`` beside the CSV).
- ``package.module:factory``: ``factory()`` returns any torch-style dataset (``__len__``
  and ``__getitem__(i) -> (image, label)``); see :class:`TorchDataset` for the contract.

``classes=`` (``--classes``) also orders an image folder's classes: class index = position
in the list, which must name every subfolder. ``class_source`` says where a dataset's class
order came from, so the indexer can print it.

File samples have the absolute path as uri. :func:`load_image` reopens any sample by uri.
``uri(i)`` and ``label(i)`` never decode an image: the indexer walks a dataset with them
and decodes only what it needs. A file that cannot be read or decoded raises
:class:`CorruptSample` so the caller can skip it instead of crashing mid-run.

Dataset files are not trusted more than uploads:

- every image is opened with a pixel limit checked on its header before decoding
  (images.py; ``max_pixels``, default 4096 x 4096): an oversized file is a CorruptSample;
- a file dataset's samples must resolve (symlinks and ``..`` followed) inside its *root*,
  the image folder or the CSV's directory: opening a dataset with a path outside refuses
  it (ValueError), and :func:`load_image` given the root refuses a file that has moved
  outside since (a symlink swapped in). ``allow_outside_root=True`` is the explicit opt-in;
  ``describe()`` records the root and the choice, so a bundle's reader honours it.
"""

from __future__ import annotations

import csv
import functools
import gzip
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .durable import sha256_file
from .images import DEFAULT_MAX_IMAGE_PIXELS, ImageRejected, open_image_limited

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_DEFAULT_DIR",
    "IMAGE_EXTENSIONS",
    "CorruptSample",
    "Sample",
    "Dataset",
    "FashionMNIST",
    "ImageFolder",
    "CsvDataset",
    "TorchDataset",
    "to_pil_image",
    "open_dataset",
    "parse_class_list",
    "load_image",
    "dataset_root",
    "fashion_mnist_dir",
    "fashion_mnist_arrays",
]

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
log = logging.getLogger(__name__)

FASHION_MNIST_ENV = "PARASAL_FASHION_MNIST"
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_PREFIX = "fashion-mnist:"
_FASHION_FILES = {  # split -> (images, labels), the names the Debian package installs
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
CLASSES_FILE = "classes.txt"


class CorruptSample(Exception):
    """A sample whose image cannot be read or decoded (missing, truncated, not an image,
    over the pixel limit, outside its dataset's root).

    ``reason`` never names a file. With ``sample_id`` (how a bundle reports it) the message
    names the sample, not the path, so a server can show it to clients; the path stays in
    ``uri`` for the server's log. Without it (the indexer's own use) the message names the file.
    """

    def __init__(self, uri: str, reason: str, sample_id: int | None = None):
        self.uri = uri
        self.reason = reason
        self.sample_id = sample_id
        super().__init__(
            f"cannot read image {uri}: {reason}"
            if sample_id is None
            else f"cannot read the image of sample {sample_id}: {reason}"
        )

    def __reduce__(self):  # picklable, so it crosses process boundaries (worker pools)
        return (type(self), (self.uri, self.reason, self.sample_id))


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    label: int
    uri: str


class Dataset:
    """A finite, indexable dataset. Subclasses implement ``__len__``, ``uri``, ``label``,
    ``_decode`` and ``describe``; ``__getitem__`` composes them."""

    spec: str
    classes: list[str] | None = None
    #: where the class order came from ("sorted subfolder names", "--classes", ...), for the indexer's output
    class_source: str | None = None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def uri(self, i: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def label(self, i: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, i: int) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        i = self._index(i)
        return Sample(image=self._decode(i), label=self.label(i), uri=self.uri(i))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, size={len(self)})"

    def _index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample index out of range [0, {n}) in {self.spec!r}")
        return i


# ---------------------------------------------------------------------------------------
# Fashion-MNIST (Debian dataset-fashion-mnist)


def fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding the four .gz files: argument, else $PARASAL_FASHION_MNIST,
    else the Debian package's location."""
    return Path(data_dir or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DEFAULT_DIR)


def _fashion_paths(split: str, data_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    if split not in _FASHION_FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; expected 'train' or 'test'")
    root = fashion_mnist_dir(data_dir)
    paths = tuple(root / name for name in _FASHION_FILES[split])
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST file(s) missing: {', '.join(missing)}. Install the Debian package "
            f"'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) or set "
            f"{FASHION_MNIST_ENV} to a directory holding {', '.join(_FASHION_FILES[split])}."
        )
    return paths  # type: ignore[return-value]


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path}: not an IDX file of the expected kind (magic {magic}, want {expected_magic})")
    ndim = magic & 0xFF
    dims = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated IDX file ({len(data) - offset} bytes for shape {dims})")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


@functools.lru_cache(maxsize=4)
def _fashion_cached(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(Path(images_path), 2051)  # (N, 28, 28) uint8
    labels = _read_idx(Path(labels_path), 2049).astype(np.int64)  # (N,)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    images.flags.writeable = False  # shared by every caller in this process
    labels.flags.writeable = False
    return images, labels


def fashion_mnist_arrays(split: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 28, 28) uint8, labels (N,) int64)``, read-only, cached per process."""
    images_path, labels_path = _fashion_paths(split, data_dir)
    return _fashion_cached(str(images_path.resolve()), str(labels_path.resolve()))


@functools.lru_cache(maxsize=8)
def _sha256_file(path: str, size: int, mtime_ns: int) -> str:  # size/mtime key the cache
    return sha256_file(path)


class FashionMNIST(Dataset):
    def __init__(self, split: str, data_dir: str | os.PathLike | None = None):
        self.split = split
        self.spec = f"{_FASHION_PREFIX}{split}"
        self._paths = _fashion_paths(split, data_dir)
        self.images, self.labels = fashion_mnist_arrays(split, data_dir)
        self.classes = list(FASHION_MNIST_CLASSES)
        self.class_source = "the Fashion-MNIST label order"

    def __len__(self) -> int:
        return len(self.labels)

    def uri(self, i: int) -> str:
        return f"{_FASHION_PREFIX}{self.split}/{self._index(i)}"

    def label(self, i: int) -> int:
        return int(self.labels[self._index(i)])

    def _decode(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i].copy())  # mode "L"; copy: the cache is shared

    def describe(self) -> dict:
        files = {}
        for p in self._paths:
            st = p.stat()
            files[p.name] = _sha256_file(str(p), st.st_size, st.st_mtime_ns)
        return {
            "spec": self.spec,
            "kind": "fashion-mnist",
            "size": len(self),
            "classes": list(self.classes),
            "path": str(self._paths[0].parent.resolve()),
            "split": self.split,
            "sha256": files,
        }


# ---------------------------------------------------------------------------------------
# Files: image folders and CSV lists


OUTSIDE_ROOT = "its file lies outside the dataset's root (index with --allow-outside-root to allow that)"


def _within(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _decode_file(path: str, root: str | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """The decoded image at ``path``; CorruptSample if it cannot be read, is over
    ``max_pixels``, or (given ``root``) resolves outside ``root``."""
    real = os.path.realpath(path)
    if root is not None and not _within(real, os.path.realpath(root)):
        raise CorruptSample(path, OUTSIDE_ROOT)
    # Confined: open the resolved path without following a symlink swapped in since.
    # Non-blocking, so that a FIFO in place of a file cannot hang the reader.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (getattr(os, "O_NOFOLLOW", 0) if root is not None else 0)
    try:
        fd = os.open(real if root is not None else path, flags)
    except OSError as e:
        raise CorruptSample(path, f"cannot open the file ({e.strerror or type(e).__name__})") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptSample(path, "not a regular file")
        try:
            return open_image_limited(f, max_pixels)
        except ImageRejected as e:
            raise CorruptSample(path, e.reason) from e


def _read_class_list(path: Path) -> list[str]:
    return _check_class_list([line.strip() for line in path.read_text(encoding="utf-8").splitlines()], str(path))


def _check_class_list(names: Sequence[str], where: str) -> list[str]:
    names = [str(n).strip() for n in names if str(n).strip()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: duplicate class names {dupes}")
    if not names:
        raise ValueError(f"{where}: no class names")
    return names


def parse_class_list(text: str | Sequence[str]) -> list[str]:
    """``--classes``: a file with one name a line, or names separated by commas ("a,b,c");
    a sequence is taken as the names themselves. ValueError for duplicates or no names."""
    if not isinstance(text, str):
        return _check_class_list(text, "--classes")
    path = Path(text).expanduser()
    if path.is_file():
        return _read_class_list(path)
    if "," not in text and (os.sep in text or path.suffix):
        raise ValueError(f"--classes {text!r}: no such file (give a file of names, one a line, or a,b,c)")
    return _check_class_list(text.split(","), "--classes")


class _FileDataset(Dataset):
    """Samples are image files: ``paths`` (absolute) and ``labels`` (ints), confined to
    ``base`` (the folder files must resolve inside) unless ``allow_outside_root``."""

    kind = "files"

    def __init__(
        self,
        spec: str,
        root: Path,
        paths: Sequence[str],
        labels: Sequence[int],
        classes: list[str] | None,
        *,
        base: Path,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        allow_outside_root: bool = False,
    ):
        self.spec = spec
        self.root = root
        self.base = base
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = classes
        self.max_pixels = int(max_pixels)
        self.allow_outside_root = bool(allow_outside_root)
        if not self.allow_outside_root:
            self._check_confined()

    def _check_confined(self) -> None:
        """ValueError naming the first sample whose file resolves outside ``base``."""
        real_base = os.path.realpath(self.base)
        outside = [p for p in self.paths if not _within(os.path.realpath(p), real_base)]
        if outside:
            raise ValueError(
                f"{self.spec}: {len(outside)} sample(s) resolve outside the dataset's root {self.base} "
                f"(e.g. {outside[0]}, through '..', an absolute path or a symlink); move them inside "
                "or pass --allow-outside-root"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def uri(self, i: int) -> str:
        return self.paths[self._index(i)]

    def label(self, i: int) -> int:
        return int(self.labels[self._index(i)])

    def _decode(self, i: int) -> Image.Image:
        return _decode_file(self.paths[i], None if self.allow_outside_root else str(self.base), self.max_pixels)

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "size": len(self),
            "classes": list(self.classes) if self.classes is not None else None,
            "path": str(self.root),
            "root": str(self.base),
            "allow_outside_root": self.allow_outside_root,
        }


class ImageFolder(_FileDataset):
    """One subfolder per class. Class order: ``classes`` (``--classes``, or the model's own
    class names), else ``classes.txt`` in the folder, else the sorted subfolder names."""

    kind = "image-folder"

    def __init__(
        self,
        root: str | os.PathLike,
        spec: str | None = None,
        classes: Sequence[str] | None = None,
        class_source: str = "--classes",
        **options,
    ):
        root = Path(os.path.abspath(root))
        subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        class_file = root / CLASSES_FILE
        if classes is not None:
            classes = _check_class_list(classes, class_source)
            self.class_source = class_source
        elif class_file.is_file():
            classes = _read_class_list(class_file)
            self.class_source = str(class_file)
        else:
            classes = subdirs
            self.class_source = "sorted subfolder names"
        unlisted = sorted(set(subdirs) - set(classes))
        if unlisted:
            raise ValueError(f"{root}: subfolder(s) {unlisted} are not listed in {self.class_source}")
        if not classes:
            raise ValueError(f"{root}: no class subfolders (expected one subfolder per class)")
        paths, labels = [], []
        for index, name in enumerate(classes):
            class_dir = root / name
            if not class_dir.is_dir():
                continue  # listed in classes.txt but no images: the class keeps its index
            for dirpath, dirnames, filenames in os.walk(class_dir):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fn in sorted(filenames):
                    if not fn.startswith(".") and os.path.splitext(fn)[1].lower() in IMAGE_EXTENSIONS:
                        paths.append(os.path.join(dirpath, fn))
                        labels.append(index)
        if not paths:
            raise ValueError(
                f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under its class subfolders"
            )
        super().__init__(spec or str(root), root, paths, labels, classes, base=root, **options)
        self.options = options

    def with_classes(self, classes: Sequence[str], source: str) -> ImageFolder:
        """The same folder with its classes in the order of ``classes`` (ValueError unless
        it names every subfolder)."""
        return ImageFolder(self.root, spec=self.spec, classes=classes, class_source=source, **self.options)


class CsvDataset(_FileDataset):
    kind = "csv"

    def __init__(
        self, csv_path: str | os.PathLike, classes: Sequence[str] | None = None, spec: str | None = None, **options
    ):
        csv_path = Path(os.path.abspath(csv_path))
        base = csv_path.parent
        self.class_source = "--classes" if classes is not None else "the CSV's integer labels"
        if classes is None and (base / CLASSES_FILE).is_file():
            classes = _read_class_list(base / CLASSES_FILE)
            self.class_source = str(base / CLASSES_FILE)
        classes = list(classes) if classes is not None else None
        by_name = {name: k for k, name in enumerate(classes)} if classes else {}
        paths, labels = [], []
        rows_seen = 0
        with open(csv_path, newline="", encoding="utf-8") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                rows_seen += 1
                if len(row) != 2:
                    raise ValueError(f"{csv_path}:{lineno}: expected 'path,label', got {len(row)} field(s)")
                path, raw = row[0].strip(), row[1].strip()
                label = _parse_label(raw, by_name)
                if label is None:
                    if rows_seen == 1:
                        continue  # a header row, e.g. "path,label"
                    hint = "" if classes else f" (class names need a {CLASSES_FILE} beside the CSV)"
                    raise ValueError(f"{csv_path}:{lineno}: label {raw!r} is not an int or known class{hint}")
                if label < 0 or (classes is not None and label >= len(classes)):
                    raise ValueError(f"{csv_path}:{lineno}: label {label} out of range")
                paths.append(os.path.normpath(os.path.join(base, os.path.expanduser(path))))
                labels.append(label)
        if not paths:
            raise ValueError(f"{csv_path}: no rows")
        super().__init__(spec or str(csv_path), csv_path, paths, labels, classes, base=base, **options)


# ---------------------------------------------------------------------------------------
# Any torch-style dataset, from a factory


class TorchDataset(Dataset):
    """``--data package.module:factory``: ``factory()`` returns a dataset object with
    ``__len__`` and ``__getitem__(i) -> (image, label, ...)`` (a torch ``Dataset``, a list, ...).

    The contract:

    - ``image``: a PIL image (any mode), or a numpy array / torch tensor, (H, W), (H, W, C)
      (numpy) or (C, H, W) (torch), of uint8 or of floats in [0, 1]. Arrays become an 8-bit
      PIL image; then the bundle's preprocessing (channels, resize, crop, mean/std) applies
      exactly as to a file, and the server replays it on uploads. So the dataset must not
      normalise itself: float values outside [0, 1] are skipped as unusable.
    - ``label``: an int (or a 0-d tensor), the model's class index. Labels are read from
      ``dataset.targets`` when it has one entry per sample (torchvision's convention),
      else from the items themselves (loading each one once). ``dataset.classes`` (a list
      of names), when present, names the classes.
    - ids: the item's index ``i`` (plus the bundle's offset for appends); uri
      ``<spec>/<i>``. ``GetSample(include_image)`` and explanations reopen the image by
      calling the factory again in the server (cached per process): that works when the
      module is importable there (``PYTHONPATH``) and the factory returns the same items in
      the same order; otherwise those calls answer that the sample's image is unavailable.
    """

    kind = "factory"

    def __init__(self, spec: str, obj=None):
        from .imports import import_object, module_location

        self.spec = str(spec)
        self.data = obj if obj is not None else _call_factory(import_object(self.spec))
        if not (hasattr(self.data, "__len__") and hasattr(self.data, "__getitem__")):
            kind = type(self.data).__name__
            raise ValueError(f"{self.spec}() returned {kind}: not a dataset (no __len__/__getitem__)")
        self.location = module_location(self.spec)
        names = getattr(self.data, "classes", None)
        self.classes = [str(c) for c in names] if isinstance(names, (list, tuple)) and names else None
        self.class_source = f"{self.spec}().classes" if self.classes else "the dataset's integer labels"
        targets = getattr(self.data, "targets", None)
        self._labels = None
        if targets is not None and len(targets) == len(self.data):
            self._labels = np.asarray([int(t) for t in targets], dtype=np.int64)
        self._item_labels: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.data)

    def uri(self, i: int) -> str:
        return f"{self.spec}/{self._index(i)}"

    def label(self, i: int) -> int:
        i = self._index(i)
        if self._labels is not None:
            return int(self._labels[i])
        if i not in self._item_labels:
            self._item_labels[i] = _item_label(self._item(i)[1], self.uri(i))
        return self._item_labels[i]

    @property
    def labels(self) -> np.ndarray:
        """Every label (from ``targets``, else loading each item once)."""
        if self._labels is None:
            self._labels = np.asarray([self.label(i) for i in range(len(self))], dtype=np.int64)
        return self._labels

    def _item(self, i: int):
        try:
            item = self.data[i]
        except Exception as e:
            # The user's dataset may name its files in the message: only the type reaches a
            # client (CorruptSample's reason is client-facing), the log keeps the text.
            log.warning("%s: the dataset raised %s: %s", self.uri(i), type(e).__name__, str(e)[:500])
            raise CorruptSample(self.uri(i), f"the dataset raised {type(e).__name__}") from e
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise CorruptSample(self.uri(i), f"item is {type(item).__name__}, not (image, label)")
        return item

    def __getitem__(self, i: int) -> Sample:
        i = self._index(i)
        item = self._item(i)
        uri = self.uri(i)
        label = int(self._labels[i]) if self._labels is not None else _item_label(item[1], uri)
        return Sample(image=to_pil_image(item[0], uri), label=label, uri=uri)

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "size": len(self),
            "classes": list(self.classes) if self.classes is not None else None,
            "factory": self.spec,
            "module": self.location,
        }


def _call_factory(factory):
    try:
        return factory()
    except Exception as e:
        raise ValueError(f"the dataset factory failed: {type(e).__name__}: {e}") from e


def _item_label(label, uri: str) -> int:
    try:
        return int(label.item() if hasattr(label, "item") else label)
    except (TypeError, ValueError) as e:
        raise CorruptSample(uri, f"label {label!r} is not an int") from e


def to_pil_image(image, uri: str = "") -> Image.Image:
    """A dataset item's image as PIL (see :class:`TorchDataset` for what is accepted)."""
    if isinstance(image, Image.Image):
        return image
    if hasattr(image, "detach"):  # a torch tensor, (C, H, W) or (H, W)
        array = image.detach().cpu().numpy()
        if array.ndim == 3:
            array = np.moveaxis(array, 0, -1)
    else:
        array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise CorruptSample(uri, f"image array of shape {array.shape}: expected (H, W), (H, W, 3) or (3, H, W)")
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise CorruptSample(uri, "float image with values outside [0, 1] (already normalised?)")
        array = np.round(array * 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


@functools.lru_cache(maxsize=4)
def _factory_dataset(spec: str) -> TorchDataset:
    return TorchDataset(spec)


def _parse_label(raw: str, by_name: dict[str, int]) -> int | None:
    if raw in by_name:
        return by_name[raw]
    try:
        return int(raw)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------
# Entry points


def open_dataset(
    spec: str,
    *,
    classes: Sequence[str] | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    allow_outside_root: bool = False,
) -> Dataset:
    """Open a dataset by spec (see the module docstring). ``classes`` orders image folders
    and names CSV labels; ``max_pixels`` and ``allow_outside_root`` apply to file datasets."""
    from .imports import ImportFailed, is_factory_spec

    spec = str(spec)
    options = {"max_pixels": max_pixels, "allow_outside_root": allow_outside_root}
    if spec.startswith(_FASHION_PREFIX):
        split = spec[len(_FASHION_PREFIX) :]
        if split not in _FASHION_FILES:
            raise ValueError(f"unknown dataset spec {spec!r}: use fashion-mnist:test or fashion-mnist:train")
        if classes is not None:
            raise ValueError("--classes does not apply to Fashion-MNIST (its labels are fixed)")
        return FashionMNIST(split)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolder(path, spec=spec, classes=classes, **options)
    if path.is_file() and path.suffix.lower() == ".csv":
        return CsvDataset(path, classes=classes, spec=spec, **options)
    if not path.exists() and is_factory_spec(spec):
        try:
            return TorchDataset(spec)
        except ImportFailed as e:
            raise ValueError(
                f"unknown dataset spec {spec!r}: no such file or directory, and as a dataset factory: {e}"
            ) from e
    why = "not a directory or .csv file" if path.exists() else "no such file or directory"
    raise ValueError(
        f"unknown dataset spec {spec!r} ({why}); expected fashion-mnist:test, fashion-mnist:train, "
        f"an image-folder directory, a .csv file of path,label rows or package.module:factory"
    )


def dataset_root(description: dict) -> str | None:
    """The folder a file dataset's samples must stay inside, from its ``describe()`` (older
    bundles record no root: the image folder, or the CSV's directory); None when the
    dataset was indexed with ``allow_outside_root`` or is not made of files."""
    if description.get("allow_outside_root") or description.get("kind") not in ("image-folder", "csv"):
        return None
    root = description.get("root")
    if root is None and description.get("path"):
        path = str(description["path"])
        root = os.path.dirname(path) if description.get("kind") == "csv" else path
    return root


def load_image(uri: str, *, root: str | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Reopen a sample by its uri: ``fashion-mnist:<split>/<i>`` or an absolute file path.

    Raises ValueError for a malformed uri, IndexError for an id outside the split and
    CorruptSample for a file that cannot be read, has more than ``max_pixels`` pixels or,
    given ``root``, resolves outside it. Callers exposing this over a network must restrict
    uris to those of their own bundle and pass its dataset's root (``Bundle.load_image``
    does both).
    """
    uri = str(uri)
    if uri.startswith(_FASHION_PREFIX):
        split, sep, index = uri[len(_FASHION_PREFIX) :].partition("/")
        if not sep or split not in _FASHION_FILES or not index.isdigit():
            raise ValueError(f"malformed Fashion-MNIST uri {uri!r}; expected fashion-mnist:<train|test>/<index>")
        images, _ = fashion_mnist_arrays(split)
        i = int(index)
        if i >= len(images):
            raise IndexError(f"{uri}: index outside [0, {len(images)})")
        return Image.fromarray(images[i].copy())
    if not os.path.isabs(uri):
        return _load_factory_image(uri)
    return _decode_file(uri, root, max_pixels)


def _load_factory_image(uri: str) -> Image.Image:
    """``package.module:factory/<i>``: item i of the factory's dataset, made again in this process."""
    from .imports import ImportFailed, is_factory_spec

    spec, sep, index = uri.rpartition("/")
    if not sep or not is_factory_spec(spec) or not index.isdigit():
        raise ValueError(
            f"unsupported sample uri {uri!r}; expected fashion-mnist:<split>/<i>, an absolute path "
            "or package.module:factory/<i>"
        )
    try:
        ds = _factory_dataset(spec)
    except (ImportFailed, ValueError) as e:
        log.warning("%s: cannot make the dataset again here: %s", uri, e)  # the detail stays in the log
        raise CorruptSample(uri, f"cannot make the dataset again here ({type(e).__name__})") from e
    i = int(index)
    if i >= len(ds):
        raise IndexError(f"{uri}: index outside [0, {len(ds)})")
    return ds[i].image
