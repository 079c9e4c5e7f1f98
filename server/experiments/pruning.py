"""Pruning curves (Levin et al. §3.1, Fig. 3) over misclassified references.

For each reference, :func:`parasal.core.pruning_evaluation` on the reference alone (Fig. 3
measures the pruned sample itself): per count and selection (most / random / least; random
rows average ``random_draws`` draws seeded per reference), the change of the originally
predicted ("incorrect") class confidence, of the true-class confidence, and whether the
reference is corrected (a random row: the share of its draws). Points are means over
references with 95 % bootstrap CIs.
"""

from __future__ import annotations

import torch

from parasal.core.evaluation import SELECTIONS, default_counts, pruning_evaluation

from ._common import Context, Option, Outcome, Steps, point, sample_ids
from .plots import curves_png

NAME = "pruning"
DEFAULT_CAP = 100
OPTIONS = {
    "counts": Option("ints", (), "filters pruned (default: the evaluations' default counts)", 1, 1_000_000),
    "random_draws": Option("int", 5, "random draws averaged per random row", 1, 100),
}
METRICS = ("incorrect_confidence_delta", "true_confidence_delta", "corrected_fraction")


def corrected_share(row) -> float:
    """A row's corrected figure: the share of draws for random rows, 0/1 otherwise."""
    share = getattr(row, "reference_corrected_fraction", float("nan"))
    if share == share:  # not NaN
        return float(share)
    return float(getattr(row, "corrected", getattr(row, "reference_corrected", False)))


def counts_of(ctx: Context, options: dict) -> tuple[int, ...]:
    counts = tuple(options["counts"]) or default_counts(ctx.layout.num_filters)
    return tuple(dict.fromkeys(min(int(c), ctx.layout.num_filters) for c in counts))


def run(ctx: Context, *, references: int, seed: int, options: dict, progress=None) -> Outcome:
    ids = sample_ids(ctx.misclassified_ids, references, DEFAULT_CAP, seed, "misclassified samples")
    counts = counts_of(ctx, options)
    steps = Steps(len(ids), progress, ctx.should_stop)
    values: dict[tuple[str, int, str], list[float]] = {}
    for sample_id in ids.tolist():
        steps.check()
        report = pruning_evaluation(
            ctx.model,
            ctx.layout,
            ctx.image(sample_id),
            int(ctx.labels([sample_id])[0]),
            torch.from_numpy(ctx.bundle.profile(sample_id)),
            counts=counts,
            selections=SELECTIONS,
            seed=seed,
            reference=sample_id,
            random_draws=options["random_draws"],
            should_stop=ctx.should_stop,
        )
        for row in report.rows:
            for metric, value in (
                ("incorrect_confidence_delta", row.incorrect_confidence_delta),
                ("true_confidence_delta", row.true_confidence_delta),
                ("corrected_fraction", corrected_share(row)),
            ):
                values.setdefault((row.selection, row.count, metric), []).append(value)
        steps.step(f"pruned for reference {sample_id}")
    points = [point(s, c, m, v, seed) for (s, c, m), v in values.items()]
    plot = curves_png(
        points,
        METRICS,
        title=f"pruning salient filters ({len(ids)} misclassified references)",
        logx=True,
        titles={
            "incorrect_confidence_delta": "Δ incorrect-class confidence",
            "true_confidence_delta": "Δ true-class confidence",
            "corrected_fraction": "share corrected",
        },
    )
    extra = {"counts": list(counts), "random_draws": options["random_draws"], "num_filters": ctx.layout.num_filters}
    return Outcome(len(ids), points, extra, plot)
