"""The served bundles by name, each opened read-only with its model once at start-up.

Opening a bundle (:func:`open_served`): the bundle loads its model and checks the
weights' fingerprint and filter layout against the ones it was indexed with; the model
becomes the master of the bundle's replicas (replicas.py); then its batchers and its
neighbour lists start. Anything that fails closes what was opened before it.

Start-up time: nothing waits for the upload saliency process. Its own torch and
torchvision imports and model load take as long as the server's (about half of a
resnet18 bundle's start on a 2-core CPU, issue #13); it loads while the server already
listens, and uploads are computed in the server until it is ready (ProfileBatcher asks
``settled()``). It is spawned after the server's own load, not beside it: on two busy
cores the two loads only shared them. benchmarks/serve_startup.py measures it.

Index: the bundle clones its FAISS index to a GPU when FAISS sees one (unless the server
runs with ``--device cpu``) and serializes searches on that clone itself, since FAISS GPU
indexes are not thread-safe even for search; CPU searches run concurrently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from parasal.indexer import model_display_name, open_bundle

from .batching import ProfileBatcher, SearchBatcher
from .config import ServerConfig
from .devices import limit_faiss_threads, resolve_device, torch_threads, usable_cores
from .errors import NotFound, shown
from .neighbor_lists import NeighborLists
from .replicas import Replicas
from .saliency_process import SaliencyProcess
from .served_bundle import ServedBundle

if TYPE_CHECKING:
    from parasal.indexer import Bundle

__all__ = ["Registry", "ServedBundle", "open_served"]

log = logging.getLogger("parasal.server")


class Registry:
    """Name -> ServedBundle; the first bundle answers requests that name none."""

    def __init__(self, bundles: list[ServedBundle]):
        if not bundles:
            raise ValueError("a registry needs at least one bundle")
        self._bundles = {b.name: b for b in bundles}
        self.default = bundles[0].name

    @classmethod
    def load(cls, config: ServerConfig) -> Registry:
        device = resolve_device(config.device)
        served: list[ServedBundle] = []
        try:
            for name, path in config.bundles:
                served.append(open_served(name, Path(path), device, config))
        except BaseException:
            for b in served:
                b.close()
            raise
        return cls(served)

    def get(self, name: str = "") -> ServedBundle:
        try:
            return self._bundles[name or self.default]
        except KeyError:
            raise NotFound(f"unknown bundle {shown(name)}; this server has {sorted(self._bundles)}") from None

    def __iter__(self) -> Iterator[ServedBundle]:
        return iter(self._bundles.values())

    def __len__(self) -> int:
        return len(self._bundles)

    def close(self) -> None:
        for b in self._bundles.values():
            b.close()


def open_served(name: str, path: Path, device: torch.device, config: ServerConfig) -> ServedBundle:
    """Open the bundle at ``path`` with its model on ``device``, its batchers, saliency
    process and neighbour lists, as ``config`` says; closes what it opened on failure."""
    # Errors raised while serving name the bundle by its served name, not its path; sample
    # images reopened from the dataset get the upload pixel limit.
    bundle = open_bundle(
        path,
        gpu=False if device.type == "cpu" else None,
        name=name,
        max_image_pixels=config.max_image_pixels,
        weights=config.weights.get(name),
    )
    served = process = None
    try:
        served = _with_model(name, bundle, device, config)
        log.info(
            "bundle %r: %s, %d samples, %d filters, model %s on %s, index %s",
            name,
            path,
            bundle.num_samples,
            bundle.layout.num_filters,
            served.spec,
            device,
            bundle.index_type,
        )
        # Spawned after the master has loaded (started together, the two loads only share the
        # cores) and not waited for: uploads are computed here until it is ready.
        if config.saliency_process:
            process = SaliencyProcess(bundle.manifest, device=str(device), torch_threads=config.torch_threads)
        # One batch at a time: batching is the parallelism; the other replicas serve explanations.
        served.batcher = ProfileBatcher(served, workers=1, process=process)
        served.searcher = SearchBatcher(
            bundle, name, workers=config.search_workers, initializer=lambda: limit_faiss_threads(config.faiss_threads)
        )
        served.neighbor_lists = _neighbor_lists(name, bundle, config)
        return served
    except BaseException:
        if served is not None and served.batcher is not None:
            served.close()  # its batchers (and saliency process) too
        else:
            if process is not None:
                process.close()
            bundle.close()
        raise


def _with_model(name: str, bundle: Bundle, device: torch.device, config: ServerConfig) -> ServedBundle:
    """The bundle served with its checked model and replicas (no batchers yet)."""
    loaded = bundle.load_model()  # ModelMismatch unless the weights match the recorded fingerprint
    bundle.check_model(loaded)  # and the filter layout
    master = loaded.model.to(device).eval()
    classes = [str(c) for c in bundle.classes or ()]
    num_classes = int(
        bundle.manifest.model.num_classes or len(classes) or _output_size(master, bundle.preprocessing, device)
    )
    return ServedBundle(
        name=name,
        bundle=bundle,
        master=master,
        spec=model_display_name(loaded.spec),
        fingerprint=str(loaded.fingerprint),
        device=device,
        num_classes=num_classes,
        class_names=classes,
        replicas=Replicas(master, config.model_replicas),
        cache_size=config.sample_cache,
    )


def _neighbor_lists(name: str, bundle: Bundle, config: ServerConfig) -> NeighborLists | None:
    """Precomputed neighbour lists for an exact index of at most neighbor_lists_max_samples
    samples (their cost grows with the square of the sample count); else None."""
    vectors = bundle.exact_vectors
    if not config.neighbor_lists or vectors is None:
        return None
    if bundle.num_samples > config.neighbor_lists_max_samples:
        log.info(
            "bundle %r: %d samples, over --neighbor-lists-max-samples %d: every query is searched",
            name,
            bundle.num_samples,
            config.neighbor_lists_max_samples,
        )
        return None
    with torch_threads(usable_cores()):  # nothing else runs yet: every core builds them
        return NeighborLists.build(vectors, bundle.ids, ~bundle.correct, size=config.neighbor_lists, name=name)


def _output_size(model: torch.nn.Module, preprocessing, device: torch.device) -> int:
    """Number of classes from one forward pass on zeros of the model's input shape."""
    shape = tuple(preprocessing.input_shape or (preprocessing.num_channels, 224, 224))
    with torch.no_grad():
        return int(model(torch.zeros((1, *shape), device=device)).shape[1])
