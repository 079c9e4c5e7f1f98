"""Fine-tuning curves (Levin et al. §3.3, Fig. 6) with controls and collateral.

For each misclassified reference, one :func:`parasal.core.finetune_evaluation` step per
(selection, count) plus the whole network, measured on four neighbour sets of ``k``
misclassified samples (the reference excluded):

* ``neighbors``: its saliency neighbours (the paper's; with the collateral measurement:
  ``collateral`` correct samples drawn once with the seed);
* ``same_pair``: random misclassified samples of its confusion pair (either direction)
  that are not among its saliency neighbours: what the label pair alone explains;
* ``features``: nearest by penultimate features;
* ``label_aware``: nearest by softmax minus the one-hot true label.

The controls are measured for the "most" rows and the whole network (the salient step's
effect on other sets; random / least rows only on the saliency neighbours).

Metrics per (selection, count): ``reference_corrected_fraction``, ``<set>_corrected_fraction``
and ``<set>_true_confidence_delta`` for each set, ``collateral_accuracy_delta`` and
``collateral_flips``, and the paired per-reference differences
``saliency_minus_<control>_corrected_fraction``: what saliency neighbours add beyond each
control, whatever its sign.
"""

from __future__ import annotations

import numpy as np
import torch

from parasal.core.evaluation import SELECTIONS, finetune_evaluation

from . import _neighbors
from ._common import Context, Option, Outcome, Steps, mixed_seed, point, sample_ids
from .plots import curves_png
from .pruning import corrected_share, counts_of

NAME = "finetune"
DEFAULT_CAP = 30
OPTIONS = {
    "counts": Option("ints", (), "filters updated (default: the evaluations' default counts)", 1, 1_000_000),
    "step_size": Option("float", 1e-3, "step size of the normalised step (the server's default)", 1e-12, 1e3),
    "k": Option("int", 10, "neighbours per set (paper: 10)", 1, 1000),
    "random_draws": Option("int", 5, "random draws averaged per random row", 1, 100),
    "collateral": Option("int", 100, "correct samples the edited model is also measured on (0: none)", 0, 10_000),
    "collateral_references": Option(
        "int", 10, "references whose edits are measured for collateral (the first, in id order)", 0, 1_000_000
    ),
}
SETS = ("neighbors", "same_pair", "features", "label_aware")
CONTROLS = ("same_pair", "features", "label_aware")


def _same_pair(ctx: Context, row: int, exclude: set[int], k: int, seed: int, sample_id: int) -> np.ndarray:
    """Up to ``k`` random misclassified rows of the reference's confusion pair, not in ``exclude``."""
    labels, predicted = np.asarray(ctx.bundle.labels), np.asarray(ctx.bundle.predicted)
    wrong = ~np.asarray(ctx.bundle.correct, bool)
    a, b = labels[row], predicted[row]
    pair = wrong & (((labels == a) & (predicted == b)) | ((labels == b) & (predicted == a)))
    candidates = np.array([r for r in np.flatnonzero(pair).tolist() if r != row and r not in exclude], np.int64)
    if len(candidates) <= k:
        return candidates
    rng = np.random.default_rng(mixed_seed(seed, "same-pair", sample_id))
    return np.sort(rng.choice(candidates, size=k, replace=False))


