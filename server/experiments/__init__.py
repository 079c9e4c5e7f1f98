"""Dataset-level experiments: both papers' evidence, measured on any bundle (issue #15).

    from parasal.server.experiments import run_experiment
    result = run_experiment("pruning", bundle, model, references=0, seed=0)
    print(result.seconds, result.points[0])

One module per experiment (``NAMES``, in the order ``parasal experiment all`` runs them):

==============  ===========================================================================
``pruning``     Levin et al. Fig. 3: Δ incorrect / true confidence, % corrected vs k pruned
``finetune``    Levin et al. Fig. 6 + controls (confusion pair, features, label-aware) + collateral
``neighbors``   Levin et al. A.2: neighbour statistics, with the same baselines
``masking``     Levin et al. §3.4 / A.9: masking the top 5 % input-saliency pixels vs random
``sanity``      Levin et al. A.11: cascading model randomization vs input saliency
``ranking``     Hartley et al. Table 1: normalised accuracy vs channels zeroed, AUC per method
``beta``        Hartley et al. §4.2: β < 0 shares, per-class Spearman of β vs scores
``suppression`` Hartley et al. §4.5: misclassified samples fixed via the surprising filter vs vanilla
==============  ===========================================================================

Each samples its references with the seed (default: all misclassified samples up to its
``DEFAULT_CAP``), reports tidy points with 95 % bootstrap CIs (``_common.py``), and a plot.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field

from ._common import Context, Outcome, Point, dumps, parse_options

__all__ = ["NAMES", "ExperimentOutput", "run_experiment", "check_request", "experiment_module", "Context", "Point"]

NAMES = ("pruning", "finetune", "neighbors", "masking", "sanity", "ranking", "beta", "suppression")


def experiment_module(name: str):
    """The module of experiment ``name``; InvalidArgument for an unknown one."""
    from ..errors import InvalidArgument

    if name not in NAMES:
        raise InvalidArgument(f"unknown experiment {str(name)[:80]!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def check_request(name: str, bundle, options: dict[str, str] | None) -> dict:
    """The experiment's parsed options after the checks that need no work (name, options,
    what the bundle must have); raises InvalidArgument / FailedPrecondition."""
    module = experiment_module(name)
    parsed = parse_options(name, module.OPTIONS, options)
    precondition = getattr(module, "check_bundle", None)
    if precondition is not None:
        precondition(bundle)
    return parsed


@dataclass(frozen=True)
class ExperimentOutput:
    """An experiment's result (the proto's ExperimentResult)."""

    name: str
    references: int
    seed: int
    points: list[Point]
    extra: dict = field(default_factory=dict)
    plot_png: bytes = b""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """The documented OUT/NAME.json: experiment, references, seed, points (+ the experiment's fields)."""
        document = {
            "experiment": self.name,
            "references": self.references,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "points": [p.to_dict() for p in self.points],
        }
        for key, value in self.extra.items():
            document.setdefault(key, value)
        return document

    @property
    def json(self) -> str:
        return dumps(self.to_dict())


def run_experiment(
    name: str,
    bundle,
    model,
    *,
    references: int = 0,
    seed: int = 0,
    options: dict[str, str] | None = None,
    progress=None,
    should_stop=None,
    context: Context | None = None,
) -> ExperimentOutput:
    """Run experiment ``name`` on an opened bundle and its model (never modified: the
    experiment works on its own copy). ``options`` are strings as on the wire; ``context``
    shares the per-sample forward pass between experiments run one after another."""
    parsed = check_request(name, bundle, options)
    module = experiment_module(name)
    ctx = context if context is not None else Context(bundle, model, should_stop=should_stop)
    if context is not None:
        ctx.should_stop = should_stop
    start = time.perf_counter()
    outcome: Outcome = module.run(ctx, references=int(references), seed=int(seed), options=parsed, progress=progress)
    seconds = time.perf_counter() - start
    extra = {"options": {k: list(v) if isinstance(v, tuple) else v for k, v in parsed.items()}, **outcome.extra}
    return ExperimentOutput(name, outcome.references, int(seed), outcome.points, extra, outcome.plot_png, seconds)
