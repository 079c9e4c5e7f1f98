"""The served bundles, opened read-only with their models once at start-up.

Models: the bundle loads its model and checks the weights' fingerprint against the one it
was indexed with (``Bundle.load_model``). The loaded model is kept pristine as the
*master*: no call runs on it. Queries borrow one of a few deep copies (*replicas*) for
the duration of a call, because the saliency engine temporarily changes a model's state
(forward hooks, ``requires_grad`` flags), so one copy serves one call at a time.
Evaluations receive the master and work on their own deep copy (parasal.core's
evaluations never modify the model they are given), which is safe because nothing ever
hooks the master.

Index: the bundle clones its FAISS index to a GPU when FAISS sees one (unless the server
runs with ``--device cpu``) and serializes searches on that clone itself, since FAISS GPU
indexes are not thread-safe even for search; CPU searches run concurrently.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from parasal.indexer.errors import SampleNotFound

from .batching import ProfileBatcher, SearchBatcher
from .config import ConfigError, ServerConfig
from .errors import NotFound
from .neighbor_lists import NeighborLists
from .saliency_process import SaliencyProcess

if TYPE_CHECKING:
    from parasal.indexer.bundle import Bundle

__all__ = ["ServedBundle", "Registry", "FilterNames", "resolve_device", "limit_faiss_threads"]

log = logging.getLogger("parasal.server")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return torch.device(name)


class FilterNames:
    """Profile index -> (layer name, filter index within the layer), in O(1).

    ``FilterLayout.locate`` walks the layers; answers name ten filters per neighbour, so
    the server looks them up in a table built once per bundle."""

    def __init__(self, layout):
        self._names = [span.name for span in layout for _ in range(span.filters)]
        self._offsets = [span.offset for span in layout for _ in range(span.filters)]

    def __call__(self, index: int) -> tuple[str, int]:
        if not 0 <= index < len(self._names):
            raise IndexError(f"filter index {index} outside [0, {len(self._names)})")
        return self._names[index], index - self._offsets[index]


@dataclass
class ServedBundle:
    name: str
    bundle: "Bundle"
    master: torch.nn.Module  # no call runs on it; evaluations work on their own copy
    spec: str
    fingerprint: str
    device: torch.device
    num_classes: int
    class_names: list[str]
    locate: FilterNames = field(repr=False)
    _replicas: "queue.Queue[torch.nn.Module]" = field(repr=False)
    batcher: ProfileBatcher | None = field(default=None, repr=False)  # upload profiles, batched
    searcher: SearchBatcher | None = field(default=None, repr=False)  # neighbour searches, batched
    neighbor_lists: NeighborLists | None = field(default=None, repr=False)  # by-id answers, precomputed
    cache_size: int = 100_000  # sample metadata records kept decoded (about 1 KB each)

    @property
    def layout(self):
        return self.bundle.layout

    @property
    def stats(self):
        return self.bundle.stats

    @property
    def preprocessing(self):
        return self.bundle.preprocessing

    def __post_init__(self):
        # Bundles never change while served, so a sample's metadata is read from LMDB and
        # decoded once; neighbour answers name ten samples each.
        self._cached_meta = functools.lru_cache(maxsize=self.cache_size)(self._read_meta)

    def hot_ids(self) -> np.ndarray:
        """The ids worth caching first, at most ``cache_size``: misclassified samples (what
        similar-failure queries mostly return), then the others, each in id order."""
        order = np.argsort(self.bundle.correct, kind="stable")  # False (misclassified) first
        return self.bundle.ids[order[:self.cache_size]]

    def meta(self, sample_id: int):
        """The sample's metadata; NotFound naming the bundle (not its path on the server)."""
        return self._cached_meta(int(sample_id))

    def metas(self, ids):
        return [self._cached_meta(int(i)) for i in ids]

    @contextlib.contextmanager
    def _known(self, sample_id: int) -> Iterator[None]:
        """The indexer's SampleNotFound as NotFound naming the bundle (not its path on the server)."""
        try:
            yield
        except SampleNotFound:
            raise NotFound(f"no sample with id {sample_id} in bundle {self.name!r}") from None

    def _read_meta(self, sample_id: int):
        with self._known(sample_id):
            return self.bundle.meta(sample_id)

    def row(self, sample_id: int) -> int:
        """The sample's row position in the bundle; NotFound for an unknown id."""
        with self._known(sample_id):
            return self.bundle.row_of(sample_id)

    def listed_neighbors(self, sample_id: int, k: int, allowed: np.ndarray | None,
                         exclude_self: bool) -> list[tuple[int, float]] | None:  # fmt: skip
        """The k nearest (id, cosine) of an indexed sample from its precomputed list, when
        that list proves the exact answer (neighbor_lists.py); else None: search instead.
        NotFound for an unknown id."""
        if self.neighbor_lists is None:
            return None
        row = self.row(sample_id)
        return self.neighbor_lists.nearest(row, k, allowed, row if exclude_self else None)

    def profile(self, sample_id: int) -> np.ndarray:
        """(F,) float32 standardized profile as stored; NotFound for an unknown id."""
        with self._known(sample_id):
            return self.bundle.profile(sample_id)

    def close(self) -> None:
        for batcher in (self.batcher, self.searcher):
            if batcher is not None:
                batcher.close()
        self.bundle.close()

    @contextlib.contextmanager
    def replica(self) -> Iterator[torch.nn.Module]:
        """A model copy for this thread alone until the block ends (waits for a free one)."""
        model = self._replicas.get()
        try:
            yield model
        finally:
            self._replicas.put(model)


