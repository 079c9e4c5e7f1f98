"""Surprise suppression (Hartley et al. §4.5): how many misclassified samples does blanking
the superpixels behind the most surprising filter fix, against vanilla backprop?

For each misclassified reference: its most surprising filter (α above P_cn(high), largest
deviation first, :func:`parasal.core.surprise_expectation` with the bundle's reference
statistics and thresholds); a reference without one falls back to its largest deviation
α − µ_c (the share that has a real one is reported, and the fixed share among those).
Then :func:`parasal.core.suppress_surprise` sweeps superpixel counts × blanked counts for
both methods; a reference is fixed by a method if any setting of that method corrects it
(the paper's "sweeping through all the superpixel sizes and removal amounts"; VGG16 on
ImageNet: ~36 % surprise vs ~32 % vanilla).
"""

from __future__ import annotations

import numpy as np

from parasal.core import suppress_surprise, surprise_expectation

from ._common import Context, Option, Outcome, Steps, point, sample_ids
from ._reference import require_reference
from .plots import bars_png

NAME = "suppression"
DEFAULT_CAP = 300
OPTIONS = {
    "segments": Option("ints", (25, 50, 100), "SLIC superpixel counts swept", 2, 1000),
    "blank_counts": Option("ints", (1, 2, 3, 5), "numbers of top superpixels blanked", 1, 1000),
}
METHODS = ("surprise", "vanilla")


def check_bundle(bundle) -> None:
    require_reference(bundle)


def run(ctx: Context, *, references: int, seed: int, options: dict, progress=None) -> Outcome:
    require_reference(ctx.bundle)
    ref = ctx.bundle.reference
    ids = sample_ids(ctx.misclassified_ids, references, DEFAULT_CAP, seed, "misclassified samples")
    alpha = ctx.bundle.alpha(ids)  # (n, N)
    labels = ctx.labels(ids)
    stats = ref.stats
    found = surprise_expectation(alpha, labels, stats, high=ref.high, low=ref.low, top=1)
    steps = Steps(len(ids), progress, ctx.should_stop)
    segments, blanks = tuple(options["segments"]), tuple(options["blank_counts"])
    fixed = {m: [] for m in METHODS}
    by_setting = {(m, s, b): [] for m in METHODS for s in segments for b in blanks}
    genuine = []
    for i, sample_id in enumerate(ids.tolist()):
        steps.check()
        s = found[i]
        if s.surprise:
            chosen, has = s.surprise[0].filter, True
        else:
            chosen, has = int(np.argmax(s.alpha - stats.mean[labels[i]])), False
        genuine.append(has)
        report = suppress_surprise(
            ctx.model,
            ctx.image(sample_id),
            int(labels[i]),
            int(chosen),
            layer=ref.layer,
            segment_counts=segments,
            blank_counts=blanks,
            should_stop=ctx.should_stop,
        )
        for m in METHODS:
            rows = [r for r in report.rows if r.method == m]
            fixed[m].append(float(any(r.fixed for r in rows)))
            for r in rows:
                by_setting[(m, r.segments, r.blanked)].append(float(r.fixed))
        steps.step(f"suppression sweep on reference {sample_id}")
    genuine = np.array(genuine, bool)
    points = [point(m, 0, "fixed_fraction", fixed[m], seed) for m in METHODS]
    points.append(
        point("surprise_minus_vanilla", 0, "fixed_fraction", np.subtract(fixed["surprise"], fixed["vanilla"]), seed)
    )
    points.append(point("surprise_filter_found", 0, "share", genuine.astype(float), seed))
    for m in METHODS:
        points.append(point(m, 0, "fixed_fraction_with_surprise_filter", np.asarray(fixed[m])[genuine], seed))
    for (m, s, b), v in by_setting.items():
        points.append(point(m, b, f"fixed_fraction_segments_{s}", v, seed, segments=s))
    extra = {
        "layer": ref.layer,
        "high": ref.high,
        "segments": list(segments),
        "blank_counts": list(blanks),
        "fixed_by_surprise": int(sum(fixed["surprise"])),
        "fixed_by_vanilla": int(sum(fixed["vanilla"])),
        "with_surprise_filter": int(genuine.sum()),
        "note": "fixed_fraction_segments_S points: count = superpixels blanked",
    }
    plot = bars_png(
        [p for p in points if p.metric in ("fixed_fraction", "fixed_fraction_with_surprise_filter")],
        ["fixed_fraction", "fixed_fraction_with_surprise_filter"],
        title=f"suppressing surprise on {len(ids)} misclassified samples",
    )
    return Outcome(len(ids), points, extra, plot)
