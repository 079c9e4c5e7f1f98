"""The reference set of a bundle built with ``--reference-data``: reading ``reference.npz``.

Surprise and expectation (Hartley et al. §3) compare an indexed sample's filter importance
α with the distributions of α, per (class, filter), over a reference set (the training
split in the paper). ``reference.npz`` holds everything a reader needs about that set:

=====================  ==================  ==============================================
member                 shape, dtype        what
=====================  ==================  ==============================================
``format``             (1,) int64          :data:`REFERENCE_FORMAT`
``counts``             (K,) int64          reference samples per class
``values``             (M, N) float32      ClassFilterStats.to_arrays: each class's α, each
                                           column sorted, class after class
``ids``                (M,) int64          the reference samples' dataset indices, ascending
``labels``             (M,) int64          their labels, row-aligned with ``ids``
``uris``               (M,) str            their uris (reopened by ``load_image``)
``overall_ids``        (N, k) int64        Exemplars: top k reference ids per filter (−1: none)
``overall_alpha``      (N, k) float32      their α (NaN where the id is −1)
``class_ids``          (K, N, k) int64     the same within each class
``class_alpha``        (K, N, k) float32
=====================  ==================  ==============================================

:class:`ReferenceData` reads the file once, on first use (thread-safe), checks every
shape against the manifest's :class:`ReferenceInfo` and raises :class:`BundleCorrupt`
for anything that does not fit. Reference ids are the reference dataset's own indices
(``fashion-mnist:train/17`` is reference id 17), not bundle sample ids.
"""

from __future__ import annotations

import logging
import threading
import zipfile
from pathlib import Path

import numpy as np

from .errors import BundleCorrupt, SampleNotFound
from .manifest import REFERENCE_FILE, ReferenceInfo

__all__ = ["ReferenceData", "REFERENCE_FORMAT", "REFERENCE_MEMBERS", "check_reference_members"]

log = logging.getLogger(__name__)

REFERENCE_FORMAT = 1
REFERENCE_MEMBERS = (
    "format",
    "counts",
    "values",
    "ids",
    "labels",
    "uris",
    "overall_ids",
    "overall_alpha",
    "class_ids",
    "class_alpha",
)


