"""ExplainSurprise (no protobuf here): one sample's surprise and expectation filters (Hartley et al.).

For an indexed sample α comes from the bundle (stored at indexing time, no model pass);
for an upload it is computed with :func:`parasal.core.filter_importance` on the bundle's
reference layer and method, after the same decoding and preprocessing as every upload
(:meth:`Queries.prepare`). β and the two ranked lists are
:func:`parasal.core.surprise_expectation` against the bundle's class–filter statistics:
the one implementation, also the indexer's.

The first ``detailed`` filters of each list get

* a region: :func:`parasal.core.filter_region`'s answer (SLIC superpixels of the image as
  the model sees it, scored by the input gradient of the true class's score through that
  filter alone: α is that class's importance, so the region is what drives it), computed for
  all the filters in one batched pass (_regions.py), mapped back onto the original image
  (the preprocessing's crop and resize undone) as a mask and a PNG;
* exemplars: the reference images with the highest α for that filter (of the sample's
  true class, or of any class), with ids, URIs, labels and, on request, a PNG dimmed where
  the filter's activation map is low (:func:`parasal.core.exemplar_png`, original size).

Regions and exemplar images need the model: the call borrows one replica for all of them
(served_bundle.py), on the worker pool. Exemplar PNGs depend on (filter, reference id)
only, so they are cached per bundle (an LRU of :data:`EXEMPLAR_CACHE_BYTES`).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from parasal.core import (
    activation_maps,
    exemplar_png,
    filter_importance,
    region_png,
    superpixels,
    surprise_expectation,
)
from parasal.indexer.errors import NoReferenceData
from parasal.indexer.preprocessing import convert_mode

from ._regions import filter_region_masks
from .errors import FailedPrecondition, InvalidArgument
from .inline import must_not_block
from .queries import ImageQuery, PreparedImage, Queries, check_range, display_pixels
from .registry import Registry, ServedBundle

__all__ = [
    "SurpriseParams",
    "ExemplarInfo",
    "RegionInfo",
    "Deviation",
    "SurpriseResult",
    "Surprises",
    "sample_surprise_lookup",
    "upload_alpha",
    "reference_of",
    "check_params",
    "check_class",
    "DEFAULT_HIGH",
    "DEFAULT_LOW",
    "DEFAULT_DETAILED",
    "MAX_DETAILED",
    "DEFAULT_EXEMPLARS",
    "DEFAULT_SEGMENTS",
    "MAX_SEGMENTS",
]

# What 0 means on the wire (the proto's defaults, the paper's thresholds).
DEFAULT_HIGH = 99.9
DEFAULT_LOW = 0.1
DEFAULT_DETAILED = 3
MAX_DETAILED = 16
DEFAULT_EXEMPLARS = 6
DEFAULT_SEGMENTS = 50
MAX_SEGMENTS = 1000
#: Bytes of exemplar PNGs kept per bundle: all 7,680 of the demo model (128 filters x 10
#: classes x 6, ~0.4 KB each at 28x28), or ~1,000 at 224x224 (~60 KB each).
EXEMPLAR_CACHE_BYTES = 64 << 20
#: Reference images per forward pass when drawing exemplars (bounds the activations' memory).
EXEMPLAR_BATCH = 64


@dataclass(frozen=True)
class SurpriseParams:
    """An ExplainSurprise request's options as sent: 0 / False mean the defaults above."""

    high_percentile: float = 0.0
    low_percentile: float = 0.0
    max_filters: int = 0
    detailed: int = 0
    exemplars: int = 0
    exemplars_any_class: bool = False
    segments: int = 0
    include_alpha: bool = False
    include_exemplar_images: bool = False


@dataclass(frozen=True)
class ExemplarInfo:
    id: int  # reference-dataset sample id
    uri: str
    label: int
    label_name: str
    activation: float  # the filter's importance α for this reference image
    image_png: bytes  # empty unless requested


@dataclass(frozen=True, eq=False)  # holds an array
class RegionInfo:
    png: bytes  # the original image with the region's boundary drawn
    mask: np.ndarray  # (H, W) bool at the original image's size


@dataclass(frozen=True)
class Deviation:
    layer: str
    filter: int  # index within the layer (and into alpha)
    alpha: float
    mean: float
    threshold: float
    deviation: float
    region: RegionInfo | None = None  # detailed filters only
    exemplars: tuple[ExemplarInfo, ...] = ()


