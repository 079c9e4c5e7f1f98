"""Read-only access to a bundle: the one reader used by the server, the indexer and tests.

``open_bundle(path)`` resolves ``CURRENT`` once (see manifest.py for the layout and the
generation scheme), checks the format version, the manifest's own checksum and every data
file (sha256 by default; ``verify="size"`` checks sizes only, for bundles too large to
hash at every open; ``verify=False`` checks nothing), cross-checks array shapes, and, when
given the model it will be used with, refuses a different fingerprint or filter layout.

Nothing here writes to the bundle directory: LMDB is opened read-only with ``lock=False``
(no lock file), the FAISS index with ``IO_FLAG_READ_ONLY`` (memory-mapped where FAISS
can), ``profiles.npy`` as a read-only memmap. A Bundle is safe to share between threads
(CPU FAISS searches are concurrent; a GPU clone serializes its searches).

Searching (exact, FAISS candidates, row filters, layer subsets, re-ranking) is search.py's;
``Bundle.search`` delegates to it. Appends copy a generation's rows with ``copy_rows``.

While open, a bundle trusts its files no more than it must: every read from a mapped file
first checks that the file has not shrunk (guard.py: a truncation would otherwise kill the
process with SIGBUS), and sample images are reopened with a pixel limit and confined to
their dataset's root (datasets.py). Errors raised while reading name the bundle by
``name`` (the server passes its bundle name) and the sample id, never a path on the
machine; the path goes to the log.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import lmdb
import numpy as np

from parasal.core import RunningStats

from . import faiss_index
from .durable import read_npz
from .errors import BundleCorrupt, ModelMismatch, NoReferenceData, SampleNotFound
from .guard import FileGuard
from .images import DEFAULT_MAX_IMAGE_PIXELS
from .manifest import (
    ALPHA_FILE,
    INDEX_FILE,
    META_FILE,
    PROFILES_FILE,
    REFERENCE_FILE,
    STATS_FILE,
    TABLE_FILE,
    Manifest,
    read_manifest,
    resolve_generation,
    verify_files,
)
from .metadata import MetadataWriter, SampleMeta, acquire_reader, decode_meta, get_records, iter_records, release_reader
from .reference_data import ReferenceData, check_reference_members
from .scoring import as_tensor
from .search import BundleSearcher

__all__ = ["Bundle", "SampleMeta", "open_bundle", "REFERENCE_COLUMNS"]

log = logging.getLogger(__name__)

#: table.npz columns of a bundle with reference data: beta float32, the counts int32
REFERENCE_COLUMNS = ("beta", "num_surprise", "num_expectation")


def open_bundle(
    path: str | os.PathLike,
    *,
    model=None,
    verify: bool | str = True,
    gpu: bool | None = None,
    name: str | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    weights: str | os.PathLike | None = None,
) -> Bundle:
    """Open the bundle at ``path`` (a bundle root or one generation directory).

    ``model``: a LoadedModel the bundle will be used with; its fingerprint and filter
    layout must match (:class:`ModelMismatch`). ``verify``: True/"sha256", "size" or
    False (see module docstring). ``gpu``: clone the index to a GPU; None = when
    ``faiss.get_num_gpus() > 0``. ``name``: how errors raised while reading name the
    bundle (default: its path). ``max_image_pixels``: the largest sample image
    ``load_image`` decodes. ``weights``: load the model from this file (a state dict, or
    the TorchScript archive) instead of the bundle's own copy (``model.pt``) or, for
    bundles without one, the path it was built from; its fingerprint must still match.
    Raises :class:`BundleCorrupt` or :class:`BundleVersionMismatch` for a bundle that
    cannot be used, saying why.
    """
    return Bundle(
        path, model=model, verify=verify, gpu=gpu, name=name, max_image_pixels=max_image_pixels, weights=weights
    )


class Bundle:
    """One opened generation (see ``open_bundle``): its manifest, rows, metadata and search."""

    def __init__(
        self,
        path,
        *,
        model=None,
        verify: bool | str = True,
        gpu: bool | None = None,
        name: str | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        weights: str | os.PathLike | None = None,
    ):
        self.path = Path(path)
        self._weights = weights
        self.name = name or str(self.path)
        self.max_image_pixels = int(max_image_pixels)
        self.generation_path = resolve_generation(self.path)
        raw = read_manifest(self.generation_path, check=verify is not False)
        verify_files(self.generation_path, raw, verify)
        self._read_arrays(raw)
        self._check_consistency()
        n = len(self.ids)
        # Strictly increasing ids spanning n values are first_id, first_id + 1, ...
        self._first_id = int(self.ids[0]) if n else 0
        self._contiguous = bool(n) and int(self.ids[-1]) - self._first_id == n - 1
        if model is not None:
            self.check_model(model)
        self._searcher = self._open_index(gpu)
        self._meta_path = self.generation_path / META_FILE
        try:
            self._env = acquire_reader(self._meta_path)
        except lmdb.Error as e:
            raise BundleCorrupt(f"bundle {self.generation_path}: cannot open {META_FILE} ({e})") from e
        mapped = (PROFILES_FILE, META_FILE, INDEX_FILE) + ((ALPHA_FILE, REFERENCE_FILE) if self.has_reference else ())
        try:  # every mapped file (FAISS maps index.faiss for some index types), and the lazily read reference.npz
            self._guard = FileGuard(self.generation_path, mapped, self.name)
        except BundleCorrupt:
            release_reader(self._meta_path)
            raise
        self._reference = self._open_reference()
        self._closed = False

    def _read_arrays(self, raw: dict) -> None:
        """The typed manifest, statistics, label table and profiles memmap; BundleCorrupt
        for a field or file that does not parse."""
        try:
            m = Manifest.from_dict(raw)
            # Where the model loads from, resolved once here so that every copy of the
            # manifest (a saliency child process gets one) loads the same file.
            source = self._weights or (m.model.file and self.generation_path / m.model.file)
            if source:
                m = dataclasses.replace(m, model=dataclasses.replace(m.model, path=os.path.abspath(source)))
            self.manifest = m
            self.layout = m.layout
            self.preprocessing = m.preprocessing
            self.generation = m.generation
            self.stats = RunningStats.from_arrays(read_npz(self.generation_path / STATS_FILE))
            self._table = read_npz(self.generation_path / TABLE_FILE)
            for column in self._table.values():
                column.flags.writeable = False  # shared with callers (.ids, .labels, ...)
            self.ids = self._table["ids"]
            for column in ("label", "predicted", "correct"):
                self._table[column]
            self._profiles = np.load(self.generation_path / PROFILES_FILE, mmap_mode="r")
            self._alpha = None
            if m.reference is not None:
                self._alpha = np.load(self.generation_path / ALPHA_FILE, mmap_mode="r")
                for column in REFERENCE_COLUMNS:
                    self._table[column]
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise BundleCorrupt(f"bundle {self.generation_path} is damaged: {type(e).__name__}: {e}") from e

    def _check_consistency(self) -> None:
        n, f = len(self.ids), self.layout.num_filters
        problems = []
        if self._profiles.shape != (n, f) or self._profiles.dtype != np.float16:
            problems.append(
                f"profiles.npy is {self._profiles.dtype} {self._profiles.shape}, expected float16 ({n}, {f})"
            )
        if any(len(self._table[c]) != n for c in self._table):
            problems.append("table.npz columns differ in length")
        if self.stats.num_filters != f:
            problems.append(f"stats.npz covers {self.stats.num_filters} filters, the layout {f}")
        if n != self.manifest.counts.samples:
            problems.append(f"{n} rows but the manifest counts {self.manifest.counts.samples} samples")
        if n and not np.all(np.diff(self.ids) > 0):
            problems.append("ids are not strictly increasing")
        ref = self.manifest.reference
        if ref is not None and (self._alpha.shape != (n, ref.num_filters) or self._alpha.dtype != np.float32):
            problems.append(
                f"alpha.npy is {self._alpha.dtype} {self._alpha.shape}, expected float32 ({n}, {ref.num_filters})"
            )
        if problems:
            raise BundleCorrupt(f"bundle {self.generation_path} is inconsistent: " + "; ".join(problems))

    def _open_index(self, gpu: bool | None) -> BundleSearcher:
        n, f = len(self.ids), self.layout.num_filters
        try:
            self._index = faiss_index.load_index(self.generation_path / INDEX_FILE, nprobe=self.manifest.index.nprobe)
        except RuntimeError as e:
            raise BundleCorrupt(
                f"bundle {self.generation_path}: cannot read {INDEX_FILE} ({str(e).strip().splitlines()[-1][:200]})"
            ) from e
        if self._index.ntotal != n or self._index.d != f:
            raise BundleCorrupt(
                f"bundle {self.generation_path} is inconsistent: index holds {self._index.ntotal} "
                f"vectors of dimension {self._index.d}, expected {n} of {f}"
            )
        gpu_index = faiss_index.to_gpu(self._index) if gpu is not False else None
        if gpu and gpu_index is None:
            log.warning("no usable GPU for FAISS; searching on CPU")
        flat = faiss_index.flat_vectors(self._index)  # an exact Flat index's vectors: scanned as one product
        return BundleSearcher(
            self.ids,
            self.layout,
            self._profiles,
            self._index,
            index_type=self.manifest.index.type,
            gpu=gpu_index,
            flat=None if flat is None else as_tensor(flat),
        )

    def _open_reference(self) -> ReferenceData | None:
        info = self.manifest.reference
        if info is None:
            return None
        path = self.generation_path / REFERENCE_FILE
        try:
            check_reference_members(path, self.name)
        except BundleCorrupt:
            self._guard.close()
            release_reader(self._meta_path)
            raise
        return ReferenceData(
            path,
            info,
            preprocessing=self.preprocessing,
            label=self.name,
            guard=self._guard,
            max_pixels=self.max_image_pixels,
        )

    # -- description ------------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        return self.manifest.counts.samples

    @property
    def num_misclassified(self) -> int:
        return self.manifest.counts.misclassified

    @property
    def num_skipped(self) -> int:
        return self.manifest.counts.skipped

    @property
    def num_filters(self) -> int:
        return self.layout.num_filters

    @property
    def index_type(self) -> str:
        return self.manifest.index.type

    @property
    def fingerprint(self) -> str:
        return self.manifest.model.fingerprint

    @property
    def classes(self) -> list[str] | None:
        """Class names of the first dataset, when it has them."""
        return self.manifest.classes

    @property
    def exact_vectors(self):
        """(N, F) float32 CPU tensor: the normalised rows an exact ``Flat`` index searches,
        in row order, sharing FAISS's memory (read-only); None for every other index type."""
        return None if self._searcher is None else self._searcher.flat

    @property
    def labels(self) -> np.ndarray:
        return self._table["label"]

    # -- surprise and expectation (bundles built with --reference-data) -----------------

    @property
    def has_reference(self) -> bool:
        """Whether the bundle was built with ``--reference-data`` (α, β, surprise counts)."""
        return self.manifest.reference is not None

    @property
    def reference(self) -> ReferenceData | None:
        """The reference set (statistics, exemplars, its samples); None without reference data."""
        return self._reference

    def alpha(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n, N) float32 filter importance α of samples by id (N: filters of ``reference.layer``).

        NoReferenceData for a bundle built without ``--reference-data``; SampleNotFound for an unknown id."""
        self._require_reference()
        self._check_open()
        return np.array(self._alpha[self.rows_of(ids)], dtype=np.float32)

    @property
    def beta(self) -> np.ndarray:
        """(num_rows,) float32 β (Hartley et al. eq. 2), row order = ``ids``; NaN where the
        sample's class has no reference samples. NoReferenceData without reference data."""
        self._require_reference()
        return self._table["beta"]

    @property
    def num_surprise(self) -> np.ndarray:
        """(num_rows,) int32 surprise filters of each row (α above P_cn(``reference.high``))."""
        self._require_reference()
        return self._table["num_surprise"]

    @property
    def num_expectation(self) -> np.ndarray:
        """(num_rows,) int32 expectation filters of each row (α below P_cn(``reference.low``))."""
        self._require_reference()
        return self._table["num_expectation"]

    def _require_reference(self) -> None:
        if self.manifest.reference is None:
            raise NoReferenceData.for_bundle(self.name)

    @property
    def predicted(self) -> np.ndarray:
        return self._table["predicted"]

    @property
    def correct(self) -> np.ndarray:
        return self._table["correct"]

    def check_model(self, model) -> None:
        """Raise ModelMismatch unless ``model`` (a LoadedModel) is the one this bundle was built with."""
        if model.fingerprint != self.fingerprint:
            raise ModelMismatch(
                f"bundle {self.path} was built with a different model: weights fingerprint "
                f"{self.fingerprint[:12]}… (bundle) != {model.fingerprint[:12]}… (given model)"
            )
        if model.layout.to_dict() != self.layout.to_dict():
            raise ModelMismatch(
                f"bundle {self.path} was built with a different filter layout "
                f"({self.layout.num_filters} filters in {len(self.layout)} layers; the model has "
                f"{model.layout.num_filters} in {len(model.layout)})"
            )

    # -- rows, metadata, profiles -----------------------------------------------------

    def rows_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row positions of sample ids; SampleNotFound for an unknown id."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        rows = np.searchsorted(self.ids, ids)
        bad = rows >= len(self.ids)
        bad[~bad] = self.ids[rows[~bad]] != ids[~bad]
        if np.any(bad):
            raise SampleNotFound(f"no sample with id {int(ids[np.argmax(bad)])} in bundle {self.name}")
        return rows

    def row_of(self, sample_id: int) -> int:
        """Row position of one sample id (``rows_of`` without arrays: ids of a dataset split
        are usually 0..N-1, rows then equal ids); SampleNotFound for an unknown id."""
        sample_id = int(sample_id)
        n = len(self.ids)
        if self._contiguous:
            row = sample_id - self._first_id
            if 0 <= row < n:
                return row
        else:
            row = int(np.searchsorted(self.ids, sample_id))
            if row < n and self.ids[row] == sample_id:
                return row
        raise SampleNotFound(f"no sample with id {sample_id} in bundle {self.name}")

    def meta(self, sample_id: int) -> SampleMeta:
        return self.metas([sample_id])[0]

    def metas(self, ids: Sequence[int]) -> list[SampleMeta]:
        ids = [int(i) for i in ids]
        self._check_open()
        values = get_records(self._env, ids)
        out = []
        for i, v in zip(ids, values):
            if v is None:
                raise SampleNotFound(f"no sample with id {i} in bundle {self.name}")
            out.append(decode_meta(i, v))
        return out

    def profile(self, sample_id: int) -> np.ndarray:
        """(F,) float32 standardized profile (as stored: float16 precision)."""
        self._check_open()
        return np.array(self._profiles[self.row_of(sample_id)], dtype=np.float32)

    def profiles(self, ids: Sequence[int]) -> np.ndarray:
        self._check_open()
        return np.asarray(self._profiles[self.rows_of(ids)], dtype=np.float32)  # (n, F)

    def rows_where(
        self,
        misclassified: bool | None = None,
        labels: Sequence[int] | None = None,
        predicted: Sequence[int] | None = None,
        *,
        beta_below: float | None = None,
        beta_above: float | None = None,
        only_with_surprise: bool = False,
        only_with_expectation: bool = False,
    ) -> np.ndarray:
        """Bool mask over rows, from the table (no LMDB access).

        ``beta_below``/``beta_above``: β strictly below / above the value (a NaN β, a class
        without reference samples, matches neither); ``only_with_surprise`` /
        ``only_with_expectation``: rows with at least one such filter. These four raise
        NoReferenceData on a bundle built without reference data."""
        mask = np.ones(len(self.ids), bool)
        if beta_below is not None or beta_above is not None or only_with_surprise or only_with_expectation:
            self._require_reference()
            if beta_below is not None:
                mask &= self._table["beta"] < float(beta_below)
            if beta_above is not None:
                mask &= self._table["beta"] > float(beta_above)
            if only_with_surprise:
                mask &= self._table["num_surprise"] > 0
            if only_with_expectation:
                mask &= self._table["num_expectation"] > 0
        if misclassified is not None:
            mask &= ~self._table["correct"] if misclassified else self._table["correct"]
        if labels is not None:
            mask &= np.isin(self._table["label"], np.asarray(list(labels), np.int64))
        if predicted is not None:
            mask &= np.isin(self._table["predicted"], np.asarray(list(predicted), np.int64))
        return mask

    def copy_rows(
        self,
        profiles: np.ndarray,
        table: dict[str, np.ndarray],
        meta: MetadataWriter,
        block_rows: int = 4096,
        *,
        alpha: np.ndarray | None = None,
    ) -> int:
        """Copy every row into the first ``num_samples`` rows of a new generation (appends):
        the float16 profiles byte for byte into ``profiles`` (N', F), each column of the
        label table into ``table[column]``, the metadata records, undecoded, into
        ``meta``, and, for a bundle with reference data, α into ``alpha`` (N', N). Returns
        the number of rows copied."""
        self._check_open()
        n = len(self.ids)
        for a in range(0, n, block_rows):
            b = min(n, a + block_rows)
            profiles[a:b] = self._profiles[a:b]
            if alpha is not None:
                alpha[a:b] = self._alpha[a:b]
        for column, values in self._table.items():
            table[column][:n] = values
        for sample_id, value in iter_records(self._env):
            meta.put(sample_id, value)
        return n

    # -- search -----------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        layers: Sequence[str] | None = None,
        exclude_ids: Sequence[int] | None = None,
        rerank: int | None = None,
    ) -> list[list[tuple[int, float]]]:
        """Nearest samples by cosine for each standardized query profile (see search.py).

        ``rerank``: approximate indexes fetch this many candidates and re-score them exactly
        against the stored profiles (default max(4k, 64); 0 returns the index's own scores).
        Ignored by the exact ``Flat`` index and by ``layers`` searches, which are exact.
        """
        self._check_open()
        return self._searcher.search(queries, k, allowed=allowed, layers=layers, exclude_ids=exclude_ids, rerank=rerank)

    # -- model and images -------------------------------------------------------------

    def load_model(self):
        """The LoadedModel this bundle was built with (ModelMismatch if its weights changed)."""
        from .models import load_model_from_manifest

        return load_model_from_manifest(self.manifest)

    def load_image(self, sample_id: int, max_pixels: int | None = None):
        """The sample's image (PIL), reopened from its uri, refused (CorruptSample naming the
        sample, not the file) when it cannot be read, has more than ``max_pixels`` pixels
        (default: the bundle's ``max_image_pixels``) or lies outside its dataset's root."""
        from .datasets import CorruptSample, dataset_root, load_image

        sample_id = int(sample_id)
        uri = self.meta(sample_id).uri
        limit = self.max_image_pixels if max_pixels is None else int(max_pixels)
        try:
            return load_image(uri, root=dataset_root(self._dataset_of(sample_id).description), max_pixels=limit)
        except CorruptSample as e:
            log.warning("bundle %s: sample %d: cannot read image %s: %s", self.name, sample_id, e.uri, e.reason)
            raise CorruptSample(e.uri, e.reason, sample_id) from None

    def _dataset_of(self, sample_id: int):
        """The manifest's entry for the dataset whose id range holds ``sample_id``."""
        chosen = self.manifest.datasets[0]
        for d in self.manifest.datasets:  # in id order: each append's ids follow the previous ones
            if d.id_offset is not None and d.id_offset <= sample_id:
                chosen = d
        return chosen

    # -- lifetime ---------------------------------------------------------------------

    def _check_open(self) -> None:
        """Before every read: the bundle is open and no mapped file shrank (BundleCorrupt)."""
        if self._closed:
            raise ValueError(f"bundle {self.name} is closed")
        self._guard.check()

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._guard.close()
        release_reader(self._meta_path)
        self._env = None
        self._searcher = None
        self._index = None
        self._profiles = None
        self._alpha = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return (
            f"Bundle({str(self.path)!r}, generation={getattr(self, 'generation', '?')}, "
            f"samples={self.num_samples}, index={self.index_type!r})"
        )
