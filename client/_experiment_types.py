"""The SDK's values for dataset-level experiments (re-exported by types.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = ["ExperimentPoint", "ExperimentResult", "EXPERIMENT_NAMES"]

#: What `Client.start_experiment` accepts (the proto's experiment names), in run order.
EXPERIMENT_NAMES = ("pruning", "finetune", "neighbors", "masking", "sanity", "ranking", "beta", "suppression")


@dataclass(frozen=True)
class ExperimentPoint:
    """One row of an experiment's tidy table: the mean of ``metric`` over ``n`` references
    for one ``selection`` and ``count``, with its 95 % bootstrap CI (None: not measured)."""

    selection: str
    count: int
    metric: str
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class ExperimentResult:
    """A finished experiment: its points, the whole result as JSON (the CLI's OUT/NAME.json;
    it also carries the experiment's own fields) and the plot (PNG bytes)."""

    name: str
    references: int
    seed: int
    points: list[ExperimentPoint]
    json: str = ""
    plot_png: bytes = field(default=b"", repr=False)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """The JSON document (experiment, references, seed, points, ...) as a dict."""
        if self.json:
            return json.loads(self.json)
        return {
            "experiment": self.name,
            "references": self.references,
            "seed": self.seed,
            "points": [vars(p).copy() for p in self.points],
        }