@dataclass(frozen=True, eq=False)  # holds arrays
class SurpriseResult:
    sample_id: int | None
    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float
    beta: float
    layer: str
    method: str
    high_percentile: float
    low_percentile: float
    surprise: list[Deviation]
    expectation: list[Deviation]
    alpha: np.ndarray | None  # (N,) float32 when requested
    class_mean: np.ndarray | None  # (N,) float32 µ_c when requested


@dataclass(frozen=True)
class _Checked:
    """Options with the defaults applied, checked against the bundle's reference data."""

    high: float
    low: float
    top: int | None  # None: every filter
    detailed: int
    exemplars: int
    any_class: bool
    segments: int
    include_alpha: bool
    include_images: bool


class Surprises:
    def __init__(self, registry: Registry, queries: Queries):
        self.registry, self.queries = registry, queries
        self._lock = threading.Lock()
        self._exemplar_pngs: dict[str, _LRU] = {}
        self._warmed: dict = {}  # bundle name -> its statistics, warmed

    def warm(self) -> None:
        """Sort each bundle's reference statistics and import SLIC now (about 2 s on the
        first call otherwise)."""
        with_reference = [s for s in self.registry if getattr(s.bundle, "has_reference", False)]
        for served in with_reference:
            self._stats(served, served.bundle.reference)
        if with_reference:  # skimage loads its submodules lazily, on first use: use them once
            tiny = np.zeros((8, 8))
            region_png(tiny, superpixels(tiny, 4) == 0)

    def explain(self, bundle: str, query: int | ImageQuery, params: SurpriseParams) -> SurpriseResult:
        served = self.registry.get(bundle)
        reference = reference_of(served)
        options = check_params(params, reference.exemplars_per_filter)
        stats = self._stats(served, reference)
        image: PreparedImage | None = None
        if isinstance(query, ImageQuery):
            image = self.queries.prepare(served, query)
            with served.replica() as model:
                alpha, probs = upload_alpha(model, image, reference)
            sample_id, label = None, image.label
            predicted = int(probs.argmax())
            true_confidence, predicted_confidence = float(probs[label]), float(probs[predicted])
        else:
            meta = served.meta(query)
            sample_id, label, predicted = int(meta.id), int(meta.label), int(meta.predicted)
            true_confidence, predicted_confidence = float(meta.true_confidence), float(meta.predicted_confidence)
            alpha = np.asarray(served.bundle.alpha([sample_id])[0], np.float32)  # (N,)
        check_class(stats, label)
        high, low = options.high, options.low
        (found,) = surprise_expectation(alpha[None], [label], stats, high=high, low=low, top=options.top)
        surprise = [_deviation(reference.layer, d) for d in found.surprise]
        expectation = [_deviation(reference.layer, d) for d in found.expectation]
        chosen = [*surprise[: options.detailed], *expectation[: options.detailed]]
        if chosen:
            if image is None:  # an indexed sample: its stored image, as ExplainInput reads it
                must_not_block("reading a dataset image")
                pil = served.bundle.load_image(sample_id)
                image = PreparedImage(pil, served.preprocessing(pil), label)
            details = self._details(served, reference, image, [d.filter for d in chosen], options)
            detailed = {id(d): extra for d, extra in zip(chosen, details)}
            surprise = [_with(d, detailed.get(id(d))) for d in surprise]
            expectation = [_with(d, detailed.get(id(d))) for d in expectation]
        return SurpriseResult(
            sample_id=sample_id,
            label=label,
            predicted=predicted,
            true_confidence=true_confidence,
            predicted_confidence=predicted_confidence,
            beta=float(found.beta),
            layer=reference.layer,
            method=reference.method,
            high_percentile=options.high,
            low_percentile=options.low,
            surprise=surprise,
            expectation=expectation,
            alpha=alpha.astype(np.float32) if options.include_alpha else None,
            class_mean=np.asarray(stats.mean[label], np.float32) if options.include_alpha else None,
        )

    # -- pieces ------------------------------------------------------------------------

    def _stats(self, served: ServedBundle, reference):
        """The class–filter statistics, their sorted columns and default percentiles made once
        (the first call sorts every class's values; concurrent first calls must not race)."""
        if served.name not in self._warmed:
            with self._lock:
                if served.name not in self._warmed:
                    stats = reference.stats
                    stats.mean, stats.percentile(DEFAULT_HIGH), stats.percentile(DEFAULT_LOW)
                    # other q come from the request: core keeps the last few tables (MAX_CACHED_PERCENTILES)
                    self._warmed[served.name] = stats
        return self._warmed[served.name]

    def _details(self, served, reference, image: PreparedImage, filters: list[int], options: _Checked):
        """(RegionInfo, exemplars) for each of ``filters``, in order, on one borrowed replica."""
        geometry = _Geometry(served.preprocessing, image.image)
        display = geometry.display()  # (H, W[, 3]) in [0, 1]: one SLIC input for every filter
        with served.replica() as model:
            # One batched forward and backward to the input for every filter: the heavy part.
            masks = filter_region_masks(
                model,
                image.tensor,
                filters,
                target=image.label,
                layer=reference.layer,
                segments=options.segments,
                display_image=display,
            )
            regions = [_region(mask, geometry) for mask in masks]
            exemplars = self._exemplars(served, reference, model, image.label, filters, options)
        return list(zip(regions, exemplars))

    def _exemplars(self, served, reference, model, label: int, filters, options: _Checked):
        """Per filter, its exemplars (ids from the bundle's top lists, -1 padding dropped)."""
        table = reference.exemplars
        names = served.class_names
        chosen = []
        for f in filters:
            if options.any_class:
                ids, scores = table.overall_ids[f], table.overall_alpha[f]
            else:
                ids, scores = table.class_ids[label, f], table.class_alpha[label, f]
            keep = [(int(i), float(a)) for i, a in zip(ids[: options.exemplars], scores[: options.exemplars]) if i >= 0]
            chosen.append(keep)
        pngs: dict[tuple[int, int], bytes] = {}
        if options.include_images:
            wanted = [(f, i) for f, keep in zip(filters, chosen) for i, _ in keep]
            pngs = self._exemplar_images(served, reference, model, wanted)
        result = []
        for f, keep in zip(filters, chosen):
            infos = []
            for i, a in keep:
                ref_label = int(reference.label(i))
                name = names[ref_label] if 0 <= ref_label < len(names) else ""
                infos.append(ExemplarInfo(i, str(reference.uri(i)), ref_label, name, a, pngs.get((f, i), b"")))
            result.append(tuple(infos))
        return result

    def _exemplar_images(self, served, reference, model, wanted: list[tuple[int, int]]) -> dict:
        """PNG per (filter, reference id): cached ones, the rest in batched forward passes."""
        with self._lock:
            cache = self._exemplar_pngs.setdefault(served.name, _LRU(EXEMPLAR_CACHE_BYTES))
        found = cache.get_many(wanted)
        missing = list(dict.fromkeys(key for key in wanted if key not in found))
        if missing:
            must_not_block("reading reference images")
            for start in range(0, len(missing), EXEMPLAR_BATCH):  # up to 2 x 16 x exemplars_per_filter
                keys = missing[start : start + EXEMPLAR_BATCH]
                images = [reference.load_image(i) for _, i in keys]
                batch = torch.stack([served.preprocessing(im) for im in images])  # (B, C, H, W)
                maps = activation_maps(model, batch, [f for f, _ in keys], layer=reference.layer)  # (B, H, W)
                for key, im, heat in zip(keys, images, maps):
                    geometry = _Geometry(served.preprocessing, im)
                    found[key] = exemplar_png(geometry.pixels, geometry.to_original(heat))
            cache.put_many({key: found[key] for key in missing})
        return found