def run(ctx: Context, *, references: int, seed: int, options: dict, progress=None) -> Outcome:
    ids = sample_ids(ctx.misclassified_ids, references, DEFAULT_CAP, seed, "misclassified samples")
    counts, k = counts_of(ctx, options), options["k"]
    steps = Steps(len(ids) * len(SETS) + 1, progress, ctx.should_stop)
    wrong_mask = ~np.asarray(ctx.bundle.correct, bool)
    _neighbors.vectors(ctx, "features", steps.head(0.1))  # one forward pass over the bundle for the baselines
    collateral_ids = np.zeros(0, np.int64)
    if options["collateral"] and len(ctx.correct_ids):
        n = min(options["collateral"], len(ctx.correct_ids))
        collateral_ids = sample_ids(ctx.correct_ids, n, n, mixed_seed(seed, "collateral"), "correct samples")
    collateral_x = ctx.images(collateral_ids) if len(collateral_ids) else None
    collateral_y = torch.from_numpy(ctx.labels(collateral_ids)) if len(collateral_ids) else None
    steps.step("features, logits and collateral samples")
    ids_of_row = ctx.ids
    values: dict[tuple[str, int, str], list[float]] = {}
    per_ref: dict[tuple[str, int, str], dict[int, float]] = {}  # for the paired differences

    def add(selection, count, metric, value, sample_id):
        values.setdefault((selection, count, metric), []).append(value)
        per_ref.setdefault((selection, count, metric), {})[sample_id] = value

    measured_collateral = 0
    for sample_id in ids.tolist():
        row = int(ctx.bundle.row_of(sample_id))
        x, label = ctx.image(sample_id), int(ctx.labels([sample_id])[0])
        profile = torch.from_numpy(ctx.bundle.profile(sample_id))
        saliency_rows = _neighbors.nearest(ctx, "saliency", np.array([row]), k, mask=wrong_mask)[0]
        sets = {
            "neighbors": saliency_rows,
            "same_pair": _same_pair(ctx, row, set(saliency_rows.tolist()), k, seed, sample_id),
            "features": _neighbors.nearest(ctx, "features", np.array([row]), k, mask=wrong_mask)[0],
            "label_aware": _neighbors.nearest(ctx, "label_aware", np.array([row]), k, mask=wrong_mask)[0],
        }

        def evaluate(
            nb_ids=(),
            collateral=False,
            draws=options["random_draws"],
            x=x,
            label=label,
            profile=profile,
            sample_id=sample_id,
            selections=SELECTIONS,
        ):
            return finetune_evaluation(
                ctx.model,
                ctx.layout,
                x,
                label,
                profile,
                neighbor_inputs=ctx.images(nb_ids) if len(nb_ids) else None,
                neighbor_labels=torch.from_numpy(ctx.labels(nb_ids)) if len(nb_ids) else None,
                counts=counts,
                selections=selections,
                step_size=options["step_size"],
                seed=seed,
                reference=sample_id,
                random_draws=draws,
                collateral_inputs=collateral_x if collateral else None,
                collateral_labels=collateral_y if collateral else None,
                should_stop=ctx.should_stop,
            )

        if collateral_x is not None and measured_collateral < options["collateral_references"]:
            # Its own evaluation with one random draw: the collateral forward (C samples per
            # row) is what costs, and one draw per reference still averages over references.
            measured_collateral += 1
            for r in evaluate(collateral=True, draws=1).rows:
                if r.collateral is not None and r.collateral.evaluated:
                    add(r.selection, r.count, "collateral_accuracy_delta", r.collateral.accuracy_delta, sample_id)
                    add(r.selection, r.count, "collateral_flips", r.collateral.flips, sample_id)
        for name in SETS:
            steps.check()
            # The controls ask what the *salient* step does to other sets: "most" rows (and the
            # whole network) only, a sixth of the forward passes of the full grid.
            report = evaluate(ids_of_row[sets[name]], selections=SELECTIONS if name == "neighbors" else ("most",))
            for r in report.rows:
                if name == "neighbors":
                    add(r.selection, r.count, "reference_corrected_fraction", corrected_share(r), sample_id)
                if r.neighbors_evaluated:
                    add(r.selection, r.count, f"{name}_corrected_fraction", r.neighbors_corrected_fraction, sample_id)
                    add(
                        r.selection,
                        r.count,
                        f"{name}_true_confidence_delta",
                        r.neighbors_true_confidence_delta,
                        sample_id,
                    )
            steps.step(f"fine-tuned reference {sample_id} ({name})")

    points = [point(s, c, m, v, seed) for (s, c, m), v in values.items()]
    for (s, c, m), by_ref in list(per_ref.items()):
        if m != "neighbors_corrected_fraction":
            continue
        for control in CONTROLS:
            other = per_ref.get((s, c, f"{control}_corrected_fraction"), {})
            diffs = [v - other[i] for i, v in by_ref.items() if i in other]
            if diffs:
                points.append(point(s, c, f"saliency_minus_{control}_corrected_fraction", diffs, seed))
    nonwhole = [p for p in points if p.selection != "whole_network"] + [
        p for p in points if p.selection == "whole_network"
    ]
    plot = curves_png(
        nonwhole,
        [
            "reference_corrected_fraction",
            "neighbors_corrected_fraction",
            "neighbors_true_confidence_delta",
            "same_pair_corrected_fraction",
            "saliency_minus_same_pair_corrected_fraction",
            "collateral_accuracy_delta",
        ],
        title=f"one fine-tuning step on {len(ids)} misclassified references (dashed: whole network)",
        logx=True,
        hlines={"whole_network": "--"},
    )
    extra = {
        "counts": list(counts),
        "k": k,
        "step_size": options["step_size"],
        "random_draws": options["random_draws"],
        "collateral_samples": len(collateral_ids),
        "collateral_references": measured_collateral,
        "collateral_random_draws": 1,
        "neighbor_pool": "misclassified samples of the bundle (the reference excluded)",
        "note": "whole_network rows have count 0",
    }
    return Outcome(len(ids), points, extra, plot)
