"""Time of the dataset-level experiments on a bundle (issue #15's figures).

    python benchmarks/experiments_time.py --bundle DIR                      # the pruning figure
    python benchmarks/experiments_time.py --bundle DIR --names all --json   # each experiment, defaults

The pruning figure: one pruning experiment of 60 misclassified references × the default 5
counts × 3 selections (random rows: 5 draws each), in process, on the bundle's model (the
issue's target: ≤ 60 s on a 2-core CPU). ``--names all`` times all eight with their default
sizes, sharing one forward pass over the bundle as ``parasal experiment all`` does (target:
≤ 20 min in total). Prints the load average next to the times: other work on the machine
slows every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--names", default="pruning", help="comma-separated experiments, or all")
    p.add_argument("--references", type=int, default=None, help="default: 60 for pruning alone, else each default")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from parasal.server.experiments import NAMES, run_experiment
    from parasal.server.experiments.local import open_local

    names = list(NAMES) if args.names == "all" else [n.strip() for n in args.names.split(",")]
    references = args.references if args.references is not None else (60 if names == ["pruning"] else 0)
    rows = []
    with open_local(args.bundle) as (bundle, model, ctx):
        for name in names:
            start = time.perf_counter()
            try:
                out = run_experiment(name, bundle, model, references=references, context=ctx)
            except Exception as exc:  # noqa: BLE001 - e.g. no reference data: say so, go on
                rows.append({"experiment": name, "error": str(exc)[:200]})
                continue
            seconds = time.perf_counter() - start
            rows.append({"experiment": name, "references": out.references, "seconds": round(seconds, 2)})
            if not args.json:
                print(f"{name}: {out.references} references in {seconds:.1f} s (load {os.getloadavg()[0]:.1f})")
    total = sum(r.get("seconds", 0) for r in rows)
    if args.json:
        print(json.dumps({"experiments": rows, "seconds": round(total, 2), "load": os.getloadavg()[0]}))
    else:
        print(f"total {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
