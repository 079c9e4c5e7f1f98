"""ExperimentResult <-> the SDK's ExperimentResult (used by _convert.operation_*_proto)."""

from __future__ import annotations

import math

from parasal.v1 import saliency_pb2 as pb

from ._experiment_types import ExperimentPoint, ExperimentResult

__all__ = ["experiment_result_from_proto", "experiment_result_to_proto"]


def _measured(value: float) -> float | None:
    return None if math.isnan(value) else value


def _wire(value: float | None) -> float:
    return math.nan if value is None else value


def experiment_result_from_proto(msg: pb.ExperimentResult) -> ExperimentResult:
    return ExperimentResult(
        name=msg.name,
        references=msg.references,
        seed=msg.seed,
        points=[
            ExperimentPoint(
                p.selection, p.count, p.metric, _measured(p.mean), _measured(p.ci_low), _measured(p.ci_high), p.n
            )
            for p in msg.points
        ],
        json=msg.json,
        plot_png=msg.plot_png,
        seconds=msg.seconds,
    )


def experiment_result_to_proto(value: ExperimentResult) -> pb.ExperimentResult:
    return pb.ExperimentResult(
        name=value.name,
        references=value.references,
        seed=value.seed,
        points=[
            pb.ExperimentPoint(
                selection=p.selection,
                count=p.count,
                metric=p.metric,
                mean=_wire(p.mean),
                ci_low=_wire(p.ci_low),
                ci_high=_wire(p.ci_high),
                n=p.n,
            )
            for p in value.points
        ],
        json=value.json,
        plot_png=value.plot_png,
        seconds=value.seconds,
    )
