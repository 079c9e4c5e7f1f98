"""The evaluations' result types, in the proto's vocabulary (re-exported by evaluation.py).

Confidences are softmax probabilities in [0, 1]; deltas are after − before (not percent).
NaN means "not measured" (no neighbours evaluated, no collateral samples).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ReferenceState",
    "Collateral",
    "DrawSpread",
    "FinetuneRow",
    "FinetuneReport",
    "PruningRow",
    "PruningReport",
]

NAN = float("nan")


@dataclass(frozen=True)
class ReferenceState:
    """The evaluated sample before any change (the proto's ``ReferenceState``)."""

    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float


@dataclass(frozen=True)
class Collateral:
    """The edited model on samples it classified correctly before the edit: is the fix safe?

    ``evaluated``: collateral samples correct before the edit (those given but already
    wrong are not counted). ``flips``: correct -> incorrect; ``accuracy_delta`` = −flips /
    evaluated (accuracy before is 1 by construction); ``true_confidence_delta``: mean change
    of their true-class confidence. A random row's collateral is its first draw's (the
    row's ``filters``): one collateral forward per row. ``evaluated`` 0: NaN figures.
    """

    evaluated: int
    accuracy_delta: float
    flips: int
    true_confidence_delta: float


@dataclass(frozen=True)
class DrawSpread:
    """Sample standard deviation (ddof 1; 0 for one draw) over a random row's draws.

    Neighbour figures are NaN when no neighbour was evaluated; ``incorrect_confidence_delta_std``
    is pruning's only (NaN for fine-tuning)."""

    draws: int
    reference_true_confidence_delta_std: float
    neighbors_true_confidence_delta_std: float
    neighbors_corrected_fraction_std: float
    incorrect_confidence_delta_std: float = NAN


@dataclass(frozen=True)
class FinetuneRow:
    """One (selection, count) of :func:`finetune_evaluation`.

    ``reference_corrected``: the reference's prediction equals its label after the step
    (random rows: in the majority of draws; ``reference_corrected_fraction`` is the share).
    Neighbor figures are over the neighbors the model got wrong *before* the step
    (``neighbors_evaluated`` of them; NaN when there are none): the fraction now predicted
    as their label, and the mean change of their true-class confidence. A random row's
    figures are means over its ``spread.draws`` draws (its collateral: the first draw's).

    ``count`` is the number of filters updated (0 for the whole-network row);
    ``parameters`` the scalars the step changed; ``filters`` the exact profile indices
    (ascending; a random row's first draw; empty for the whole network).
    """

    selection: str  # "most" | "random" | "least" | "whole_network"
    count: int  # filters updated (after clipping to F); 0 for the whole network
    reference_corrected: bool
    reference_true_confidence_delta: float
    neighbors_corrected_fraction: float
    neighbors_true_confidence_delta: float
    neighbors_evaluated: int
    requested_count: int = 0  # the count asked for, before clipping (0 for the whole network)
    gradient_norm: float = 0.0  # ‖g‖₂ restricted to the updated entries, before renormalisation (draws: mean)
    update_norm: float = 0.0  # ‖g‖₂ actually applied (= the "most" row's gradient_norm for random/least)
    parameters: int = 0
    filters: tuple[int, ...] = ()
    collateral: Collateral | None = None  # None: no collateral samples were given
    spread: DrawSpread | None = None  # random rows only
    reference_corrected_fraction: float | None = None  # share of draws; None: 1.0 / 0.0 from reference_corrected

    def __post_init__(self):
        if self.reference_corrected_fraction is None:
            object.__setattr__(self, "reference_corrected_fraction", float(self.reference_corrected))


@dataclass(frozen=True)
class FinetuneReport:
    rows: list[FinetuneRow]
    reference: ReferenceState  # before the step
    neighbors_total: int
    neighbors_misclassified: int  # before; these are the ones evaluated
    num_filters: int
    step_size: float
    notes: list[str] = field(default_factory=list)  # e.g. counts clipped to F
    seed: int = 0
    random_draws: int = 1
    reference_key: str = ""  # what the random draws were seeded with (see draw_seed)
    collateral_total: int = 0  # collateral samples given (correct or not)


@dataclass(frozen=True)
class PruningRow:
    """One (selection, count) of :func:`pruning_evaluation`.

    "Incorrect class" is the class predicted before pruning (for a correctly classified
    sample that is the true class). Neighbor figures are averaged over the neighbors the
    model got wrong before pruning, each with its own predicted class (NaN when none).
    Random rows, ``filters``, ``collateral``, ``spread`` as in :class:`FinetuneRow`;
    ``parameters`` counts the scalars zeroed (filters and their BatchNorm channels).
    """

    selection: str
    count: int
    requested_count: int
    incorrect_confidence_delta: float
    true_confidence_delta: float
    corrected: bool
    neighbors_incorrect_confidence_delta: float = NAN
    neighbors_true_confidence_delta: float = NAN
    neighbors_corrected_fraction: float = NAN
    neighbors_evaluated: int = 0
    parameters: int = 0
    filters: tuple[int, ...] = ()
    collateral: Collateral | None = None
    spread: DrawSpread | None = None
    reference_corrected_fraction: float | None = None  # share of draws; None: 1.0 / 0.0 from corrected

    def __post_init__(self):
        if self.reference_corrected_fraction is None:
            object.__setattr__(self, "reference_corrected_fraction", float(self.corrected))


@dataclass(frozen=True)
class PruningReport:
    rows: list[PruningRow]
    reference: ReferenceState  # before pruning
    neighbors_total: int
    neighbors_misclassified: int
    num_filters: int
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    random_draws: int = 1
    reference_key: str = ""
    collateral_total: int = 0
