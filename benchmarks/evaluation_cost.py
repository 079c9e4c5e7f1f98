"""What one fine-tuning / pruning evaluation costs with issue 15's honest defaults (5 random
draws per random row, 500 collateral samples), against the same evaluation without them,
and what exporting one row costs. In process (the server's own Evaluations and operation
pool over a real bundle), one thread by default.

    python benchmarks/evaluation_cost.py --bundle /path/to/demo-10k [--threads 1] [--repeats 3]

Prints a table and, last, one JSON line with every figure (seconds: the median of the repeats).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from parasal.server.config import ServerConfig
from parasal.server.evaluations import Evaluations, FinetuneParams, PruningParams
from parasal.server.operations import Operations
from parasal.server.queries import Queries
from parasal.server.registry import Registry
from parasal.server.store import OperationStore
from parasal.v1 import saliency_pb2 as pb


def wait(evaluations: Evaluations, op) -> pb.Operation:
    while True:
        op = evaluations.operations.get(op.id)
        if op.state not in (pb.OPERATION_STATE_PENDING, pb.OPERATION_STATE_RUNNING):
            if op.state != pb.OPERATION_STATE_SUCCEEDED:
                raise SystemExit(f"evaluation {op.id} ended {pb.OperationState.Name(op.state)}: {op.error.message}")
            return op
        time.sleep(0.02)


def timed(evaluations: Evaluations, start, params, repeats: int) -> tuple[float, pb.Operation]:
    seconds, op = [], None
    for _ in range(repeats):
        begin = time.perf_counter()
        op = wait(evaluations, start(params))
        seconds.append(time.perf_counter() - begin)
    return statistics.median(seconds), op


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference", type=int, help="sample id (default: the first misclassified one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as state:
        config = ServerConfig(
            bundles=[("b", args.bundle)],
            state_dir=Path(state) / "state",
            device="cpu",
            model_replicas=1,
            neighbor_lists=0,
            saliency_process=False,
        ).validate()
        registry = Registry.load(config)
        operations = Operations(OperationStore(Path(state) / "ops"))
        evaluations = Evaluations(registry, Queries(registry, config), operations, config)
        served = registry.get()
        b = served.bundle
        reference = args.reference
        if reference is None:
            reference = int(b.ids[np.flatnonzero(~np.asarray(b.correct, bool))[0]])
        figures: dict[str, float | int | str] = {"samples": int(b.num_samples), "reference": reference}
        cases = {
            "pruning_default": (evaluations.start_pruning, PruningParams(bundle="", reference=reference)),
            "pruning_no_collateral": (
                evaluations.start_pruning,
                PruningParams(bundle="", reference=reference, skip_collateral=True),
            ),
            "pruning_old_shape": (  # one random draw, no collateral: what an evaluation cost before issue 15
                evaluations.start_pruning,
                PruningParams(bundle="", reference=reference, random_draws=1, skip_collateral=True),
            ),
            "finetune_default": (evaluations.start_finetune, FinetuneParams(bundle="", reference=reference)),
            "finetune_no_collateral": (
                evaluations.start_finetune,
                FinetuneParams(bundle="", reference=reference, skip_collateral=True),
            ),
        }
        last = None
        for name, (start, params) in cases.items():
            seconds, op = timed(evaluations, start, params, args.repeats)
            figures[f"{name}_s"] = round(seconds, 3)
            if name == "finetune_default":
                last = op
                figures["finetune_rows"] = len(op.finetune.rows)
                figures["collateral_evaluated"] = op.finetune.rows[0].collateral.evaluated
        begin = time.perf_counter()
        edit = evaluations.export_edit(last.id, pb.SELECTION_MOST_SALIENT, last.finetune.rows[0].count, 0)
        figures["export_s"] = round(time.perf_counter() - begin, 3)
        figures["export_bytes"] = len(edit.data)
        operations.close()
        registry.close()

    for key, value in figures.items():
        print(f"{key:28s} {value}")
    print(json.dumps({"benchmark": "evaluation_cost", "threads": args.threads, **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