# ---------------------------------------------------------------------------------------
# Checks and helpers


def reference_of(served: ServedBundle):
    """The bundle's reference data; NoReferenceData (FAILED_PRECONDITION) saying how to get it."""
    reference = served.bundle.reference if getattr(served.bundle, "has_reference", False) else None
    if reference is None:
        raise NoReferenceData.for_bundle(served.name)
    return reference


def check_params(params: SurpriseParams, exemplars_per_filter: int) -> _Checked:
    """The request's options with defaults applied; InvalidArgument naming the first bad one."""
    high = _percentile("high_percentile", params.high_percentile or DEFAULT_HIGH)
    low = _percentile("low_percentile", params.low_percentile or DEFAULT_LOW)
    if not high > low:
        raise InvalidArgument(f"high_percentile {high:g} must be above low_percentile {low:g}")
    if params.max_filters < 0:
        raise InvalidArgument(f"max_filters {params.max_filters} must be >= 0 (0 means all)")
    detailed = check_range("detailed", params.detailed or DEFAULT_DETAILED, 1, MAX_DETAILED)
    most = max(1, int(exemplars_per_filter))
    exemplars = check_range("exemplars", params.exemplars or min(DEFAULT_EXEMPLARS, most), 1, most)
    segments = check_range("segments", params.segments or DEFAULT_SEGMENTS, 1, MAX_SEGMENTS)
    return _Checked(
        high,
        low,
        params.max_filters or None,
        detailed,
        exemplars,
        bool(params.exemplars_any_class),
        segments,
        bool(params.include_alpha),
        bool(params.include_exemplar_images),
    )


