"""FAISS indexes over standardized profiles: build, train, save, load for serving, GPU clone.

The index holds each stored (float16) standardized profile, upcast to float32 and
L2-normalised, so inner product = cosine similarity and an exact index agrees with a
brute-force cosine over ``profiles.npy``. It is always an ``IndexIDMap2`` whose internal
positions are the bundle's rows (vectors are added in row order, nothing is removed), so
``ids[row]`` is the sample id; filtered search uses that to pass row selectors to the
inner index directly (IDMap's own selector translation does not reach through
``IndexPreTransform``).

``index_type`` is a FAISS factory string built with ``METRIC_INNER_PRODUCT``: ``Flat``
(default, exact), ``SQfp16``, ``PCA64,IVF16,Flat``, ``PCA256,IVF1024,PQ32``, ... Indexes that
need training are trained on a seeded random sample of rows (``train_size``); IVF indexes
record an ``nprobe`` in the manifest, applied when the bundle is opened.

On disk the index is always a CPU index. :func:`load_index` memory-maps it read-only where
FAISS supports that, and :func:`to_gpu` clones it to GPU 0 when FAISS sees a GPU. The
maths of a query (normalisation, exact scores, flat scans, row selectors) is in scoring.py.
"""

from __future__ import annotations

import logging
import os
import threading

import faiss
import numpy as np

from .durable import fsync_file
from .errors import IndexBuildError
from .scoring import flat_scan, inner_index, normalize_rows  # noqa: F401 - flat_scan: tests/server still import it here

__all__ = [
    "DEFAULT_INDEX_TYPE",
    "canonical_index_type",
    "new_index",
    "check_index_type",
    "build_index",
    "write_index",
    "load_index",
    "to_gpu",
    "set_nprobe",
    "flat_vectors",
    "GpuSearcher",
    "GPU_MAX_K",
]

log = logging.getLogger(__name__)

DEFAULT_INDEX_TYPE = "Flat"
DEFAULT_NPROBE = 16
GPU_MAX_K = 2048


def canonical_index_type(factory: str | None) -> str:
    factory = (factory or DEFAULT_INDEX_TYPE).strip()
    if factory.upper().startswith("IDMAP"):
        raise IndexBuildError(
            f"--index-type {factory!r}: leave out IDMap, the indexer always wraps the index in IDMap2"
        )
    return factory


def new_index(factory: str, dim: int) -> faiss.Index:
    """An empty ``IndexIDMap2`` around ``index_factory(dim, factory, METRIC_INNER_PRODUCT)``."""
    factory = canonical_index_type(factory)
    try:
        base = (
            faiss.IndexFlatIP(dim)
            if factory == "Flat"
            else faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        )
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise IndexBuildError(f"invalid FAISS factory string {factory!r} for dimension {dim}: {msg}") from e
    _no_polysemous(base)
    return faiss.IndexIDMap2(base)


