"""What both evaluations share: one private eval-mode copy of the model, the reference, its
neighbours and the collateral samples, their probabilities before any edit, and the
apply-measure-restore step every row (and every random draw) runs on the copy.

Two batches: the main one (row 0 the reference, then N neighbours) and the collateral
samples (C). Each goes through the model in chunks of ``max_batch`` images (memory), the
same chunks before and after every edit, so a draw measured without the collateral
batch gives exactly the figures it would with it. Collateral is measured once per row
(its first draw): it costs C images per row, the rest 1 + N per draw.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._edits import restored
from ._eval_types import NAN, Collateral, DrawSpread, ReferenceState
from ._state import as_batch, eval_copy
from .layout import FilterLayout

log = logging.getLogger("parasal.core.evaluation")

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]

#: Images per forward pass when measuring (reference + neighbours + collateral are chunked):
#: as fast per image as 256 for the demo model on CPU, with a quarter of the activation
#: memory (a long-running server keeps its allocator's high-water mark).
FORWARD_BATCH = 64


class Cancelled(Exception):
    """An evaluation stopped because its ``should_stop()`` returned True."""


@dataclass(frozen=True)
class Measured:
    """One edited model measured on the batch (one draw of one row)."""

    corrected: bool
    true_delta: float  # reference, true class
    incorrect_delta: float  # reference, the class predicted before the edit
    nb_corrected: float
    nb_true_delta: float
    nb_incorrect_delta: float
    nb_evaluated: int
    collateral: Collateral | None


class Bench:
    def __init__(
        self,
        model: nn.Module,
        layout: FilterLayout,
        input: torch.Tensor,
        label: int,
        profile,
        neighbor_inputs: torch.Tensor | None,
        neighbor_labels,
        collateral_inputs: torch.Tensor | None,
        collateral_labels,
        *,
        total_steps: int,
        progress: ProgressFn | None,
        should_stop: StopFn | None,
        max_batch: int = FORWARD_BATCH,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.work = eval_copy(model)
        self.profile = as_profile(profile, layout)  # (F,) float64
        self.num_filters = layout.num_filters
        self.max_batch = max_batch
        self.x, self.y = as_batch(self.work, one(input), [label])  # (1, C, H, W), (1,)
        self.x_nb, self.y_nb = _extra(self.work, neighbor_inputs, neighbor_labels, self.x, "neighbor")  # (N, ...)
        self.x_col, self.y_col = _extra(self.work, collateral_inputs, collateral_labels, self.x, "collateral")  # (C,)
        self.has_collateral = collateral_inputs is not None
        self.batch = torch.cat([self.x, self.x_nb])  # (1 + N, C, H, W)
        self.steps = Steps(total_steps, progress, should_stop)

        self.steps.check()
        self.before = self.probabilities(self.batch)  # (1 + N, K)
        self.before_col = self.probabilities(self.x_col)  # (C, K)
        self.nb = slice(1, None)
        self.label = int(self.y[0])
        self.wrong = self.before[self.nb].argmax(1) != self.y_nb  # (N,) the neighbours evaluated
        # (C,) the collateral samples evaluated: those correct before the edit
        self.right = self.before_col.argmax(1) == self.y_col if len(self.y_col) else self.y_col.bool()
        predicted = int(self.before[0].argmax())
        self.predicted = predicted
        self.reference = ReferenceState(
            label=self.label,
            predicted=predicted,
            true_confidence=float(self.before[0, self.label]),
            predicted_confidence=float(self.before[0, predicted]),
        )

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) float64 softmax of the working copy's logits, ``max_batch`` images at a time."""
        if len(x) == 0:
            return x.new_zeros((0, 0), dtype=torch.float64)
        with torch.no_grad():
            return torch.cat([F.softmax(self.work(chunk).double(), dim=1) for chunk in x.split(self.max_batch)])

    def measure(self, slices, edit: Callable[[list], None], *, collateral: bool = True) -> Measured:
        """``edit(slices)`` applied in place, the main batch (and with ``collateral`` the
        collateral samples) measured, the slices restored bit for bit."""
        with_collateral = collateral and self.has_collateral
        with restored(slices):
            with torch.no_grad():
                edit(slices)
            after = self.probabilities(self.batch)
            after_col = self.probabilities(self.x_col) if with_collateral else None
        nb = neighbor_figures(self.before[self.nb], after[self.nb], self.y_nb, self.wrong)
        figures = None
        if with_collateral:
            figures = collateral_figures(self.before_col, after_col, self.y_col, self.right)
        return Measured(
            corrected=bool(after[0].argmax() == self.label),
            true_delta=float(after[0, self.label] - self.before[0, self.label]),
            incorrect_delta=float(after[0, self.predicted] - self.before[0, self.predicted]),
            nb_corrected=nb[0],
            nb_true_delta=nb[1],
            nb_incorrect_delta=nb[2],
            nb_evaluated=nb[3],
            collateral=figures,
        )

    def summary(self) -> dict:
        """The report fields both evaluations share."""
        return dict(
            reference=self.reference,
            neighbors_total=len(self.y_nb),
            neighbors_misclassified=int(self.wrong.sum()),
            num_filters=self.num_filters,
            collateral_total=len(self.y_col),
        )


class Steps:
    """Counts finished steps (rows, random draws) for ``progress`` and polls ``should_stop``."""

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


