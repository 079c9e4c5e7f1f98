"""Do the salient filters cause the mistake? Levin et al.'s two checks, for one sample.

* :func:`pruning_evaluation` (Levin et al. §3.1, Fig. 3): turn off the ``count`` most salient
  filters (or as many random / least salient ones) and watch the originally predicted
  ("incorrect") class confidence, the true-class confidence and whether the sample flips to
  its label.
* :func:`finetune_evaluation` (Levin et al. §3.3, Fig. 6, B.1): one gradient step on the
  reference sample alone, updating only the chosen filters, and watch the reference and its
  neighbors (images with similar profiles, which were not used for the step).

The step (B.1): the ``count`` most salient filters take ``step_size`` times their raw loss
gradient (mean cross-entropy of the reference); random and least-salient sets are rescaled
to the salient set's gradient norm first, so every selection moves the model as far; the
whole-network row is ``step_size`` times the whole gradient. Choose ``step_size`` as the
paper does: the learning rate of the model's last training epoch (ResNet-50: 0.001).

Random baselines are drawn per reference: draw ``d`` of a random row takes the first
``count`` of ``randperm(F)`` from a generator seeded with :func:`draw_seed` (the request
seed mixed with the reference's identity and ``d``), so every reference gets its own sets
(nested over counts within a draw), and a random row averages ``random_draws`` draws.

Collateral: the edited model is also measured on correctly classified samples (given by the
caller, e.g. drawn with the seed from the neighbour bundle): flips and confidence changes,
once per row (a random row: its first draw, whose filters the row reports).

Both work on one private copy of the model in eval mode and apply each row's edit in
place, measure, and restore the touched entries bit for bit, so a draw costs one forward
of the reference and the neighbors (a row's first draw also one of the collateral
samples) and no model copy. For fine-tuning, the reference's gradient is taken once at the original weights:
every row's step is that gradient restricted to its filters, exactly what
:func:`parasal.core.apply_edit` recomputes for export. The model passed in is never modified.

Confidences are softmax probabilities in [0, 1]; deltas are after − before (not percent).
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._bench import (
    FORWARD_BATCH,
    Bench,
    Cancelled,
    ProgressFn,
    StopFn,
    check_counts,
    clip_notes,
    combine,
    slice_size,
    spread,
)
from ._bench import as_profile as _as_profile
from ._edits import all_slices, apply_step, filter_slices, loss_grads, prune_slices, restricted_norm, scale, zero
from ._eval_types import (
    Collateral,
    DrawSpread,
    FinetuneReport,
    FinetuneRow,
    PruningReport,
    PruningRow,
    ReferenceState,
)
from .interventions import batchnorm_consumers
from .layout import FilterLayout
from .ranking import top_k_filters

__all__ = [
    "DEFAULT_COUNT_FRACTIONS",
    "DEFAULT_RANDOM_DRAWS",
    "FORWARD_BATCH",
    "SELECTIONS",
    "WHOLE_NETWORK",
    "Cancelled",
    "default_counts",
    "counts_from_fractions",
    "reference_key",
    "draw_seed",
    "random_filters",
    "select_filters",
    "row_filters",
    "ReferenceState",
    "Collateral",
    "DrawSpread",
    "FinetuneRow",
    "FinetuneReport",
    "finetune_evaluation",
    "PruningRow",
    "PruningReport",
    "pruning_evaluation",
]

#: The counts both evaluations try when none are given, as fractions of the network's filters:
#: three in the paper's regime (≤ 1 % of the filters, §3.3) and two larger ones. For the demo
#: model's 672 filters: 1, 2, 5, 25, 74 (see :func:`default_counts`).
DEFAULT_COUNT_FRACTIONS = (0.0015, 0.003, 0.0075, 0.037, 0.11)
#: Random draws averaged per random row when none are given.
DEFAULT_RANDOM_DRAWS = 5
#: Filter choices compared in every evaluation, in the paper's order.
SELECTIONS = ("most", "random", "least")
#: ``FinetuneRow.selection`` of the fine-tuning row that updates every parameter.
WHOLE_NETWORK = "whole_network"


def default_counts(num_filters: int) -> tuple[int, ...]:
    """The default counts for a network of ``num_filters`` filters: each of
    :data:`DEFAULT_COUNT_FRACTIONS` times F, rounded half up, at least 1; distinct, ascending."""
    num_filters = operator.index(num_filters)
    if num_filters < 1:
        raise ValueError(f"num_filters must be >= 1, got {num_filters}")
    return tuple(sorted({max(1, math.floor(f * num_filters + 0.5)) for f in DEFAULT_COUNT_FRACTIONS}))


def counts_from_fractions(fractions: Sequence[float], num_filters: int) -> tuple[int, ...]:
    """Each fraction in (0, 1] of the network's filters as a count: ⌈f·F⌉, at least 1 (in
    order, duplicates kept). ValueError for a fraction outside (0, 1] or not finite. The
    product is rounded to 6 decimals first, so a float32 0.3 of 10 filters is 3, not 4."""
    counts = []
    for f in fractions:
        f = float(f)
        if not (math.isfinite(f) and 0 < f <= 1):
            raise ValueError(f"count fractions must be in (0, 1], got {f}")
        counts.append(max(1, math.ceil(round(f * num_filters, 6))))
    return tuple(counts)


def reference_key(reference: int | str | bytes | None = None, input: torch.Tensor | None = None) -> str:
    """The reference's identity that random draws are seeded with: ``"id:<n>"`` for an
    indexed sample id, ``"sha256:<hex>"`` of uploaded bytes, a string as given (an earlier
    key), or, with ``reference`` None, ``"input:<sha256>"`` of the input tensor's float32 bytes."""
    if isinstance(reference, str):
        return reference
    if isinstance(reference, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(bytes(reference)).hexdigest()
    if reference is not None:
        return f"id:{operator.index(reference)}"
    if input is None:
        raise ValueError("reference_key needs a reference or the input")
    data = input.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return "input:" + hashlib.sha256(data).hexdigest()


def draw_seed(seed: int, key: str, draw: int) -> int:
    """The generator seed of random draw ``draw`` for the reference ``key`` (63 bits of
    BLAKE2b over ``"<seed>|<key>|<draw>"``): the request seed mixed with the reference."""
    text = f"{operator.index(seed)}|{key}|{operator.index(draw)}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def random_filters(num_filters: int, count: int, *, seed: int, key: str, draw: int = 0) -> list[int]:
    """Draw ``draw``'s random filters for this reference: the first ``count`` (clipped to F)
    of ``torch.randperm(F)`` seeded with :func:`draw_seed` (nested over counts)."""
    generator = torch.Generator().manual_seed(draw_seed(seed, key, draw))
    return torch.randperm(num_filters, generator=generator)[: min(count, num_filters)].tolist()


def select_filters(profile, count: int, selection: str, *, generator: torch.Generator | None = None) -> list[int]:
    """``count`` profile indices by standardized saliency: ``"most"`` (descending),
    ``"least"`` (ascending; ties: lower index first) or ``"random"`` (the first ``count``
    of ``torch.randperm(F, generator=generator)``, so one seed gives nested sets as the
    count grows). ``count`` larger than F is clipped to F. The evaluations draw their random
    sets with :func:`random_filters` (seeded per reference)."""
    z = _as_profile(profile)
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    count = operator.index(count)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    count = min(count, len(z))
    if selection == "random":
        return torch.randperm(len(z), generator=generator)[:count].tolist()
    if torch.isnan(z).any():
        raise ValueError("profile contains NaN")
    return top_k_filters(z, count, largest=selection == "most")[0].tolist()


def row_filters(profile, count: int, selection: str, *, seed: int, key: str, draw: int = 0) -> list[int]:
    """The filters an evaluation row edits (in selection order): most / least by the profile,
    random by :func:`random_filters` for draw ``draw``."""
    if selection == "random":
        return random_filters(len(_as_profile(profile)), count, seed=seed, key=key, draw=draw)
    return select_filters(profile, count, selection)


def finetune_evaluation(
    model: nn.Module,
    layout: FilterLayout,
    input: torch.Tensor,
    label: int,
    profile,
    *,
    neighbor_inputs: torch.Tensor | None = None,
    neighbor_labels: torch.Tensor | None = None,
    counts: Sequence[int] | None = None,
    selections: Sequence[str] = SELECTIONS,
    step_size: float = 1e-3,
    seed: int = 0,
    reference: int | str | bytes | None = None,
    random_draws: int = DEFAULT_RANDOM_DRAWS,
    collateral_inputs: torch.Tensor | None = None,
    collateral_labels: torch.Tensor | None = None,
    max_batch: int = FORWARD_BATCH,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> FinetuneReport:
    """§3.3: one step on the reference alone per (selection, count), plus the whole network.

    ``profile`` is the reference's standardized profile (F,). ``counts`` None: the
    :func:`default_counts` of the network. For each count, "most" takes ``step_size`` times
    the salient filters' raw gradient; "random" and "least" are rescaled to the norm of the
    "most" set of that count first (B.1). Random rows average ``random_draws`` draws seeded
    per reference (``reference``: the sample id, the upload's bytes or a key; None: a hash
    of ``input``; see :func:`reference_key`). The last row (selection :data:`WHOLE_NETWORK`,
    count 0) is a plain step on every parameter. ``collateral_inputs`` / ``collateral_labels``
    (optional): samples each edited model is also measured on (those it gets right before).
    Counts above F are clipped and noted. ``progress(fraction, message)`` is called after
    every row and draw; ``should_stop()`` is polled before each and raises :class:`Cancelled`.
    """
    plan = _Plan.of(layout, counts, selections, random_draws)
    bench = Bench(
        model,
        layout,
        input,
        label,
        profile,
        neighbor_inputs,
        neighbor_labels,
        collateral_inputs,
        collateral_labels,
        total_steps=plan.steps + 1,
        progress=progress,
        should_stop=should_stop,
        max_batch=max_batch,
    )
    key = reference_key(reference, bench.x[0])
    grads = loss_grads(bench.work, bench.x, bench.y, list(bench.work.parameters()))  # at θ0, serves every row
    salient_norms: dict[int, float] = {}  # count -> ‖g‖₂ over the "most" set of that count

    def target_norm(selection: str, count: int) -> float | None:
        if selection == "most":
            return None
        if count not in salient_norms:
            salient = filter_slices(bench.work, layout, select_filters(bench.profile, count, "most"))
            salient_norms[count] = restricted_norm(salient, grads)
        return salient_norms[count]

    def draw(selection: str, count: int, chosen: list[int], first: bool):
        slices = filter_slices(bench.work, layout, chosen)
        return _step(bench, slices, grads, step_size, target_norm(selection, count), collateral=first)

    rows = [
        _finetune_row(selection, count, requested, chosen, measured)
        for selection, count, requested, chosen, measured in plan.run(bench, seed, key, "fine-tuned", draw)
    ]
    bench.steps.check()
    rows.append(
        _finetune_row(WHOLE_NETWORK, 0, 0, [[]], [_step(bench, all_slices(bench.work), grads, step_size, None)])
    )
    bench.steps.step("fine-tuned the whole network")
    return FinetuneReport(
        rows=rows,
        step_size=step_size,
        notes=plan.notes,
        seed=seed,
        random_draws=plan.draws,
        reference_key=key,
        **bench.summary(),
    )


def pruning_evaluation(
    model: nn.Module,
    layout: FilterLayout,
    input: torch.Tensor,
    label: int,
    profile,
    *,
    neighbor_inputs: torch.Tensor | None = None,
    neighbor_labels: torch.Tensor | None = None,
    counts: Sequence[int] | None = None,
    selections: Sequence[str] = SELECTIONS,
    seed: int = 0,
    reference: int | str | bytes | None = None,
    random_draws: int = DEFAULT_RANDOM_DRAWS,
    collateral_inputs: torch.Tensor | None = None,
    collateral_labels: torch.Tensor | None = None,
    max_batch: int = FORWARD_BATCH,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> PruningReport:
    """§3.1: per (selection, count), prune the filters chosen from the sample's profile.

    Pruning is :func:`prune_filters` with ``example_input`` = the sample (its BatchNorm
    consumers are traced once). Neighbors and collateral samples, if given, are evaluated
    with the same pruned model (filters chosen from the sample). Counts, random draws,
    ``reference``, ``progress`` / ``should_stop`` as in :func:`finetune_evaluation`.
    """
    plan = _Plan.of(layout, counts, selections, random_draws)
    bench = Bench(
        model,
        layout,
        input,
        label,
        profile,
        neighbor_inputs,
        neighbor_labels,
        collateral_inputs,
        collateral_labels,
        total_steps=plan.steps,
        progress=progress,
        should_stop=should_stop,
        max_batch=max_batch,
    )
    key = reference_key(reference, bench.x[0])
    consumers = batchnorm_consumers(bench.work, layout, example_input=bench.x)

    def draw(selection: str, count: int, chosen: list[int], first: bool):
        slices = prune_slices(bench.work, layout, chosen, consumers)
        return bench.measure(slices, zero, collateral=first), slice_size(slices)

    rows = [
        _pruning_row(selection, count, requested, chosen, measured)
        for selection, count, requested, chosen, measured in plan.run(bench, seed, key, "pruned", draw)
    ]
    return PruningReport(
        rows=rows, notes=plan.notes, seed=seed, random_draws=plan.draws, reference_key=key, **bench.summary()
    )


# --------------------------------------------------------------------------- internals


class _Plan:
    """The (count, selection) grid and its random draws, run in order on a bench."""

    def __init__(self, counts: tuple[int, ...], selections: tuple[str, ...], draws: int, num_filters: int):
        self.counts, self.selections, self.draws = counts, selections, draws
        self.num_filters = num_filters
        self.notes = clip_notes(counts, num_filters)
        per_count = sum(draws if s == "random" else 1 for s in selections)
        self.steps = len(counts) * per_count

    @classmethod
    def of(cls, layout: FilterLayout, counts, selections, draws: int) -> _Plan:
        counts = tuple(default_counts(layout.num_filters) if counts is None else counts)
        check_counts(counts)
        unknown = [s for s in selections if s not in SELECTIONS]
        if unknown:
            raise ValueError(f"unknown selection(s) {unknown}; choose from {SELECTIONS}")
        draws = operator.index(draws)
        if draws < 1:
            raise ValueError(f"random_draws must be >= 1, got {draws}")
        return cls(counts, tuple(selections), draws, layout.num_filters)

    def run(self, bench: Bench, seed: int, key: str, verb: str, draw: Callable):
        """Yields (selection, count, requested, [filters per draw], [draw(..., first) per draw])."""
        for requested in self.counts:
            count = min(requested, self.num_filters)
            for selection in self.selections:
                chosen, measured = [], []
                for d in range(self.draws if selection == "random" else 1):
                    bench.steps.check()
                    filters = row_filters(bench.profile, count, selection, seed=seed, key=key, draw=d)
                    chosen.append(filters)
                    measured.append(draw(selection, count, filters, d == 0))
                    suffix = f" (draw {d + 1}/{self.draws})" if selection == "random" else ""
                    bench.steps.step(f"{verb} {count} {selection} filter(s){suffix}")
                yield selection, count, requested, chosen, measured


def _step(bench: Bench, slices, grads, step_size: float, target: float | None, *, collateral: bool = True):
    """One fine-tuning draw: (Measured, ‖g‖₂ over the slices, ‖update / step_size‖₂, scalars changed)."""
    norm = restricted_norm(slices, grads)
    factor = step_size * scale(norm, target)
    measured = bench.measure(slices, lambda edited: apply_step(edited, grads, factor), collateral=collateral)
    return measured, norm, norm if target is None or norm == 0 else float(target), slice_size(slices)


def _finetune_row(selection, count, requested, chosen, draws) -> FinetuneRow:
    measured = [m for m, _, _, _ in draws]
    figures = combine(measured)
    return FinetuneRow(
        selection=selection,
        count=count,
        requested_count=requested,
        reference_corrected=figures["corrected"],
        reference_true_confidence_delta=figures["true_delta"],
        neighbors_corrected_fraction=figures["nb_corrected"],
        neighbors_true_confidence_delta=figures["nb_true_delta"],
        neighbors_evaluated=figures["nb_evaluated"],
        gradient_norm=float(sum(n for _, n, _, _ in draws) / len(draws)),
        update_norm=draws[0][2],
        parameters=draws[0][3],
        filters=tuple(sorted(chosen[0])),
        collateral=figures["collateral"],
        spread=spread(measured, pruning=False) if selection == "random" else None,
        reference_corrected_fraction=figures["corrected_fraction"],
    )


def _pruning_row(selection, count, requested, chosen, draws) -> PruningRow:
    measured = [m for m, _ in draws]
    figures = combine(measured)
    return PruningRow(
        selection=selection,
        count=count,
        requested_count=requested,
        incorrect_confidence_delta=figures["incorrect_delta"],
        true_confidence_delta=figures["true_delta"],
        corrected=figures["corrected"],
        neighbors_incorrect_confidence_delta=figures["nb_incorrect_delta"],
        neighbors_true_confidence_delta=figures["nb_true_delta"],
        neighbors_corrected_fraction=figures["nb_corrected"],
        neighbors_evaluated=figures["nb_evaluated"],
        parameters=draws[0][1],
        filters=tuple(sorted(chosen[0])),
        collateral=figures["collateral"],
        spread=spread(measured, pruning=True) if selection == "random" else None,
        reference_corrected_fraction=figures["corrected_fraction"],
    )
