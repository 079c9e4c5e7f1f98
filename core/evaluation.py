"""Do the salient filters cause the mistake? The paper's two checks, for one sample.

* :func:`pruning_evaluation` (§3.1, Fig. 3): turn off the ``count`` most salient filters
  (or as many random / least salient ones) and watch the originally predicted ("incorrect")
  class confidence, the true-class confidence and whether the sample flips to its label.
* :func:`finetune_evaluation` (§3.3, Fig. 6, B.1): one gradient step on the reference
  sample alone, updating only the chosen filters (random/least renormalised to the
  salient set's gradient norm), and watch the reference and its neighbors (images with
  similar profiles, which were not used for the step).

Both work on one private copy of the model in eval mode and apply each row's edit in
place, measure, and restore the touched entries bit for bit, so a row costs one forward
of the reference and all neighbors together (one batch) and no model copy. For
fine-tuning, the reference's gradient is taken once at the original weights: every row's
step is that gradient restricted to its filters, exactly what :func:`finetune_step`
computes on a fresh copy. The model passed in is never modified.

Confidences are softmax probabilities in [0, 1]; deltas are after − before (not percent).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._edits import (
    all_slices,
    apply_step,
    filter_slices,
    loss_grads,
    prune_slices,
    restored,
    restricted_norm,
    scale,
    zero,
)
from ._state import as_batch, eval_copy
from .interventions import batchnorm_consumers
from .layout import FilterLayout
from .ranking import top_k_filters

__all__ = [
    "DEFAULT_COUNTS",
    "SELECTIONS",
    "WHOLE_NETWORK",
    "Cancelled",
    "select_filters",
    "ReferenceState",
    "FinetuneRow",
    "FinetuneReport",
    "finetune_evaluation",
    "PruningRow",
    "PruningReport",
    "pruning_evaluation",
]

log = logging.getLogger(__name__)

#: Numbers of filters both evaluations try when none are given (the proto's "empty means").
DEFAULT_COUNTS = (1, 5, 25, 75)
#: Filter choices compared in every evaluation, in the paper's order.
SELECTIONS = ("most", "random", "least")
#: ``FinetuneRow.selection`` of the fine-tuning row that updates every parameter.
WHOLE_NETWORK = "whole_network"

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]


class Cancelled(Exception):
    """An evaluation stopped because its ``should_stop()`` returned True."""


def select_filters(profile, count: int, selection: str, *, generator: torch.Generator | None = None) -> list[int]:
    """``count`` profile indices by standardized saliency: ``"most"`` (descending),
    ``"least"`` (ascending; ties: lower index first) or ``"random"`` (the first ``count``
    of ``torch.randperm(F, generator=generator)``, so one seed gives nested sets as the
    count grows). ``count`` larger than F is clipped to F."""
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


@dataclass(frozen=True)
class ReferenceState:
    """The evaluated sample before any change (the proto's ``ReferenceState``)."""

    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float


@dataclass(frozen=True)
class FinetuneRow:
    """One (selection, count) of :func:`finetune_evaluation`.

    ``reference_corrected``: the reference's prediction equals its label after the step.
    Neighbor figures are over the neighbors the model got wrong *before* the step
    (``neighbors_evaluated`` of them; NaN when there are none): the fraction now predicted
    as their label, and the mean change of their true-class confidence.
    """

    selection: str  # "most" | "random" | "least" | "whole_network"
    count: int  # filters updated (after clipping to F; F for the whole network)
    reference_corrected: bool
    reference_true_confidence_delta: float
    neighbors_corrected_fraction: float
    neighbors_true_confidence_delta: float
    neighbors_evaluated: int
    requested_count: int = 0  # the count asked for, before clipping
    gradient_norm: float = 0.0  # ‖g‖₂ restricted to the updated entries, before renormalisation
    update_norm: float = 0.0  # ‖g‖₂ actually applied (= the "most" row's gradient_norm for random/least)


@dataclass(frozen=True)
class FinetuneReport:
    rows: list[FinetuneRow]
    reference: ReferenceState  # before the step
    neighbors_total: int
    neighbors_misclassified: int  # before; these are the ones evaluated
    num_filters: int
    step_size: float
    notes: list[str] = field(default_factory=list)  # e.g. counts clipped to F


@dataclass(frozen=True)
class PruningRow:
    """One (selection, count) of :func:`pruning_evaluation`.

    "Incorrect class" is the class predicted before pruning (for a correctly classified
    sample that is the true class). Neighbor figures are averaged over the neighbors the
    model got wrong before pruning, each with its own predicted class (NaN when none).
    """

    selection: str
    count: int
    requested_count: int
    incorrect_confidence_delta: float
    true_confidence_delta: float
    corrected: bool
    neighbors_incorrect_confidence_delta: float = float("nan")
    neighbors_true_confidence_delta: float = float("nan")
    neighbors_corrected_fraction: float = float("nan")
    neighbors_evaluated: int = 0


@dataclass(frozen=True)
class PruningReport:
    rows: list[PruningRow]
    reference: ReferenceState  # before pruning
    neighbors_total: int
    neighbors_misclassified: int
    num_filters: int
    notes: list[str] = field(default_factory=list)


def finetune_evaluation(
    model: nn.Module,
    layout: FilterLayout,
    input: torch.Tensor,
    label: int,
    profile,
    *,
    neighbor_inputs: torch.Tensor | None = None,
    neighbor_labels: torch.Tensor | None = None,
    counts: Sequence[int] = DEFAULT_COUNTS,
    selections: Sequence[str] = SELECTIONS,
    step_size: float = 1e-3,
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> FinetuneReport:
    """§3.3: one step on the reference alone per (selection, count), plus the whole network.

    ``profile`` is the reference's standardized profile (F,). For each count, "most" takes
    the salient filters' gradient as is; "random" (``seed``, nested over counts) and
    "least" are rescaled to the norm of the "most" set of that count (B.1). The last row
    (selection :data:`WHOLE_NETWORK`) is a plain step on every parameter. Counts above F
    are clipped and noted. ``progress(fraction, message)`` is called after every row;
    ``should_stop()`` is polled before every row and raises :class:`Cancelled`.
    """
    bench = _Bench(
        model,
        layout,
        input,
        label,
        profile,
        neighbor_inputs,
        neighbor_labels,
        counts,
        selections,
        extra_rows=1,
        progress=progress,
        should_stop=should_stop,
    )
    grads = loss_grads(bench.work, bench.x, bench.y, list(bench.work.parameters()))  # at θ0, serves every row
    salient_norms: dict[int, float] = {}  # count -> ‖g‖₂ over the "most" set of that count

    def measure(selection: str, count: int, requested: int, slices, target_norm: float | None) -> FinetuneRow:
        norm = restricted_norm(slices, grads)
        factor = step_size * scale(norm, target_norm)
        after = bench.after(slices, lambda edited: apply_step(edited, grads, factor))
        corrected, true_delta, _, evaluated = bench.neighbor_figures(after)
        return FinetuneRow(
            selection=selection,
            count=count,
            requested_count=requested,
            reference_corrected=bench.corrected(after),
            reference_true_confidence_delta=bench.true_delta(after),
            neighbors_corrected_fraction=corrected,
            neighbors_true_confidence_delta=true_delta,
            neighbors_evaluated=evaluated,
            gradient_norm=norm,
            update_norm=norm if target_norm is None or norm == 0 else float(target_norm),
        )

    def row(selection: str, count: int, requested: int, chosen: list[int]) -> FinetuneRow:
        if count not in salient_norms:
            salient = filter_slices(bench.work, layout, select_filters(bench.profile, count, "most"))
            salient_norms[count] = restricted_norm(salient, grads)
        target = None if selection == "most" else salient_norms[count]
        return measure(selection, count, requested, filter_slices(bench.work, layout, chosen), target)

    rows = bench.grid(counts, selections, seed, "fine-tuned", row)
    bench.steps.check()
    rows.append(measure(WHOLE_NETWORK, bench.num_filters, bench.num_filters, all_slices(bench.work), None))
    bench.steps.step("fine-tuned the whole network")
    return FinetuneReport(rows=rows, step_size=step_size, **bench.summary())


def pruning_evaluation(
    model: nn.Module,
    layout: FilterLayout,
    input: torch.Tensor,
    label: int,
    profile,
    *,
    neighbor_inputs: torch.Tensor | None = None,
    neighbor_labels: torch.Tensor | None = None,
    counts: Sequence[int] = DEFAULT_COUNTS,
    selections: Sequence[str] = SELECTIONS,
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> PruningReport:
    """§3.1: per (selection, count), prune the filters chosen from the sample's profile.

    Pruning is :func:`prune_filters` with ``example_input`` = the sample (its BatchNorm
    consumers are traced once). Neighbors, if given, are evaluated with the same pruned
    model (filters chosen from the sample). Counts above F are clipped and noted;
    ``progress`` / ``should_stop`` as in :func:`finetune_evaluation`.
    """
    bench = _Bench(
        model,
        layout,
        input,
        label,
        profile,
        neighbor_inputs,
        neighbor_labels,
        counts,
        selections,
        extra_rows=0,
        progress=progress,
        should_stop=should_stop,
    )
    consumers = batchnorm_consumers(bench.work, layout, example_input=bench.x)
    predicted = bench.reference.predicted

    def row(selection: str, count: int, requested: int, chosen: list[int]) -> PruningRow:
        after = bench.after(prune_slices(bench.work, layout, chosen, consumers), zero)
        corrected, true_delta, incorrect_delta, evaluated = bench.neighbor_figures(after)
        return PruningRow(
            selection=selection,
            count=count,
            requested_count=requested,
            incorrect_confidence_delta=float(after[0, predicted] - bench.before[0, predicted]),
            true_confidence_delta=bench.true_delta(after),
            corrected=bench.corrected(after),
            neighbors_incorrect_confidence_delta=incorrect_delta,
            neighbors_true_confidence_delta=true_delta,
            neighbors_corrected_fraction=corrected,
            neighbors_evaluated=evaluated,
        )

    rows = bench.grid(counts, selections, seed, "pruned", row)
    return PruningReport(rows=rows, **bench.summary())


# --------------------------------------------------------------------------- internals


class _Bench:
    """What both evaluations share: one private eval-mode copy, the sample and its neighbors
    as one batch (row 0 the sample), their probabilities before any edit, and the
    apply-measure-restore step each row runs on the copy."""

    def __init__(
        self,
        model: nn.Module,
        layout: FilterLayout,
        input: torch.Tensor,
        label: int,
        profile,
        neighbor_inputs: torch.Tensor | None,
        neighbor_labels: torch.Tensor | None,
        counts: Sequence[int],
        selections: Sequence[str],
        *,
        extra_rows: int,
        progress: ProgressFn | None,
        should_stop: StopFn | None,
    ):
        _check_choices(counts, selections)
        self.work = eval_copy(model)
        self.profile = _as_profile(profile, layout)  # (F,) float64
        self.num_filters = layout.num_filters
        self.x, self.y = as_batch(self.work, _one(input), [label])  # (1, C, H, W), (1,)
        self.x_nb, self.y_nb = _neighbors(self.work, neighbor_inputs, neighbor_labels, self.x)  # (N, C, H, W), (N,)
        self.batch = torch.cat([self.x, self.x_nb])  # (1 + N, C, H, W): one forward per evaluated model
        self.steps = _Steps(len(counts) * len(selections) + extra_rows, progress, should_stop)

        self.steps.check()
        self.before = _probabilities(self.work, self.batch)  # (1 + N, K)
        self.notes = _clip_notes(counts, self.num_filters)
        self.label = int(self.y[0])
        self.wrong = self.before[1:].argmax(1) != self.y_nb  # (N,) the neighbors evaluated
        self.reference = ReferenceState(
            label=self.label,
            predicted=int(self.before[0].argmax()),
            true_confidence=float(self.before[0, self.label]),
            predicted_confidence=float(self.before[0].max()),
        )

    def grid(
        self,
        counts: Sequence[int],
        selections: Sequence[str],
        seed: int,
        verb: str,
        row: Callable[[str, int, int, list[int]], object],
    ) -> list:
        """``row(selection, count, requested, chosen)`` for every count (clipped to F) and selection, in order."""
        rows = []
        for requested in counts:
            count = min(requested, self.num_filters)
            for selection in selections:
                self.steps.check()
                chosen = select_filters(self.profile, count, selection, generator=_generator(seed))
                rows.append(row(selection, count, requested, chosen))
                self.steps.step(f"{verb} {count} {selection} filter(s)")
        return rows

    def after(self, slices, edit: Callable[[list], None]) -> torch.Tensor:
        """(1 + N, K) probabilities with ``edit(slices)`` applied in place; the slices restored bit for bit."""
        with restored(slices):
            with torch.no_grad():
                edit(slices)
            return _probabilities(self.work, self.batch)

    def corrected(self, after: torch.Tensor) -> bool:
        return bool(after[0].argmax() == self.label)

    def true_delta(self, after: torch.Tensor) -> float:
        return float(after[0, self.label] - self.before[0, self.label])

    def neighbor_figures(self, after: torch.Tensor) -> tuple[float, float, float, int]:
        return _neighbor_figures(self.before[1:], after[1:], self.y_nb, self.wrong)

    def summary(self) -> dict:
        """The report fields both evaluations share."""
        return dict(
            reference=self.reference,
            neighbors_total=len(self.y_nb),
            neighbors_misclassified=int(self.wrong.sum()),
            num_filters=self.num_filters,
            notes=self.notes,
        )


class _Steps:
    """Counts finished rows for ``progress`` and polls ``should_stop``."""

    def __init__(self, total: int, progress: ProgressFn | None, should_stop: StopFn | None):
        self.total, self.done = total, 0
        self.progress, self.should_stop = progress, should_stop

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"evaluation cancelled after {self.done} of {self.total} steps")

    def step(self, message: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done / self.total, message)


def _probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, K) float64 softmax of the model's logits."""
    with torch.no_grad():
        return F.softmax(model(x).double(), dim=1)


def _neighbor_figures(
    before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor, wrong: torch.Tensor
) -> tuple[float, float, float, int]:
    """(corrected fraction, mean true-class Δ, mean originally-predicted-class Δ, count), over ``wrong``."""
    evaluated = int(wrong.sum())
    if evaluated == 0:
        nan = float("nan")
        return nan, nan, nan, 0
    b, a, y = before[wrong], after[wrong], labels[wrong]
    rows = torch.arange(evaluated, device=b.device)
    predicted = b.argmax(1)
    corrected = float((a.argmax(1) == y).double().mean())
    true_delta = float((a[rows, y] - b[rows, y]).mean())
    incorrect_delta = float((a[rows, predicted] - b[rows, predicted]).mean())
    return corrected, true_delta, incorrect_delta, evaluated


def _neighbors(model: nn.Module, inputs: torch.Tensor | None, labels, like: torch.Tensor):
    if inputs is None or len(inputs) == 0:
        return like[:0], torch.zeros(0, dtype=torch.long, device=like.device)
    if labels is None:
        raise ValueError("neighbor_inputs given without neighbor_labels")
    x, y = as_batch(model, inputs, labels)
    if x.shape[1:] != like.shape[1:]:
        raise ValueError(f"neighbor inputs {tuple(x.shape[1:])} differ from the reference's {tuple(like.shape[1:])}")
    return x, y


def _one(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 4 and image.shape[0] == 1:
        return image
    if image.dim() != 3:
        raise ValueError(f"expected one image (C, H, W), got shape {tuple(image.shape)}")
    return image[None]


def _as_profile(profile, layout: FilterLayout | None = None) -> torch.Tensor:
    z = profile.detach().cpu() if isinstance(profile, torch.Tensor) else torch.from_numpy(np.asarray(profile))
    z = z.to(torch.float64).reshape(-1)
    if layout is not None and len(z) != layout.num_filters:
        raise ValueError(f"profile has {len(z)} entries, the layout {layout.num_filters} filters")
    return z


def _check_choices(counts: Sequence[int], selections: Sequence[str]) -> None:
    for count in counts:
        if operator.index(count) < 1:
            raise ValueError(f"counts must be >= 1, got {count}")
    unknown = [s for s in selections if s not in SELECTIONS]
    if unknown:
        raise ValueError(f"unknown selection(s) {unknown}; choose from {SELECTIONS}")


def _clip_notes(counts: Sequence[int], num_filters: int) -> list[str]:
    notes = [
        f"count {c} exceeds the model's {num_filters} filters: clipped to {num_filters}"
        for c in dict.fromkeys(counts)
        if c > num_filters
    ]
    for note in notes:
        log.info(note)
    return notes


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))
