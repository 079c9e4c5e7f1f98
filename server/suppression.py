"""StartSuppression (Hartley et al. §4.5) as an operation: blank what drives a sample's most surprising filter.

Starting checks everything that can be checked at once (bundle, reference data, sample id
or upload, the sweep's sizes), so those errors come back as the rpc's status; the job then

1. resolves the sample: an indexed sample's stored α and image (through the bundle's
   preprocessing), or the upload's α computed on the bundle's reference layer and method;
2. finds its most surprising filter (:func:`parasal.core.surprise_expectation` at the
   default thresholds, the largest deviation first);
3. runs :func:`parasal.core.suppress_surprise` on a private copy of the serving model
   (the master is never hooked; replicas stay free for queries), which sweeps the
   superpixel counts × blank counts for the filter's gradient and vanilla backprop,
   reporting progress and polling the stop flag.

A sample without a surprise filter gets ``filter`` -1 and the vanilla rows only.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from parasal.core import ReferenceState, suppress_surprise, surprise_expectation
from parasal.core.suppression import DEFAULT_BLANK_COUNTS, DEFAULT_SEGMENT_COUNTS
from parasal.v1 import saliency_pb2 as pb

from .conversions import suppression_to_proto
from .errors import InvalidArgument
from .operations import Operations, Progress, StopFlag
from .queries import ImageQuery, PreparedImage, Queries, check_range, display_pixels
from .registry import Registry, ServedBundle
from .surprise import DEFAULT_HIGH, DEFAULT_LOW, MAX_SEGMENTS, check_class, reference_of, upload_alpha

__all__ = ["SuppressionParams", "Suppressions", "MAX_SWEEP_ENTRIES", "MIN_SEGMENTS"]

#: Entries of ``segments`` and of ``blank_counts`` a request may give (the proto's cap).
MAX_SWEEP_ENTRIES = 16
#: Fewer than 2 superpixels is the whole image: nothing to choose.
MIN_SEGMENTS = 2
#: Share of the progress bar for resolving the sample and its filter.
PREPARE_SHARE = 0.1


@dataclass(frozen=True)
class SuppressionParams:
    bundle: str
    reference: int | ImageQuery
    segments: Sequence[int] = ()
    blank_counts: Sequence[int] = ()


@dataclass(frozen=True)
class _Sample:
    sample_id: int | None
    image: PreparedImage | None  # uploads are decoded and checked up front


class Suppressions:
    def __init__(self, registry: Registry, queries: Queries, operations: Operations):
        self.registry, self.queries, self.operations = registry, queries, operations

    def start(self, params: SuppressionParams) -> pb.Operation:
        served = self.registry.get(params.bundle)
        reference = reference_of(served)  # FAILED_PRECONDITION now, not a failed operation later
        segments = _sweep("segments", params.segments, DEFAULT_SEGMENT_COUNTS, MIN_SEGMENTS, MAX_SEGMENTS)
        blanks = _sweep("blank_counts", params.blank_counts, DEFAULT_BLANK_COUNTS, 1, MAX_SEGMENTS)
        if isinstance(params.reference, ImageQuery):
            sample = _Sample(None, self.queries.prepare(served, params.reference))
        else:
            served.meta(params.reference)  # NotFound now
            sample = _Sample(int(params.reference), None)

        def job(progress: Progress, should_stop: StopFlag) -> pb.SuppressionResult:
            progress(0.0, "preparing the sample")
            model = copy.deepcopy(served.master)  # hooks and flags change on this copy only
            image, alpha, state = self._resolve(served, reference, model, sample)
            check_class(reference.stats, image.label)
            (found,) = surprise_expectation(
                alpha[None], [image.label], reference.stats, high=DEFAULT_HIGH, low=DEFAULT_LOW
            )
            filter = found.surprise[0].filter if found.surprise else -1
            display = display_pixels(served.preprocessing, image.image).astype(np.float64) / 255.0
            report = suppress_surprise(
                model,
                image.tensor,
                image.label,
                max(filter, 0),  # no surprise filter: its rows are dropped below, vanilla kept
                layer=reference.layer,
                segment_counts=segments,
                blank_counts=blanks,
                display_image=display,
                progress=lambda f, message: progress(PREPARE_SHARE + (1 - PREPARE_SHARE) * f, message),
                should_stop=should_stop,
            )
            if filter < 0:
                report = dataclasses.replace(report, filter=-1, rows=[r for r in report.rows if r.method == "vanilla"])
            return suppression_to_proto(report, state, sample.sample_id)

        return self.operations.start(pb.OPERATION_KIND_SUPPRESSION, served.name, job)

    def _resolve(self, served: ServedBundle, reference, model, sample: _Sample):
        """(PreparedImage, α (N,) float32, ReferenceState) of the sample before any change."""
        if sample.image is not None:
            alpha, probs = upload_alpha(model, sample.image, reference)
            label = sample.image.label
            predicted = int(probs.argmax())
            state = ReferenceState(label, predicted, float(probs[label]), float(probs[predicted]))
            return sample.image, alpha, state
        meta = served.meta(sample.sample_id)
        pil = served.bundle.load_image(sample.sample_id)
        image = PreparedImage(pil, served.preprocessing(pil), int(meta.label))
        alpha = np.asarray(served.bundle.alpha([sample.sample_id])[0], np.float32)
        state = ReferenceState(
            int(meta.label), int(meta.predicted), float(meta.true_confidence), float(meta.predicted_confidence)
        )
        return image, alpha, state


def _sweep(name: str, values: Sequence[int], default: Sequence[int], low: int, high: int) -> tuple[int, ...]:
    """Distinct values in request order, each low..high; empty means ``default``."""
    if not values:
        return tuple(default)
    if len(values) > MAX_SWEEP_ENTRIES:
        raise InvalidArgument(f"{name} has {len(values)} entries; at most {MAX_SWEEP_ENTRIES}")
    return tuple(
        check_range(name[:-1] if name.endswith("s") else name, int(v), low, high) for v in dict.fromkeys(values)
    )