class Registry:
    """Name -> ServedBundle; the first bundle answers requests that name none."""

    def __init__(self, bundles: list[ServedBundle]):
        if not bundles:
            raise ValueError("a registry needs at least one bundle")
        self._bundles = {b.name: b for b in bundles}
        self.default = bundles[0].name

    @classmethod
    def load(cls, config: ServerConfig) -> "Registry":
        device = resolve_device(config.device)
        served: list[ServedBundle] = []
        try:
            for name, path in config.bundles:
                served.append(_load(name, Path(path), device, config))
        except BaseException:
            for b in served:
                b.close()
            raise
        return cls(served)

    def get(self, name: str = "") -> ServedBundle:
        try:
            return self._bundles[name or self.default]
        except KeyError:
            raise NotFound(f"unknown bundle {name!r}; this server has {sorted(self._bundles)}") from None

    def __iter__(self) -> Iterator[ServedBundle]:
        return iter(self._bundles.values())

    def __len__(self) -> int:
        return len(self._bundles)

    def close(self) -> None:
        for b in self._bundles.values():
            b.close()


def _load(name: str, path: Path, device: torch.device, config: ServerConfig) -> ServedBundle:
    from parasal.indexer.bundle import open_bundle

    bundle = open_bundle(path, gpu=False if device.type == "cpu" else None)
    served = None
    try:
        loaded = bundle.load_model()  # ModelMismatch unless the weights match the recorded fingerprint
        bundle.check_model(loaded)  # and the filter layout
        master = loaded.model.to(device).eval()
        classes = [str(c) for c in bundle.classes or ()]
        num_classes = int(bundle.manifest["model"].get("num_classes") or len(classes)
                          or _output_size(master, bundle.preprocessing, device))
        pool: queue.Queue = queue.Queue()
        for _ in range(config.model_replicas):
            pool.put(copy.deepcopy(master))
        spec = model_name(loaded.spec)
        log.info("bundle %r: %s, %d samples, %d filters, model %s on %s, index %s", name, path,
                 bundle.num_samples, bundle.layout.num_filters, spec, device, bundle.index_type)
        served = ServedBundle(name=name, bundle=bundle, master=master, spec=spec,
                              fingerprint=str(loaded.fingerprint), device=device, num_classes=num_classes,
                              class_names=classes, locate=FilterNames(bundle.layout), _replicas=pool,
                              cache_size=config.sample_cache)
        # One batch at a time: batching is the parallelism; the other replicas serve explanations.
        process = (SaliencyProcess(bundle.manifest, device=str(device), torch_threads=config.torch_threads)
                   if config.saliency_process else None)
        served.batcher = ProfileBatcher(served, workers=1, process=process)
        served.searcher = SearchBatcher(bundle, name, workers=config.search_workers,
                                        initializer=lambda: limit_faiss_threads(config.faiss_threads))
        served.neighbor_lists = _neighbor_lists(name, bundle, config)  # while the saliency process starts
        if process is not None:
            process.wait_ready()
        return served
    except BaseException:
        if served is not None:
            served.close()  # its batchers (and saliency process) too
        else:
            bundle.close()
        raise


def _neighbor_lists(name: str, bundle: "Bundle", config: ServerConfig) -> NeighborLists | None:
    """Precomputed neighbour lists for an exact index of at most neighbor_lists_max_samples
    samples (their cost grows with the square of the sample count); else None."""
    vectors = bundle.exact_vectors
    if not config.neighbor_lists or vectors is None:
        return None
    if bundle.num_samples > config.neighbor_lists_max_samples:
        log.info("bundle %r: %d samples, over --neighbor-lists-max-samples %d: every query is searched", name,
                 bundle.num_samples, config.neighbor_lists_max_samples)
        return None
    # Nothing else runs yet: every core builds them.
    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        return NeighborLists.build(vectors, bundle.ids, ~bundle.correct, size=config.neighbor_lists, name=name)
    finally:
        torch.set_num_threads(threads)


def limit_faiss_threads(threads: int) -> None:
    """OpenMP thread counts are per calling thread: set FAISS's in each searching thread
    itself (0 leaves OpenMP's default)."""
    if threads:
        import faiss

        faiss.omp_set_num_threads(threads)


def model_name(spec: dict) -> str:
    """A model spec dict as the string users wrote ("demo-fashion", "torchvision:resnet50", ...)."""
    kind = spec.get("kind")
    if kind == "torchvision":
        return f"torchvision:{spec.get('arch')}"
    if kind == "torchscript":
        return f"torchscript:{spec.get('path')}"
    if kind == "factory":
        return str(spec.get("factory"))
    return str(kind)


def _output_size(model: torch.nn.Module, preprocessing, device: torch.device) -> int:
    """Number of classes from one forward pass on zeros of the model's input shape."""
    shape = tuple(preprocessing.input_shape or (preprocessing.num_channels, 224, 224))
    with torch.no_grad():
        return int(model(torch.zeros((1, *shape), device=device)).shape[1])