def check_reference_members(path: Path, label: str) -> None:
    """Cheap check at open (the zip directory only): every member is there."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = sorted(set(REFERENCE_MEMBERS) - set(z.files))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BundleCorrupt(f"bundle {label}: {REFERENCE_FILE} cannot be read ({type(e).__name__}: {e})") from e
    if missing:
        raise BundleCorrupt(f"bundle {label}: {REFERENCE_FILE} lacks {', '.join(missing)}")


class ReferenceData:
    """The reference set of one opened bundle (``Bundle.reference``); see the module docstring.

    ``info``'s fields are exposed directly (``dataset``, ``num_samples``, ``layer``,
    ``method``, ``num_filters``, ``exemplars_per_filter``, ``high``, ``low``)."""

    def __init__(self, path: Path, info: ReferenceInfo, *, preprocessing, label: str, guard=None, max_pixels: int):
        self.path = Path(path)
        self.info = info
        self._preprocessing = preprocessing
        self._label = label  # how messages name the bundle (never a path)
        self._guard = guard  # the bundle's FileGuard: a file that shrank answers BundleCorrupt
        self._max_pixels = int(max_pixels)
        self._lock = threading.Lock()
        self._loaded: dict | None = None

    # -- the manifest's description -------------------------------------------------

    @property
    def dataset(self) -> str:
        return self.info.dataset

    @property
    def num_samples(self) -> int:
        return self.info.num_samples

    @property
    def layer(self) -> str:
        return self.info.layer

    @property
    def method(self) -> str:
        return self.info.method

    @property
    def num_filters(self) -> int:
        return self.info.num_filters

    @property
    def exemplars_per_filter(self) -> int:
        return self.info.exemplars_per_filter

    @property
    def high(self) -> float:
        return self.info.high

    @property
    def low(self) -> float:
        return self.info.low

    # -- contents (loaded on first use) ---------------------------------------------

    @property
    def stats(self):
        """parasal.core.ClassFilterStats over the reference set (µ_cn, P_cn(q), counts)."""
        return self._contents()["stats"]

    @property
    def exemplars(self):
        """parasal.core.Exemplars: ids are reference ids (this set's dataset indices)."""
        return self._contents()["exemplars"]

    @property
    def ids(self) -> np.ndarray:
        """(M,) int64 reference ids, ascending (read-only)."""
        return self._contents()["ids"]

    @property
    def labels(self) -> np.ndarray:
        """(M,) int64, row-aligned with ``ids`` (read-only)."""
        return self._contents()["labels"]

    def uri(self, ref_id: int) -> str:
        return str(self._contents()["uris"][self._row(ref_id)])

    def label(self, ref_id: int) -> int:
        return int(self.labels[self._row(ref_id)])

    def load_image(self, ref_id: int, max_pixels: int | None = None):
        """The reference sample's image (PIL), as ``Bundle.load_image`` reopens indexed ones:
        confined to the reference dataset's root, refused above ``max_pixels`` (CorruptSample)."""
        from .datasets import CorruptSample, dataset_root, load_image

        ref_id = int(ref_id)
        uri = self.uri(ref_id)
        limit = self._max_pixels if max_pixels is None else int(max_pixels)
        try:
            return load_image(uri, root=dataset_root(self.info.description), max_pixels=limit)
        except CorruptSample as e:
            log.warning("bundle %s: reference sample %d: cannot read %s: %s", self._label, ref_id, e.uri, e.reason)
            raise CorruptSample(e.uri, e.reason, ref_id) from None

    def preprocess(self, image):
        """``(C, H, W)`` float32 tensor: the model input, with the bundle's own preprocessing."""
        return self._preprocessing(image)

    def _row(self, ref_id: int) -> int:
        ids = self.ids
        ref_id = int(ref_id)
        row = int(np.searchsorted(ids, ref_id))
        if row >= len(ids) or ids[row] != ref_id:
            raise SampleNotFound(f"no reference sample with id {ref_id} in bundle {self._label}")
        return row

    def _contents(self) -> dict:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
        elif self._guard is not None:
            self._guard.check()
        return self._loaded

    def _load(self) -> dict:
        from parasal.core import ClassFilterStats, Exemplars

        if self._guard is not None:
            self._guard.check()
        try:
            with np.load(self.path, allow_pickle=False) as z:
                a = {name: z[name] for name in REFERENCE_MEMBERS}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise BundleCorrupt(f"bundle {self._label}: {REFERENCE_FILE} cannot be read ({type(e).__name__})") from e
        self._check(a)
        try:
            stats = ClassFilterStats.from_arrays({"counts": a["counts"], "values": a["values"]})
        except ValueError as e:
            raise BundleCorrupt(f"bundle {self._label}: {REFERENCE_FILE} is inconsistent: {e}") from e
        # ClassFilterStats sorts each class's values on first use, mutating itself: done here,
        # under the lock, so that concurrent readers (server threads) only ever read it.
        for c in range(stats.num_classes):
            stats.values(c)
        stats.mean, stats.percentile(self.info.high), stats.percentile(self.info.low)
        exemplars = Exemplars(a["overall_ids"], a["overall_alpha"], a["class_ids"], a["class_alpha"])
        for name in ("ids", "labels", "uris", "overall_ids", "overall_alpha", "class_ids", "class_alpha"):
            a[name].flags.writeable = False
        return {"stats": stats, "exemplars": exemplars, "ids": a["ids"], "labels": a["labels"], "uris": a["uris"]}

    def _check(self, a: dict) -> None:
        """Every shape and invariant against the manifest; BundleCorrupt naming the first that fails."""
        info = self.info
        counts, values, ids, labels = a["counts"], a["values"], a["ids"], a["labels"]
        m, n, k = info.num_samples, info.num_filters, info.exemplars_per_filter
        kk = len(counts)
        problems = []
        if a["format"].reshape(-1)[:1].tolist() != [REFERENCE_FORMAT]:
            problems.append(f"format {a['format'].reshape(-1)[:1].tolist()}, expected [{REFERENCE_FORMAT}]")
        if counts.ndim != 1 or counts.dtype.kind not in "iu" or int(counts.sum()) != m or counts.min(initial=0) < 0:
            problems.append(f"class counts sum to {int(counts.sum())}, the manifest says {m} reference samples")
        if values.shape != (m, n) or values.dtype != np.float32:
            problems.append(f"values are {values.dtype} {values.shape}, expected float32 ({m}, {n})")
        if ids.shape != (m,) or labels.shape != (m,) or a["uris"].shape != (m,):
            problems.append(f"ids, labels and uris have shapes {ids.shape}, {labels.shape}, {a['uris'].shape}")
        elif m and not np.all(np.diff(ids) > 0):
            problems.append("reference ids are not strictly increasing")
        elif m and (
            labels.min() < 0 or labels.max() >= kk or not np.array_equal(np.bincount(labels, minlength=kk), counts)
        ):
            problems.append("labels do not match the class counts")
        for name, shape in (("overall", (n, k)), ("class", (kk, n, k))):
            if a[f"{name}_ids"].shape != shape or a[f"{name}_alpha"].shape != shape:
                problems.append(f"{name} exemplars have shape {a[f'{name}_ids'].shape}, expected {shape}")
        if problems:
            raise BundleCorrupt(f"bundle {self._label}: {REFERENCE_FILE} is inconsistent: " + "; ".join(problems))

    def __repr__(self) -> str:
        return (
            f"ReferenceData({self.dataset!r}, samples={self.num_samples}, layer={self.layer!r}, "
            f"method={self.method!r}, filters={self.num_filters})"
        )