# --------------------------------------------------------------------------- figures


def neighbor_figures(
    before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor, wrong: torch.Tensor
) -> tuple[float, float, float, int]:
    """(corrected fraction, mean true-class Δ, mean originally-predicted-class Δ, count), over ``wrong``."""
    evaluated = int(wrong.sum())
    if evaluated == 0:
        return NAN, NAN, NAN, 0
    b, a, y = before[wrong], after[wrong], labels[wrong]
    rows = torch.arange(evaluated, device=b.device)
    predicted = b.argmax(1)
    corrected = float((a.argmax(1) == y).double().mean())
    true_delta = float((a[rows, y] - b[rows, y]).mean())
    incorrect_delta = float((a[rows, predicted] - b[rows, predicted]).mean())
    return corrected, true_delta, incorrect_delta, evaluated


def collateral_figures(before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor, right: torch.Tensor):
    """Collateral over the samples correct before the edit (``right``), all at once (B, K)."""
    evaluated = int(right.sum())
    if evaluated == 0:
        return Collateral(0, NAN, 0, NAN)
    b, a, y = before[right], after[right], labels[right]
    rows = torch.arange(evaluated, device=b.device)
    flips = int((a.argmax(1) != y).sum())
    return Collateral(
        evaluated=evaluated,
        accuracy_delta=-flips / evaluated,
        flips=flips,
        true_confidence_delta=float((a[rows, y] - b[rows, y]).mean()),
    )


def combine(draws: Sequence[Measured]) -> dict:
    """A row's figures from its draws: means (one draw: that draw), the majority for
    ``corrected``; collateral is the first draw's (the only one measured on it)."""

    def mean(name: str) -> float:
        return _mean([getattr(d, name) for d in draws])

    corrected_share = sum(d.corrected for d in draws) / len(draws)
    figures = dict(
        corrected=corrected_share > 0.5,
        corrected_fraction=corrected_share,
        true_delta=mean("true_delta"),
        incorrect_delta=mean("incorrect_delta"),
        nb_corrected=mean("nb_corrected"),
        nb_true_delta=mean("nb_true_delta"),
        nb_incorrect_delta=mean("nb_incorrect_delta"),
        nb_evaluated=draws[0].nb_evaluated,  # the same neighbours for every draw
        collateral=draws[0].collateral,
    )
    return figures


def spread(draws: Sequence[Measured], *, pruning: bool) -> DrawSpread:
    def std(name: str) -> float:
        return _std([getattr(d, name) for d in draws])

    return DrawSpread(
        draws=len(draws),
        reference_true_confidence_delta_std=std("true_delta"),
        neighbors_true_confidence_delta_std=std("nb_true_delta"),
        neighbors_corrected_fraction_std=std("nb_corrected"),
        incorrect_confidence_delta_std=std("incorrect_delta") if pruning else NAN,
    )


def _mean(values: Sequence[float]) -> float:
    return NAN if any(math.isnan(v) for v in values) else float(np.mean(values))


def _std(values: Sequence[float]) -> float:
    if any(math.isnan(v) for v in values):
        return NAN
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


# --------------------------------------------------------------------------- inputs


def slice_size(slices) -> int:
    """Scalars covered by the slices (the ``parameters`` a row changed)."""
    total = 0
    for tensor, rows in slices:
        total += tensor.numel() if rows is None else len(rows) * (tensor[0].numel() if tensor.dim() else 1)
    return total


def _extra(model: nn.Module, inputs: torch.Tensor | None, labels, like: torch.Tensor, what: str):
    """Neighbour or collateral inputs as a batch like the reference's ((0, C, H, W) when none)."""
    if inputs is None or len(inputs) == 0:
        return like[:0], torch.zeros(0, dtype=torch.long, device=like.device)
    if labels is None:
        raise ValueError(f"{what}_inputs given without {what}_labels")
    x, y = as_batch(model, inputs, labels)
    if x.shape[1:] != like.shape[1:]:
        raise ValueError(f"{what} inputs {tuple(x.shape[1:])} differ from the reference's {tuple(like.shape[1:])}")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} {what} inputs but {len(y)} labels")
    return x, y


def one(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 4 and image.shape[0] == 1:
        return image
    if image.dim() != 3:
        raise ValueError(f"expected one image (C, H, W), got shape {tuple(image.shape)}")
    return image[None]


def as_profile(profile, layout: FilterLayout | None = None) -> torch.Tensor:
    z = profile.detach().cpu() if isinstance(profile, torch.Tensor) else torch.from_numpy(np.asarray(profile))
    z = z.to(torch.float64).reshape(-1)
    if layout is not None and len(z) != layout.num_filters:
        raise ValueError(f"profile has {len(z)} entries, the layout {layout.num_filters} filters")
    return z


def check_counts(counts: Sequence[int]) -> None:
    for count in counts:
        if operator.index(count) < 1:
            raise ValueError(f"counts must be >= 1, got {count}")


def clip_notes(counts: Sequence[int], num_filters: int) -> list[str]:
    notes = [
        f"count {c} exceeds the model's {num_filters} filters: clipped to {num_filters}"
        for c in dict.fromkeys(counts)
        if c > num_filters
    ]
    for note in notes:
        log.info(note)
    return notes