def check_class(stats, label: int) -> None:
    """FailedPrecondition when the reference data has no sample of class ``label``."""
    if int(stats.counts[label]) == 0:
        raise FailedPrecondition(
            f"the reference data has no samples of class {label}: no distribution to compare with "
            "(index with reference data that covers every class)"
        )


def _percentile(name: str, value: float) -> float:
    if not (math.isfinite(value) and 0.0 < value < 100.0):
        raise InvalidArgument(f"{name} {value:g} outside (0, 100)")
    return float(value)


def sample_surprise_lookup(served: ServedBundle) -> Callable[[int], tuple[float, int, int] | None] | None:
    """Sample id -> (beta, num_surprise, num_expectation) for Sample messages; None without reference data."""
    bundle = served.bundle
    if not getattr(bundle, "has_reference", False):
        return None
    beta, surprise, expectation = bundle.beta, bundle.num_surprise, bundle.num_expectation

    def lookup(sample_id: int) -> tuple[float, int, int] | None:
        row = served.row(sample_id)
        value = float(beta[row])
        return (value, int(surprise[row]), int(expectation[row])) if math.isfinite(value) else None

    return lookup


def upload_alpha(model, image: PreparedImage, reference) -> tuple[np.ndarray, np.ndarray]:
    """(α (N,) float32, softmax probabilities (K,) float64) of an upload, from one forward pass."""
    scores, logits = filter_importance(
        model, image.tensor[None], [image.label], layer=reference.layer, method=reference.method, return_logits=True
    )
    probs = torch.softmax(logits.double(), 1)[0].cpu().numpy()
    return scores[0].detach().cpu().numpy().astype(np.float32), probs


def _deviation(layer: str, d) -> Deviation:
    return Deviation(layer, int(d.filter), float(d.alpha), float(d.mean), float(d.threshold), float(d.deviation))


def _with(d: Deviation, extra) -> Deviation:
    if extra is None:
        return d
    region, exemplars = extra
    return Deviation(d.layer, d.filter, d.alpha, d.mean, d.threshold, d.deviation, region, exemplars)


class _Geometry:
    """One image between the model's geometry and its original size (what GetSample returns)."""

    def __init__(self, preprocessing, image: Image.Image):
        self.preprocessing, self.size = preprocessing, image.size
        grey = len(Image.getmodebase(image.mode)) == 1 and image.mode != "P"
        self.pixels = np.asarray(convert_mode(image, "L" if grey else "RGB"))  # original, uint8
        self._image = image

    def display(self) -> np.ndarray:
        """The model's view un-normalised, in [0, 1]: what SLIC segments."""
        return display_pixels(self.preprocessing, self._image).astype(np.float64) / 255.0

    def to_original(self, values: np.ndarray) -> np.ndarray:
        """(H, W) over the model's input -> float32 over the original image (crop and resize undone)."""
        return self.preprocessing.to_original(np.asarray(values, np.float32), self.size)


def _region(model_mask: np.ndarray, geometry: _Geometry) -> RegionInfo:
    """A best-superpixel mask over the model's input as a region of the original image."""
    mask = geometry.to_original(model_mask.astype(np.float32)) >= 0.5  # (H, W) original size
    return RegionInfo(region_png(geometry.pixels, mask), mask)


class _LRU:
    """A thread-safe LRU map of bytes values, bounded by their total length."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence) -> dict:
        with self._lock:
            found = {}
            for key in keys:
                if key in self._items:
                    self._items.move_to_end(key)
                    found[key] = self._items[key]
            return found

    def put_many(self, items: dict) -> None:
        with self._lock:
            for key, value in items.items():
                old = self._items.pop(key, None)
                self.bytes += len(value) - (len(old) if old is not None else 0)
                self._items[key] = value
            while self.bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)
