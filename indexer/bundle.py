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

Search semantics (cosine similarity; queries are *standardized* profiles, normalised here):

- no filter: the FAISS index (exact for the default ``Flat``). On CPU the exact ``Flat``
  index is scanned as one matrix product over its stored vectors for all queries at once
  (``faiss_index.flat_scan``; FAISS scans once per query below 20 queries), row filters
  included. Approximate index types fetch max(4k, 64) candidates and re-score them
  exactly against the stored float16 profiles (``rerank=``), so their similarities are
  true cosines;
- ``allowed`` (bool per row) and/or ``exclude_ids``: the index restricted to those rows
  with a FAISS ID selector; any query that gets fewer than ``min(k, #allowed)`` results
  that way (approximate indexes, GPU) is answered by exact search over the allowed rows;
- ``layers``: exact search over only those layers' dimensions of the stored float16
  profiles, each row renormalised over the subset (paper Fig. 5: shallow vs deep).

Each query's result is a list of ``(sample id, cosine)``, best first, of exactly
``min(k, #allowed rows)`` entries.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import lmdb
import numpy as np

from parasal.core import FilterLayout, RunningStats

from . import faiss_index
from .durable import read_npz
from .errors import BundleCorrupt, ModelMismatch, SampleNotFound
from .manifest import (INDEX_FILE, META_FILE, PROFILES_FILE, STATS_FILE, TABLE_FILE, read_manifest,
                       resolve_generation, verify_files)  # fmt: skip
from .metadata import SampleMeta, acquire_reader, decode_meta, get_records, release_reader
from .preprocessing import Preprocessing

__all__ = ["Bundle", "SampleMeta", "open_bundle"]

log = logging.getLogger(__name__)

_EXACT_CHUNK_BYTES = 256 << 20  # float32 working set per chunk of exact search


def open_bundle(path: str | os.PathLike, *, model=None, verify: bool | str = True, gpu: bool | None = None) -> "Bundle":
    """Open the bundle at ``path`` (a bundle root or one generation directory).

    ``model``: a LoadedModel the bundle will be used with; its fingerprint and filter
    layout must match (:class:`ModelMismatch`). ``verify``: True/"sha256", "size" or
    False (see module docstring). ``gpu``: clone the index to a GPU; None = when
    ``faiss.get_num_gpus() > 0``. Raises :class:`BundleCorrupt` or
    :class:`BundleVersionMismatch` for a bundle that cannot be used, saying why.
    """
    return Bundle(path, model=model, verify=verify, gpu=gpu)


class Bundle:
    def __init__(self, path, *, model=None, verify: bool | str = True, gpu: bool | None = None):
        self.path = Path(path)
        self.generation_path = resolve_generation(self.path)
        self.manifest = read_manifest(self.generation_path, check=verify is not False)
        verify_files(self.generation_path, self.manifest, verify)
        m = self.manifest
        try:
            self.layout = FilterLayout.from_dict(m["layout"])
            self.preprocessing = Preprocessing.from_dict(m["preprocessing"])
            self.generation = int(m["generation"])
            stats = read_npz(self.generation_path / STATS_FILE)
            self.stats = RunningStats.from_arrays(stats)
            self._table = read_npz(self.generation_path / TABLE_FILE)
            for column in self._table.values():
                column.flags.writeable = False  # shared with callers (.ids, .labels, ...)
            self.ids = self._table["ids"]
            for column in ("label", "predicted", "correct"):
                self._table[column]
            self._profiles = np.load(self.generation_path / PROFILES_FILE, mmap_mode="r")
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise BundleCorrupt(f"bundle {self.generation_path} is damaged: {type(e).__name__}: {e}") from e
        n, f = len(self.ids), self.layout.num_filters
        problems = []
        if self._profiles.shape != (n, f) or self._profiles.dtype != np.float16:
            problems.append(f"profiles.npy is {self._profiles.dtype} {self._profiles.shape}, expected float16 ({n}, {f})")
        if any(len(self._table[c]) != n for c in self._table):
            problems.append("table.npz columns differ in length")
        if self.stats.num_filters != f:
            problems.append(f"stats.npz covers {self.stats.num_filters} filters, the layout {f}")
        if n != m["counts"]["samples"]:
            problems.append(f"{n} rows but the manifest counts {m['counts']['samples']} samples")
        if n and not np.all(np.diff(self.ids) > 0):
            problems.append("ids are not strictly increasing")
        if problems:
            raise BundleCorrupt(f"bundle {self.generation_path} is inconsistent: " + "; ".join(problems))
        # Strictly increasing ids spanning n values are first_id, first_id + 1, ...
        self._first_id = int(self.ids[0]) if n else 0
        self._contiguous = bool(n) and int(self.ids[-1]) - self._first_id == n - 1
        if model is not None:
            self.check_model(model)
        try:
            self._index = faiss_index.load_index(self.generation_path / INDEX_FILE, nprobe=m["index"].get("nprobe"))
        except RuntimeError as e:
            raise BundleCorrupt(f"bundle {self.generation_path}: cannot read {INDEX_FILE} "
                                f"({str(e).strip().splitlines()[-1][:200]})") from e  # fmt: skip
        if self._index.ntotal != n or self._index.d != f:
            raise BundleCorrupt(f"bundle {self.generation_path} is inconsistent: index holds {self._index.ntotal} "
                                f"vectors of dimension {self._index.d}, expected {n} of {f}")  # fmt: skip
        self._gpu = faiss_index.to_gpu(self._index) if gpu is not False else None
        flat = faiss_index.flat_vectors(self._index)  # an exact Flat index's vectors: scanned as one product
        self._flat = None if flat is None else faiss_index.as_tensor(flat)
        if gpu and self._gpu is None:
            log.warning("no usable GPU for FAISS; searching on CPU")
        self._meta_path = self.generation_path / META_FILE
        try:
            self._env = acquire_reader(self._meta_path)
        except lmdb.Error as e:
            raise BundleCorrupt(f"bundle {self.generation_path}: cannot open {META_FILE} ({e})") from e
        self._closed = False

    # -- description ------------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        return int(self.manifest["counts"]["samples"])

    @property
    def num_misclassified(self) -> int:
        return int(self.manifest["counts"]["misclassified"])

    @property
    def num_skipped(self) -> int:
        return int(self.manifest["counts"]["skipped"])

    @property
    def num_filters(self) -> int:
        return self.layout.num_filters

    @property
    def index_type(self) -> str:
        return self.manifest["index"]["type"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["model"]["fingerprint"]

    @property
    def classes(self) -> list[str] | None:
        """Class names of the first dataset, when it has them."""
        return self.manifest["datasets"][0]["description"].get("classes")

    @property
    def exact_vectors(self):
        """(N, F) float32 CPU tensor: the normalised rows an exact ``Flat`` index searches,
        in row order, sharing FAISS's memory (read-only); None for every other index type."""
        return self._flat

    @property
    def labels(self) -> np.ndarray:
        return self._table["label"]

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
            raise ModelMismatch(f"bundle {self.path} was built with a different filter layout "
                                f"({self.layout.num_filters} filters in {len(self.layout)} layers; the model has "
                                f"{model.layout.num_filters} in {len(model.layout)})")  # fmt: skip

    # -- rows, metadata, profiles -----------------------------------------------------

    def rows_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row positions of sample ids; SampleNotFound for an unknown id."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        rows = np.searchsorted(self.ids, ids)
        bad = rows >= len(self.ids)
        bad[~bad] = self.ids[rows[~bad]] != ids[~bad]
        if np.any(bad):
            raise SampleNotFound(f"no sample with id {int(ids[np.argmax(bad)])} in bundle {self.path}")
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
        raise SampleNotFound(f"no sample with id {sample_id} in bundle {self.path}")

    def meta(self, sample_id: int) -> SampleMeta:
        return self.metas([sample_id])[0]

    def metas(self, ids: Sequence[int]) -> list[SampleMeta]:
        ids = [int(i) for i in ids]
        self._check_open()
        values = get_records(self._env, ids)
        out = []
        for i, v in zip(ids, values):
            if v is None:
                raise SampleNotFound(f"no sample with id {i} in bundle {self.path}")
            out.append(decode_meta(i, v))
        return out

    def profile(self, sample_id: int) -> np.ndarray:
        """(F,) float32 standardized profile (as stored: float16 precision)."""
        self._check_open()
        return np.array(self._profiles[self.row_of(sample_id)], dtype=np.float32)

    def profiles(self, ids: Sequence[int]) -> np.ndarray:
        self._check_open()
        return np.asarray(self._profiles[self.rows_of(ids)], dtype=np.float32)  # (n, F)

    def rows_where(self, misclassified: bool | None = None, labels: Sequence[int] | None = None,
                   predicted: Sequence[int] | None = None) -> np.ndarray:  # fmt: skip
        """Bool mask over rows, from the table (no LMDB access)."""
        mask = np.ones(len(self.ids), bool)
        if misclassified is not None:
            mask &= ~self._table["correct"] if misclassified else self._table["correct"]
        if labels is not None:
            mask &= np.isin(self._table["label"], np.asarray(list(labels), np.int64))
        if predicted is not None:
            mask &= np.isin(self._table["predicted"], np.asarray(list(predicted), np.int64))
        return mask

    # -- search -----------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               layers: Sequence[str] | None = None, exclude_ids: Sequence[int] | None = None,
               rerank: int | None = None) -> list[list[tuple[int, float]]]:  # fmt: skip
        """Nearest samples by cosine for each standardized query profile (see module docstring).

        ``rerank``: approximate indexes fetch this many candidates and re-score them exactly
        against the stored profiles (default max(4k, 64); 0 returns the index's own scores).
        Ignored by the exact ``Flat`` index and by ``layers`` searches, which are exact.
        """
        self._check_open()
        q = np.array(queries, dtype=np.float32, copy=True)
        if q.ndim == 1:
            q = q[None]
        n, f = len(self.ids), self.num_filters
        if q.ndim != 2 or q.shape[1] != f:
            raise ValueError(f"queries must have shape (Q, {f}), got {np.shape(queries)}")
        if not np.isfinite(q).all():
            raise ValueError("queries contain NaN or infinite values")
        if k < 0:
            raise ValueError("k must be non-negative")
        mask = None
        if allowed is not None:
            allowed = np.asarray(allowed)
            if allowed.dtype != np.bool_ or allowed.shape != (n,):
                raise ValueError(f"allowed must be a bool array of shape ({n},), got {allowed.dtype} {allowed.shape}")
            mask = allowed.copy()
        if exclude_ids is not None and len(exclude_ids):
            ex = np.asarray(list(exclude_ids), dtype=np.int64)
            rows = np.searchsorted(self.ids, ex)
            hit = rows < n
            hit[hit] = self.ids[rows[hit]] == ex[hit]
            if mask is None:
                mask = np.ones(n, bool)
            mask[rows[hit]] = False
        if mask is not None and mask.all():
            mask = None
        available = n if mask is None else int(mask.sum())
        kk = min(int(k), available)
        if kk == 0 or len(q) == 0:
            return [[] for _ in range(len(q))]
        if layers is not None:
            cols = self._layer_slices(layers)
            return self._as_ids(self._exact(_normalize(np.concatenate([q[:, s] for s in cols], axis=1)), kk, mask, cols))
        qn = _normalize(q)
        if rerank is None:
            rerank = 0 if self._is_exact_index else max(4 * kk, 64)
        fetch = min(available, max(kk, int(rerank)))
        cand = self._candidates(qn, fetch, mask)  # [(rows, scores)] per query, or None
        if cand is None:
            return self._as_ids(self._exact(qn, kk, mask, None))
        if rerank and not self._is_exact_index:
            cand = [faiss_index.exact_scores(qn[j], rows, self._profiles) for j, (rows, _) in enumerate(cand)]
        results = [_top(rows, scores, kk) for rows, scores in cand]
        short = [j for j, (rows, _) in enumerate(results) if len(rows) < kk]  # an approximate index came up short
        if short:
            fill = self._exact(qn[short], kk, mask, None)
            for j, r in zip(short, fill):
                results[j] = r
        return self._as_ids(results)

    @property
    def _is_exact_index(self) -> bool:
        return self.index_type == "Flat"

    def _candidates(self, qn: np.ndarray, fetch: int, mask: np.ndarray | None):
        """Up to ``fetch`` (rows, scores) per query: one matrix product over an exact Flat
        index on CPU, else the FAISS index; None when the index cannot apply the row filter
        (the caller then searches exactly)."""
        if self._gpu is None and self._flat is not None:
            return faiss_index.flat_scan(self._flat, qn, fetch, mask)
        if mask is None:
            if self._gpu is not None and fetch <= faiss_index.GPU_MAX_K:
                D, I = self._gpu.search(qn, fetch)  # sample ids
                R = np.where(I >= 0, np.searchsorted(self.ids, np.maximum(I, 0)), -1)
            else:
                D, R = faiss_index.inner_index(self._index).search(qn, fetch)  # row positions
        else:
            params, keep = faiss_index.row_selector_params(self._index, mask)
            if params is None:
                return None
            D, R = faiss_index.inner_index(self._index).search(qn, fetch, params=params)
            del keep
        out = []
        for d, r in zip(D, R):
            ok = r >= 0
            if mask is not None:
                ok[ok] = mask[r[ok]]  # the selector is authoritative; this guards against index quirks
            out.append((r[ok].astype(np.int64), d[ok].astype(np.float32)))
        return out

    def _as_ids(self, results) -> list[list[tuple[int, float]]]:
        return [[(int(self.ids[r]), float(s)) for r, s in zip(rows, scores)] for rows, scores in results]

    def _layer_slices(self, layers: Sequence[str]) -> list[slice]:
        if isinstance(layers, str):
            layers = [layers]
        if not layers:
            raise ValueError("layers must name at least one layer")
        try:
            wanted = {self.layout.layer(name).name for name in layers}
        except KeyError as e:
            raise ValueError(str(e.args[0])) from e
        return [slice(s.offset, s.stop) for s in self.layout if s.name in wanted]

    def _exact(self, qn: np.ndarray, k: int, mask: np.ndarray | None, cols: list[slice] | None):
        """Brute-force cosine over the stored rows (where ``mask``), on ``cols`` if given:
        [(rows, scores)] per query, best first."""
        n = len(self.ids)
        d = self.num_filters if cols is None else sum(s.stop - s.start for s in cols)
        chunk = max(256, _EXACT_CHUNK_BYTES // max(1, 4 * d))
        best_s = np.full((len(qn), 0), -np.inf, np.float32)
        best_r = np.zeros((len(qn), 0), np.int64)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            rows = np.arange(a, b) if mask is None else a + np.flatnonzero(mask[a:b])
            if len(rows) == 0:
                continue
            block = self._profiles[a:b] if mask is None else self._profiles[a:b][rows - a]
            x = block if cols is None else np.concatenate([block[:, s] for s in cols], axis=1)
            x = faiss_index.normalize_rows(x)  # (m, d) float32
            sims = qn @ x.T  # (Q, m)
            best_s = np.concatenate([best_s, sims], axis=1)
            best_r = np.concatenate([best_r, np.broadcast_to(rows, sims.shape)], axis=1)
            if best_s.shape[1] > k:
                top = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
                best_s = np.take_along_axis(best_s, top, axis=1)
                best_r = np.take_along_axis(best_r, top, axis=1)
        return [_top(r, s, k) for r, s in zip(best_r, best_s)]

    # -- model and images -------------------------------------------------------------

    def load_model(self):
        """The LoadedModel this bundle was built with (ModelMismatch if its weights changed)."""
        from .models import load_model_from_manifest

        return load_model_from_manifest(self.manifest)

    def load_image(self, sample_id: int):
        """The sample's image (PIL), reopened from its uri."""
        from .datasets import load_image

        return load_image(self.meta(sample_id).uri)

    # -- lifetime ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"bundle {self.path} is closed")

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        release_reader(self._meta_path)
        self._env = None
        self._gpu = None
        self._flat = None
        self._index = None
        self._profiles = None

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return (f"Bundle({str(self.path)!r}, generation={getattr(self, 'generation', '?')}, "
                f"samples={self.num_samples}, index={self.index_type!r})")  # fmt: skip


def _normalize(x: np.ndarray) -> np.ndarray:
    return faiss_index.normalize_rows(x)


def _top(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (rows, scores), by score descending then row ascending (stable ties)."""
    order = np.lexsort((rows, -scores))[:k]
    return rows[order], scores[order]
