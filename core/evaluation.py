"""Do the salient filters cause the mistake? The paper's two checks, for one sample.

* :func:`pruning_evaluation` (§3.1, Fig. 3): turn off the ``count`` most salient filters
  (or as many random / least salient ones) and watch the originally predicted ("incorrect")
  class confidence, the true-class confidence and whether the sample flips to its label.
* :func:`finetune_evaluation` (§3.3, Fig. 6, B.1): one gradient step on the reference
  sample alone, updating only the chosen filters (random/least renormalised to the
  salient set's gradient norm), and watch the reference and its neighbours (images with
  similar profiles, which were not used for the step).

Both work on one private copy of the model in eval mode and apply each row's edit in
place, measure, and restore the touched entries bit for bit, so a row costs one forward
of the reference and all neighbours together (one batch) and no model copy. For
fine-tuning, the reference's gradient is taken once at the original weights: every row's
step is that gradient restricted to its filters, exactly what :func:`finetune_step`
computes on a fresh copy. The model passed in is never modified.

Confidences are softmax probabilities in [0, 1]; deltas are after − before (not percent).
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .interventions import (_all_slices, _apply_step, _as_batch, _eval_copy, _filter_slices, _loss_grads,
                            _prune_slices, _restored, _restricted_norm, _scale, batchnorm_consumers)
from .layout import FilterLayout

__all__ = [
    "SELECTIONS", "WHOLE_NETWORK", "Cancelled", "select_filters",
    "EvaluationRow", "FinetuneReport", "finetune_evaluation",
    "PruningRow", "PruningReport", "pruning_evaluation",
]

log = logging.getLogger(__name__)

#: Filter choices compared in every evaluation, in the paper's order.
SELECTIONS = ("most", "random", "least")
#: ``EvaluationRow.selection`` of the fine-tuning row that updates every parameter.
WHOLE_NETWORK = "all"

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
    return torch.argsort(z, descending=selection == "most", stable=True)[:count].tolist()


@dataclass(frozen=True)
class EvaluationRow:
    """One (selection, count) of :func:`finetune_evaluation`.

    ``reference_corrected``: the reference's prediction equals its label after the step.
    Neighbour figures are over the neighbours the model got wrong *before* the step
    (``neighbours_evaluated`` of them; NaN when there are none): the fraction now predicted
    as their label, and the mean change of their true-class confidence.
    """

    selection: str  # "most" | "random" | "least" | "all" (whole network)
    count: int  # filters updated (after clipping to F; F for "all")
    reference_corrected: bool
    reference_true_conf_delta: float
    neighbours_corrected_fraction: float
    neighbours_true_conf_delta: float
    neighbours_evaluated: int
    requested_count: int = 0  # the count asked for, before clipping
    gradient_norm: float = 0.0  # ‖g‖₂ restricted to the updated entries, before renormalisation
    update_norm: float = 0.0  # ‖g‖₂ actually applied (= the "most" row's gradient_norm for random/least)


@dataclass(frozen=True)
class FinetuneReport:
    rows: list[EvaluationRow]
    reference_label: int
    reference_predicted: int  # before the step
    reference_true_confidence: float  # before
    reference_predicted_confidence: float  # before
    neighbours_total: int
    neighbours_misclassified: int  # before; these are the ones evaluated
    num_filters: int
    step_size: float
    notes: list[str] = field(default_factory=list)  # e.g. counts clipped to F


@dataclass(frozen=True)
class PruningRow:
    """One (selection, count) of :func:`pruning_evaluation`.

    "Incorrect class" is the class predicted before pruning (for a correctly classified
    sample that is the true class). Neighbour figures are averaged over the neighbours the
    model got wrong before pruning, each with its own predicted class (NaN when none).
    """

    selection: str
    count: int
    requested_count: int
    incorrect_conf_delta: float
    true_conf_delta: float
    corrected: bool
    neighbours_incorrect_conf_delta: float = float("nan")
    neighbours_true_conf_delta: float = float("nan")
    neighbours_corrected_fraction: float = float("nan")
    neighbours_evaluated: int = 0


@dataclass(frozen=True)
class PruningReport:
    rows: list[PruningRow]
    label: int
    predicted: int  # before pruning
    true_confidence: float
    predicted_confidence: float
    neighbours_total: int
    neighbours_misclassified: int
    num_filters: int
    notes: list[str] = field(default_factory=list)


def finetune_evaluation(model: nn.Module, layout: FilterLayout, reference_input: torch.Tensor,
                        reference_label: int, reference_profile, neighbour_inputs: torch.Tensor | None,
                        neighbour_labels: torch.Tensor | None, *, counts: Sequence[int] = (1, 5, 25, 75),
                        selections: Sequence[str] = SELECTIONS, step_size: float = 1e-3, seed: int = 0,
                        progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> FinetuneReport:
    """§3.3: one step on the reference alone per (selection, count), plus the whole network.

    ``reference_profile`` is the reference's standardized profile (F,). For each count,
    "most" takes the salient filters' gradient as is; "random" (``seed``, nested over
    counts) and "least" are rescaled to the norm of the "most" set of that count (B.1).
    The last row (selection ``"all"``) is a plain step on every parameter. Counts above F
    are clipped and noted. ``progress(fraction, message)`` is called after every row;
    ``should_stop()`` is polled before every row and raises :class:`Cancelled`.
    """
    _check_choices(counts, selections)
    work = _eval_copy(model)
    profile = _as_profile(reference_profile, layout)
    num_filters = layout.num_filters
    x_ref, y_ref = _as_batch(work, _one(reference_input), [reference_label])
    x_nb, y_nb = _neighbours(work, neighbour_inputs, neighbour_labels, x_ref)
    batch = torch.cat([x_ref, x_nb])  # (1 + N, C, H, W): one forward per evaluated model
    steps = _Steps(len(counts) * len(selections) + 1, progress, should_stop)

    steps.check()
    before = _probabilities(work, batch)
    label = int(y_ref[0])
    wrong = before[1:].argmax(1) != y_nb  # (N,) neighbours evaluated
    grads = _loss_grads(work, x_ref, y_ref, list(work.parameters()))  # at θ0, serves every row

    def measure(selection, count, requested, slices, target_norm):
        norm = _restricted_norm(slices, grads)
        factor = step_size * _scale(norm, target_norm)
        with _restored(slices):
            with torch.no_grad():
                _apply_step(slices, grads, factor)
            after = _probabilities(work, batch)
        corrected, true_delta, _, evaluated = _neighbour_figures(before[1:], after[1:], y_nb, wrong)
        return EvaluationRow(
            selection=selection, count=count, requested_count=requested,
            reference_corrected=bool(after[0].argmax() == label),
            reference_true_conf_delta=float(after[0, label] - before[0, label]),
            neighbours_corrected_fraction=corrected, neighbours_true_conf_delta=true_delta,
            neighbours_evaluated=evaluated, gradient_norm=norm,
            update_norm=norm if target_norm is None or norm == 0 else float(target_norm))

    rows: list[EvaluationRow] = []
    notes = _clip_notes(counts, num_filters)
    for requested in counts:
        count = min(requested, num_filters)
        salient = _filter_slices(work, layout, select_filters(profile, count, "most"))
        salient_norm = _restricted_norm(salient, grads)
        for selection in selections:
            steps.check()
            chosen = select_filters(profile, count, selection, generator=_generator(seed))
            target = None if selection == "most" else salient_norm
            rows.append(measure(selection, count, requested, _filter_slices(work, layout, chosen), target))
            steps.step(f"fine-tuned {count} {selection} filter(s)")
    steps.check()
    rows.append(measure(WHOLE_NETWORK, num_filters, num_filters, _all_slices(work), None))
    steps.step("fine-tuned the whole network")

    return FinetuneReport(
        rows=rows, reference_label=label, reference_predicted=int(before[0].argmax()),
        reference_true_confidence=float(before[0, label]),
        reference_predicted_confidence=float(before[0].max()),
        neighbours_total=len(y_nb), neighbours_misclassified=int(wrong.sum()),
        num_filters=num_filters, step_size=step_size, notes=notes)


def pruning_evaluation(model: nn.Module, layout: FilterLayout, input: torch.Tensor, label: int, profile, *,
                       neighbour_inputs: torch.Tensor | None = None, neighbour_labels: torch.Tensor | None = None,
                       counts: Sequence[int] = (1, 5, 25, 75), selections: Sequence[str] = SELECTIONS,
                       seed: int = 0, progress: ProgressFn | None = None,
                       should_stop: StopFn | None = None) -> PruningReport:
    """§3.1: per (selection, count), prune the filters chosen from the sample's profile.

    Pruning is :func:`prune_filters` with ``example_input`` = the sample (its BatchNorm
    consumers are traced once). Neighbours, if given, are evaluated with the same pruned
    model (filters chosen from the sample). Counts above F are clipped and noted;
    ``progress`` / ``should_stop`` as in :func:`finetune_evaluation`.
    """
    _check_choices(counts, selections)
    work = _eval_copy(model)
    z = _as_profile(profile, layout)
    num_filters = layout.num_filters
    x, y = _as_batch(work, _one(input), [label])
    x_nb, y_nb = _neighbours(work, neighbour_inputs, neighbour_labels, x)
    batch = torch.cat([x, x_nb])
    steps = _Steps(len(counts) * len(selections), progress, should_stop)

    steps.check()
    consumers = batchnorm_consumers(work, layout, example_input=x)
    before = _probabilities(work, batch)
    true, predicted = int(y[0]), int(before[0].argmax())
    wrong = before[1:].argmax(1) != y_nb

    rows: list[PruningRow] = []
    notes = _clip_notes(counts, num_filters)
    for requested in counts:
        count = min(requested, num_filters)
        for selection in selections:
            steps.check()
            chosen = select_filters(z, count, selection, generator=_generator(seed))
            slices = _prune_slices(work, layout, chosen, consumers)
            with _restored(slices):
                with torch.no_grad():
                    for tensor, rows_ in slices:
                        tensor[rows_] = 0
                after = _probabilities(work, batch)
            corrected, true_delta, incorrect_delta, evaluated = _neighbour_figures(before[1:], after[1:], y_nb, wrong)
            rows.append(PruningRow(
                selection=selection, count=count, requested_count=requested,
                incorrect_conf_delta=float(after[0, predicted] - before[0, predicted]),
                true_conf_delta=float(after[0, true] - before[0, true]),
                corrected=bool(after[0].argmax() == true),
                neighbours_incorrect_conf_delta=incorrect_delta, neighbours_true_conf_delta=true_delta,
                neighbours_corrected_fraction=corrected, neighbours_evaluated=evaluated))
            steps.step(f"pruned {count} {selection} filter(s)")

    return PruningReport(
        rows=rows, label=true, predicted=predicted, true_confidence=float(before[0, true]),
        predicted_confidence=float(before[0, predicted]), neighbours_total=len(y_nb),
        neighbours_misclassified=int(wrong.sum()), num_filters=num_filters, notes=notes)


# --------------------------------------------------------------------------- internals


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


def _neighbour_figures(before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor,
                       wrong: torch.Tensor) -> tuple[float, float, float, int]:
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


def _neighbours(model: nn.Module, inputs: torch.Tensor | None, labels, like: torch.Tensor):
    if inputs is None or len(inputs) == 0:
        return like[:0], torch.zeros(0, dtype=torch.long, device=like.device)
    if labels is None:
        raise ValueError("neighbour_inputs given without neighbour_labels")
    x, y = _as_batch(model, inputs, labels)
    if x.shape[1:] != like.shape[1:]:
        raise ValueError(f"neighbour inputs {tuple(x.shape[1:])} differ from the reference's {tuple(like.shape[1:])}")
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
    notes = [f"count {c} exceeds the model's {num_filters} filters: clipped to {num_filters}"
             for c in dict.fromkeys(counts) if c > num_filters]
    for note in notes:
        log.info(note)
    return notes


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))
