"""The quick questions (no protobuf here): samples, profiles, neighbours, explanations.

Every answer comes from a served bundle (registry.py): stored profiles and metadata for
indexed samples; for an uploaded image the same core functions and the bundle's recorded
preprocessing that built the index. Input is checked here and refused with
:class:`InvalidArgument` naming the problem before any model work.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from parasal.core import heatmap_overlay_png, input_saliency, top_k_filters
from parasal.indexer import ImageRejected, ImageTooLarge, Preprocessing, open_image_limited
from parasal.indexer.preprocessing import convert_mode

from .config import ServerConfig
from .errors import InvalidArgument, shown
from .inline import must_not_block
from .registry import Registry, ServedBundle

__all__ = [
    "ImageQuery",
    "Query",
    "FilterScore",
    "ProfileResult",
    "Neighbor",
    "Confusion",
    "SimilarResult",
    "Explanation",
    "SampleRecord",
    "PreparedImage",
    "Queries",
    "DEFAULT_TOP_K",
    "DEFAULT_K",
    "DEFAULT_BOOST",
]

DEFAULT_TOP_K = 10
DEFAULT_K = 10
DEFAULT_BOOST = 100.0
#: Formats accepted for uploads (the proto promises PNG or JPEG; fewer decoders, less attack surface).
UPLOAD_FORMATS = ("PNG", "JPEG")


@dataclass(frozen=True)
class ImageQuery:
    """An uploaded image (encoded bytes) with its true label."""

    data: bytes
    label: int


#: What a question is about: an indexed sample id, an upload, or (similarity only) a raw vector.
Query = int | ImageQuery | np.ndarray


@dataclass(frozen=True)
class FilterScore:
    index: int  # profile index
    layer: str
    filter: int  # index within the layer
    z: float


@dataclass(frozen=True)
class ProfileResult:
    sample_id: int | None
    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float
    loss: float
    top_filters: list[FilterScore]
    vector: np.ndarray  # (F,) float32 standardized


@dataclass(frozen=True)
class Neighbor:
    id: int
    similarity: float
    sample: object  # parasal.indexer SampleMeta


@dataclass(frozen=True)
class Confusion:
    label: int
    predicted: int
    count: int


@dataclass(frozen=True)
class SimilarResult:
    neighbors: list[Neighbor]
    confusions: list[Confusion]


@dataclass(frozen=True)
class Explanation:
    heatmap: np.ndarray  # (H, W) float32 in [0, 1]
    overlay_png: bytes
    filters: list[FilterScore]
    label: int
    predicted: int


@dataclass(frozen=True)
class SampleRecord:
    sample: object  # SampleMeta
    image_png: bytes


@dataclass(frozen=True)
class PreparedImage:
    """A decoded, checked image: the PIL image, the model input and its true label."""

    image: Image.Image
    tensor: torch.Tensor  # (C, H, W) float32 after the bundle's preprocessing
    label: int


class Queries:
    def __init__(self, registry: Registry, config: ServerConfig):
        self.registry = registry
        self.config = config

    # -- samples -----------------------------------------------------------------------

    def sample(self, bundle: str, sample_id: int, include_image: bool) -> SampleRecord:
        served = self.registry.get(bundle)
        meta = served.meta(sample_id)
        if include_image:
            must_not_block("reading a dataset image")
        png = encode_png(served.bundle.load_image(sample_id)) if include_image else b""
        return SampleRecord(meta, png)

    # -- profiles ----------------------------------------------------------------------

    def profile(self, bundle: str, query: int | ImageQuery, top_k: int = 0) -> ProfileResult:
        served = self.registry.get(bundle)
        top_k = check_top_k(top_k, served.layout.num_filters)
        if isinstance(query, ImageQuery):
            return self.upload_profile(served, self.prepare(served, query), top_k)
        meta = served.meta(query)
        vector = served.profile(query)
        return ProfileResult(
            int(meta.id),
            int(meta.label),
            int(meta.predicted),
            float(meta.true_confidence),
            float(meta.predicted_confidence),
            float(meta.loss),
            top_filters(served, vector, top_k),
            vector,
        )

    def upload_profile(self, served: ServedBundle, image: PreparedImage, top_k: int = DEFAULT_TOP_K) -> ProfileResult:
        """Profile of an uploaded image: raw filter saliency standardized with the bundle's
        statistics, and the model's prediction, confidences and loss (computed in a batch
        with other concurrent uploads, see batching.py)."""
        result = served.batcher.profile(image.tensor, image.label)
        predicted = int(result.probs.argmax())
        vector = np.asarray(served.stats.standardize(result.raw), np.float32)
        return ProfileResult(
            None,
            image.label,
            predicted,
            float(result.probs[image.label]),
            float(result.probs[predicted]),
            result.loss,
            top_filters(served, vector, top_k),
            vector,
        )

    def prepare(self, served: ServedBundle, query: ImageQuery) -> PreparedImage:
        """Decode and check an upload for this bundle's model; InvalidArgument names the problem."""
        must_not_block("decoding an upload")  # uploads then wait for the saliency batcher anyway
        check_label(query.label, served.num_classes)
        preprocessing = served.preprocessing
        image = decode_image(query.data, self.config.max_image_pixels, fixed_input_size(preprocessing))
        # The indexer's own conversion (grey <-> RGB, palette, alpha): an upload is used
        # exactly when the same file in a dataset would be; only what it cannot convert is refused.
        try:
            tensor = preprocessing(image)
        except ImageRejected as exc:
            raise InvalidArgument(str(exc)) from None
        shape = tuple(preprocessing.input_shape or ())
        if shape and tuple(tensor.shape) != shape:
            raise InvalidArgument(
                f"image is {image.width}x{image.height}, {tuple(tensor.shape)} after preprocessing; "
                f"the model takes {shape} (channels, height, width)"
            )
        return PreparedImage(image, tensor, int(query.label))

    # -- neighbours --------------------------------------------------------------------

    def find_similar(
        self,
        bundle: str,
        query: Query,
        *,
        k: int = 0,
        only_misclassified: bool = False,
        true_labels: Sequence[int] = (),
        predicted_labels: Sequence[int] = (),
        include_query: bool = False,
        layers: Sequence[str] = (),
        beta_below: float | None = None,
        beta_above: float | None = None,
        only_with_surprise: bool = False,
    ) -> SimilarResult:
        served = self.registry.get(bundle)
        k = check_range("k", k or DEFAULT_K, 1, self.config.max_k)
        layers = check_layers(served, layers)
        for label in [*true_labels, *predicted_labels]:  # at most 2 x limits.MAX_LABELS
            check_label(label, served.num_classes)
        by_surprise = check_beta_filters(beta_below, beta_above, only_with_surprise)  # () when none given
        allowed = filters = None
        if only_misclassified or true_labels or predicted_labels or by_surprise:
            filters = (
                bool(only_misclassified),
                tuple(sorted(set(true_labels))),
                tuple(sorted(set(predicted_labels))),
                by_surprise,
            )
            # The beta / surprise filters raise NoReferenceData (FAILED_PRECONDITION) on a
            # bundle indexed without reference data.
            allowed = served.bundle.rows_where(
                misclassified=True if only_misclassified else None,
                labels=list(true_labels) or None,
                predicted=list(predicted_labels) or None,
                beta_below=beta_below,
                beta_above=beta_above,
                only_with_surprise=bool(only_with_surprise),
            )
        hits = exclude = None
        if isinstance(query, ImageQuery):
            vector = self.upload_profile(served, self.prepare(served, query)).vector
        elif isinstance(query, np.ndarray):
            vector = check_vector(query, served.layout.num_filters)
        else:
            exclude = None if include_query else int(query)
            if not layers:  # the sample's precomputed list, when it proves the answer
                hits = served.listed_neighbors(int(query), k, allowed, exclude_self=not include_query)
            vector = served.profile(query) if hits is None else None
        if hits is None:
            # Excluding the query: ask for one more and drop it. The k best of the others are
            # among the k + 1 best of all, and an unfiltered search is the index's fast path
            # (and batches with other queries asking for the same k).
            hits = served.searcher.search(
                vector, k + (exclude is not None), filters=filters, allowed=allowed, layers=layers
            )
            hits = [(i, s) for i, s in hits if i != exclude][:k]
        metas = served.metas([int(i) for i, _ in hits])
        neighbors = [Neighbor(int(i), float(s), meta) for (i, s), meta in zip(hits, metas)]
        pairs = Counter((int(n.sample.label), int(n.sample.predicted)) for n in neighbors)
        confusions = [
            Confusion(label, predicted, count)
            for (label, predicted), count in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return SimilarResult(neighbors, confusions)

    # -- explanations ------------------------------------------------------------------

    def explain(
        self, bundle: str, query: int | ImageQuery, *, top_k: int = 0, filters: Sequence[int] = (), boost: float = 0.0
    ) -> Explanation:
        served = self.registry.get(bundle)
        num_filters = served.layout.num_filters
        top_k = check_top_k(top_k, num_filters)
        if len(filters) > num_filters:
            raise InvalidArgument(f"filters has {len(filters)} entries; this model has {num_filters} filters")
        for index in filters:
            check_range("filter index", index, 0, num_filters - 1)
        boost = boost or DEFAULT_BOOST
        if not math.isfinite(boost) or boost <= 0:
            raise InvalidArgument(f"boost must be a positive finite number, got {boost}")
        if isinstance(query, ImageQuery):
            prepared = self.prepare(served, query)
        else:
            meta = served.meta(query)
            image = served.bundle.load_image(query)
            prepared = PreparedImage(image, served.preprocessing(image), int(meta.label))
        with served.replica() as model:
            result = input_saliency(
                model,
                prepared.tensor,
                prepared.label,
                served.stats,
                layout=served.layout,
                filters=list(filters) or None,
                top_k=top_k,
                boost=boost,
            )
        profile = result.profile.detach().cpu().numpy()
        overlay = original_overlay_png(served.preprocessing, prepared.image, result.heatmap)
        scores = [filter_score(served, i, float(profile[i])) for i in result.filters]
        return Explanation(result.heatmap, overlay, scores, prepared.label, result.predicted)


# ---------------------------------------------------------------------------------------
# Checks and helpers (also used by evaluations.py)


def check_range(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(f"{name} {value} outside {low}..{high}")
    return int(value)


def check_beta_filters(beta_below: float | None, beta_above: float | None, only_with_surprise: bool) -> tuple:
    """() without beta / surprise filters, else their (hashable) values. InvalidArgument for a
    non-finite bound or an empty interval (beta_above >= beta_below: both bounds are strict)."""
    for name, value in (("beta_below", beta_below), ("beta_above", beta_above)):
        if value is not None and not math.isfinite(value):
            raise InvalidArgument(f"{name} must be a finite number, got {value}")
    if beta_below is not None and beta_above is not None and beta_above >= beta_below:
        raise InvalidArgument(f"beta_above {beta_above:g} >= beta_below {beta_below:g}: no beta lies between them")
    if beta_below is None and beta_above is None and not only_with_surprise:
        return ()
    return (beta_below, beta_above, bool(only_with_surprise))


def check_top_k(top_k: int, num_filters: int) -> int:
    """0 means the default (10, or every filter of a smaller model)."""
    return check_range("top_k", top_k or min(DEFAULT_TOP_K, num_filters), 1, num_filters)


def check_label(label: int, num_classes: int) -> int:
    if not 0 <= label < num_classes:
        raise InvalidArgument(f"label {label} outside 0..{num_classes - 1}")
    return int(label)


def check_layers(served: ServedBundle, layers: Sequence[str]) -> list[str]:
    """Layer names, each an exact layer or a module prefix, expanded to layers in layout
    order (duplicates dropped); InvalidArgument naming the unknown ones."""
    if not layers:
        return []
    known = {span.name for span in served.layout}
    if len(layers) > len(known):
        raise InvalidArgument(f"layers has {len(layers)} entries; this model has {len(known)} layers")
    names = [span.name for span in served.layout]
    expanded, unknown = [], []
    for name in layers:
        # A module prefix ("layer4") stands for every layer under it ("layer4.0.conv1", ...).
        matches = [name] if name in known else [n for n in names if n.startswith(name.rstrip(".") + ".")]
        if name and matches:
            expanded += matches
        else:
            unknown.append(name)
    if unknown:
        raise InvalidArgument(
            f"unknown layer(s) {', '.join(shown(name) for name in unknown[:5])}; this model's layers are "
            f"{names[:12]}{'...' if len(known) > 12 else ''} (a module name selects every layer under it)"
        )
    return list(dict.fromkeys(expanded))


def check_vector(values: np.ndarray, num_filters: int) -> np.ndarray:
    vector = np.asarray(values, np.float32).reshape(-1)
    if vector.shape[0] != num_filters:
        raise InvalidArgument(f"vector has {vector.shape[0]} values; this bundle's profiles have {num_filters}")
    if not np.isfinite(vector).all():
        raise InvalidArgument("vector contains NaN or infinite values")
    if not np.any(vector):
        raise InvalidArgument("vector is all zeros (cosine similarity is undefined)")
    return vector


def filter_score(served: ServedBundle, index: int, z: float) -> FilterScore:
    span, j = served.layout.locate(int(index))
    return FilterScore(int(index), span.name, int(j), float(z))


def top_filters(served: ServedBundle, vector: np.ndarray, k: int) -> list[FilterScore]:
    """The k highest z-scores, highest first (ties: lower index first)."""
    indices, values = top_k_filters(vector, k)
    return [filter_score(served, i, z) for i, z in zip(indices.tolist(), values.tolist())]


def fixed_input_size(preprocessing: Preprocessing) -> tuple[int, int] | None:
    """(width, height) of the only image size the model takes (no resize, no crop, a known
    input shape), else None (any size is resized or cropped to fit)."""
    shape = preprocessing.input_shape
    if preprocessing.resize or preprocessing.crop or not shape:
        return None
    return int(shape[2]), int(shape[1])


def decode_image(data: bytes, max_pixels: int, size: tuple[int, int] | None = None) -> Image.Image:
    """PNG/JPEG bytes -> loaded PIL image; InvalidArgument if empty, undecodable or too large.

    The header is checked before a pixel is decoded (parasal.indexer.open_image_limited):
    more than ``max_pixels``, or, when the model takes one ``size`` (width, height) only,
    more pixels than that size, is refused at once. A 4096x4096 upload to a 28x28 model
    costs a header read, not 0.5 s of decoding and 65 MB."""
    limit = max_pixels if size is None else min(max_pixels, size[0] * size[1])
    try:
        return open_image_limited(data, limit, formats=UPLOAD_FORMATS)
    except ImageTooLarge as exc:
        if not exc.width:  # Pillow refused the header itself (PNG 50000², JPEG 65535²)
            message = f"image declares more pixels than the decoder accepts; the limit is {max_pixels}"
        elif size is not None and exc.width * exc.height <= max_pixels:
            message = f"image is {exc.width}x{exc.height}; the model takes {size[0]}x{size[1]} images"
        else:
            message = f"image is {exc.width}x{exc.height} = {exc.width * exc.height} pixels; the limit is {max_pixels}"
        raise InvalidArgument(message) from None
    except ImageRejected as exc:  # its message names no file
        raise InvalidArgument(str(exc)) from None


def image_channels(image: Image.Image) -> int:
    """Colour channels of a decoded image: 1 for grey modes, 3 for colour ones (alpha not
    counted; palette and CMYK images count as the RGB they convert to)."""
    return 3 if image.mode == "P" else len(Image.getmodebase(image.mode))


def display_pixels(preprocessing, image: Image.Image) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3): the image after the preprocessing's resize and crop, not normalised.

    Replays the recorded preprocessing itself with mean 0 and std 1/255, so the geometry is
    exactly the model's and the values are the pixel values.
    """
    n = preprocessing.num_channels
    plain = dataclasses.replace(preprocessing, mean=(0.0,) * n, std=(1 / 255,) * n)
    pixels = plain(image).permute(1, 2, 0).numpy()  # (H, W, C)
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return pixels[..., 0] if n == 1 else pixels


def original_overlay_png(preprocessing: Preprocessing, image: Image.Image, heatmap: np.ndarray) -> bytes:
    """The heatmap (over the model's input) drawn on the original image, pixel for pixel
    the image GetSample returns: the preprocessing's crop and resize are undone, so the
    overlay lines up with the sample's image (clients enlarge it to read it)."""
    grey = len(Image.getmodebase(image.mode)) == 1 and image.mode != "P"
    pixels = np.asarray(convert_mode(image, "L" if grey else "RGB"))
    return heatmap_overlay_png(pixels, preprocessing.to_original(heatmap, image.size))


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