def _no_polysemous(index: faiss.Index) -> None:
    """The factory turns on polysemous training for PQ codes (unless "np"): a reordering of
    PQ centroids that only helps Hamming-distance filtering, which inner-product search never
    uses, and that costs minutes (42 s for 5,000 x 64-d on this CPU against 2 s for the PQ
    itself). Switch it off; search results are unaffected."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    if isinstance(index, (faiss.IndexPQ, faiss.IndexIVFPQ)):
        index.do_polysemous_training = False


def check_index_type(factory: str, dim: int, num_samples: int) -> None:
    """Fail before any work on a factory string FAISS rejects or an IVF with more lists than samples."""
    index = new_index(factory, dim)
    if factory == "Flat" and num_samples * dim * 4 > _physical_memory() // 2:
        log.warning(
            "the exact Flat index will need %.1f GiB of RAM to build and to serve (%d x %d float32); "
            "consider --index-type PCA256,IVF1024,PQ32 (re-ranked exactly from the float16 profiles)",
            num_samples * dim * 4 / 2**30,
            num_samples,
            dim,
        )
    ivf = _find_ivf(index.index)
    if ivf is not None and ivf.nlist > num_samples:
        raise IndexBuildError(
            f"--index-type {factory!r} has {ivf.nlist} IVF lists but only {num_samples} samples to train them; "
            "use fewer lists (IVF with 4*sqrt(N) to 16*sqrt(N) lists is usual) or the exact Flat index"
        )


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1 << 40


def build_index(
    factory: str,
    profiles: np.ndarray,
    ids: np.ndarray,
    *,
    train_size: int = 32768,
    seed: int = 0,
    chunk_rows: int = 4096,
    nprobe: int | None = None,
    base: faiss.Index | None = None,
) -> tuple[faiss.Index, dict]:
    """Build (or extend ``base``) over ``profiles`` ((N, dim) standardized, any float dtype,
    e.g. the float16 memmap of ``profiles.npy``) with sample ids ``ids`` (N,).

    Returns the index and its manifest entry (type, dimension, ntotal, training, nprobe).
    ``base`` (an already trained ``IndexIDMap2`` holding rows ``[0, base.ntotal)``) is
    extended with the remaining rows and never retrained: appends keep old vectors as they were.
    """
    n, dim = profiles.shape
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} profiles")
    if base is None:
        index = new_index(factory, dim)
        start = 0
        trained_on = 0
        if not index.is_trained:
            take = min(n, int(train_size))
            rng = np.random.default_rng(seed)
            sample = np.sort(rng.choice(n, size=take, replace=False))
            try:
                _train(index, profiles, sample, rng, chunk_rows)
            except RuntimeError as e:
                raise IndexBuildError(
                    f"cannot train --index-type {factory!r} on {take} samples: {str(e).strip().splitlines()[-1]}"
                ) from e
            trained_on = take
    else:
        index, start, trained_on = base, int(base.ntotal), None
    for a in range(start, n, chunk_rows):
        b = min(n, a + chunk_rows)
        index.add_with_ids(normalize_rows(profiles[a:b]), np.ascontiguousarray(ids[a:b], dtype=np.int64))
    if index.ntotal != n:
        raise IndexBuildError(f"index holds {index.ntotal} vectors, expected {n}")
    info = {
        "type": factory,
        "dimension": dim,
        "ntotal": int(index.ntotal),
        "metric": "inner_product",
        "normalized": True,
        "id_map": "IndexIDMap2 (internal position = row)",
    }
    if trained_on:
        info["trained_on"] = trained_on
        info["train_seed"] = seed
    ivf = _find_ivf(index.index)
    if ivf is not None:
        info["nprobe"] = int(min(ivf.nlist, nprobe or DEFAULT_NPROBE))
        set_nprobe(index, info["nprobe"])
    return index, info


#: Wide inputs (ResNet-50: 26,560 filters) train their leading transforms on at most this
#: many rows: FAISS's PCA on n < d rows costs O(n²d) and holds the rows in float32.
TRANSFORM_TRAIN_ROWS = 8192
WIDE = 2048


def _train(index: faiss.Index, profiles: np.ndarray, sample: np.ndarray, rng, chunk_rows: int) -> None:
    """Train ``index`` on the rows ``sample`` of ``profiles``.

    Narrow inputs: ``index.train`` on all sampled rows. Wide inputs behind a transform
    chain (``PCA256,IVF1024,PQ32``): the transforms learn from a subset of at most
    TRANSFORM_TRAIN_ROWS rows (a plain PCA by randomized SVD, much faster than FAISS's
    eigendecomposition at this width), then the sampled rows are transformed chunk by chunk
    (never all wide at once) and the inner index trains on them.
    """
    inner = faiss.downcast_index(index.index)
    dim = profiles.shape[1]
    if not (isinstance(inner, faiss.IndexPreTransform) and dim > WIDE):
        index.train(normalize_rows(profiles[sample]))
        return
    sub = np.sort(rng.choice(sample, size=min(len(sample), TRANSFORM_TRAIN_ROWS), replace=False))
    xt = normalize_rows(profiles[sub])
    chain = [faiss.downcast_VectorTransform(inner.chain.at(i)) for i in range(inner.chain.size())]
    for vt in chain:
        if not vt.is_trained:
            if _is_plain_pca(vt):
                _train_pca(vt, xt, rng)
            else:
                vt.train(xt)
        xt = vt.apply(xt)
    del xt
    parts = []
    for a in range(0, len(sample), chunk_rows):
        x = normalize_rows(profiles[sample[a : a + chunk_rows]])
        for vt in chain:
            x = vt.apply(x)
        parts.append(x)
    sub_index = faiss.downcast_index(inner.index)
    if not sub_index.is_trained:
        sub_index.train(np.ascontiguousarray(np.concatenate(parts), dtype=np.float32))
    inner.is_trained = sub_index.is_trained
    index.is_trained = inner.is_trained


def _is_plain_pca(vt) -> bool:
    return isinstance(vt, faiss.PCAMatrix) and not vt.random_rotation and vt.eigen_power == 0 and vt.balanced_bins == 0


def _train_pca(pca: faiss.PCAMatrix, x: np.ndarray, rng, oversample: int = 32, power_iters: int = 3) -> None:
    """Fill a FAISS PCAMatrix from a randomized SVD of ``x`` (n, d_in) (Halko et al. 2011)."""
    k = pca.d_out
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    xc = x - mean  # (n, d_in)
    width = min(k + oversample, *xc.shape)
    y = xc @ rng.standard_normal((xc.shape[1], width)).astype(np.float32)  # (n, width)
    for _ in range(power_iters):
        q, _ = np.linalg.qr(y)
        y = xc @ (xc.T @ q)
    q, _ = np.linalg.qr(y)
    _, s, vt = np.linalg.svd((q.T @ xc).astype(np.float64), full_matrices=False)  # (width, d_in)
    if vt.shape[0] < k:
        raise RuntimeError(f"PCA to {k} dimensions needs at least {k} training rows, got {x.shape[0]}")
    faiss.copy_array_to_vector(mean, pca.mean)
    faiss.copy_array_to_vector((s[:k] ** 2 / max(1, x.shape[0] - 1)).astype(np.float32), pca.eigenvalues)
    faiss.copy_array_to_vector(np.ascontiguousarray(vt[:k], dtype=np.float32).ravel(), pca.PCAMat)
    pca.is_trained = True
    pca.prepare_Ab()


def write_index(index: faiss.Index, path: str | os.PathLike) -> None:
    faiss.write_index(index, str(path))
    fsync_file(path)


def load_index(path: str | os.PathLike, nprobe: int | None = None) -> faiss.Index:
    """Read-only load: memory-mapped where FAISS supports it for this index type."""
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:
        index = faiss.read_index(str(path), faiss.IO_FLAG_READ_ONLY)
    if nprobe:
        set_nprobe(index, nprobe)
    return index


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    ivf = _find_ivf(inner_index(index))
    if ivf is not None:
        ivf.nprobe = int(min(ivf.nlist, nprobe))


def _find_ivf(index: faiss.Index):
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index if isinstance(index, faiss.IndexIVF) else None


class _Pinned:
    """Exposes FAISS-owned memory to numpy while holding the index that owns it: the array's
    ``base`` is this object, so the memory cannot be freed under the array."""

    def __init__(self, owner: faiss.Index, view: np.ndarray):
        self.owner = owner
        self.__array_interface__ = {**view.__array_interface__, "data": (view.ctypes.data, True)}  # read-only


def flat_vectors(index: faiss.Index) -> np.ndarray | None:
    """(N, d) float32 read-only view of the normalised vectors an exact inner-product
    ``IndexFlat`` holds, in row order (no copy; the view keeps the index alive); None for
    every other index type."""
    flat = inner_index(index)
    if not isinstance(flat, faiss.IndexFlat) or flat.metric_type != faiss.METRIC_INNER_PRODUCT or flat.ntotal == 0:
        return None
    view = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
    return np.asarray(_Pinned(index, view))


class GpuSearcher:
    """A GPU clone of a CPU index. FAISS GPU indexes are not thread-safe even for search,
    so searches are serialized."""

    def __init__(self, index: faiss.Index, device: int = 0):
        self.resources = faiss.StandardGpuResources()
        self.index = faiss.index_cpu_to_gpu(self.resources, device, index)
        self._lock = threading.Lock()

    def search(self, queries: np.ndarray, k: int):
        with self._lock:
            return self.index.search(queries, k)


def to_gpu(index: faiss.Index) -> GpuSearcher | None:
    """A GPU searcher when FAISS sees a GPU and can clone this index type, else None."""
    try:
        if faiss.get_num_gpus() <= 0:
            return None
        return GpuSearcher(index)
    except Exception as e:  # noqa: BLE001 - not every index type has a GPU version
        log.warning("keeping the FAISS index on CPU: %s", str(e).strip().splitlines()[-1] if str(e).strip() else e)
        return None
