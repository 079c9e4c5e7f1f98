"""StartExperiment: an experiment as a long-running operation of the server.

Starting checks what needs no work (bundle, name, options, references, the reference data
or misclassified samples the experiment needs) so those errors come back as the rpc's
status; the experiment then runs in the operation pool with progress and cancel, on its
own deep copy of the bundle's pristine master model (experiments hook the model and flip
its flags for minutes: borrowing a query replica that long would starve the queries).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parasal.v1 import saliency_pb2 as pb

from ..errors import InvalidArgument
from ..operations import Operations, Progress, StopFlag
from ..registry import Registry
from . import check_request, experiment_module, run_experiment

__all__ = ["ExperimentParams", "Experiments", "MAX_OPTIONS", "MAX_OPTION_CHARS"]

#: Options one request may carry, and the longest key or value.
MAX_OPTIONS = 32
MAX_OPTION_CHARS = 256


@dataclass(frozen=True)
class ExperimentParams:
    bundle: str
    name: str
    references: int = 0  # 0: the experiment's default
    seed: int = 0
    options: dict[str, str] = field(default_factory=dict)


class Experiments:
    def __init__(self, registry: Registry, operations: Operations):
        self.registry, self.operations = registry, operations

    def start(self, params: ExperimentParams) -> pb.Operation:
        served = self.registry.get(params.bundle)
        options = _checked_options(params.options)
        check_request(params.name, served.bundle, options)
        check_references(params.name, served.bundle, params.references)

        def job(progress: Progress, should_stop: StopFlag) -> pb.ExperimentResult:
            from ..conversions import experiment_result_to_proto

            output = run_experiment(
                params.name,
                served.bundle,
                served.master,  # copied by the experiment's Context, never modified
                references=params.references,
                seed=params.seed,
                options=options,
                progress=progress,
                should_stop=should_stop,
            )
            return experiment_result_to_proto(output)

        return self.operations.start(pb.OPERATION_KIND_EXPERIMENT, served.name, job)


def check_references(name: str, bundle, references: int) -> None:
    """InvalidArgument for a negative count or more references than the experiment's pool;
    FailedPrecondition (from sample_ids' rule) is left to the run for an empty pool."""
    from ..errors import FailedPrecondition

    module = experiment_module(name)
    pool = getattr(module, "POOL", "misclassified")
    misclassified = int(bundle.num_misclassified)
    available = {
        "misclassified": misclassified,
        # references drawn from both kinds (neighbors): each kind must hold them
        "misclassified and correctly classified": min(misclassified, int(bundle.num_samples) - misclassified),
    }.get(pool, int(bundle.num_samples))
    if available == 0:
        raise FailedPrecondition(
            f"bundle {bundle.name} has no {pool} samples: experiment {name!r} has nothing to run on"
        )
    if references < 0 or references > available:
        raise InvalidArgument(f"references {references} outside 0..{available} (the bundle's {pool} samples)")


def _checked_options(options: dict[str, str]) -> dict[str, str]:
    if len(options) > MAX_OPTIONS:
        raise InvalidArgument(f"{len(options)} options; at most {MAX_OPTIONS}")
    for key, value in options.items():
        if len(key) > MAX_OPTION_CHARS or len(value) > MAX_OPTION_CHARS:
            raise InvalidArgument(f"option {key[:40]!r}: keys and values are at most {MAX_OPTION_CHARS} characters")
    return dict(options)
