"""Index the 10,000 Fashion-MNIST test images with the demo model, end to end; print figures.

    .venv/bin/python benchmarks/index_fashion.py [--limit N] [--batch-size B] [--random-init]

Reports wall time, samples/s (whole job: preflight, profiles, statistics, LMDB, FAISS,
manifest), the bundle's size, peak RSS of this process (``resource.getrusage``), and the
latency of a k=10 exact search. Target on a 2-core CPU: <= 60 s for 10,000 images.
``--random-init`` times the same architecture with untrained weights (before
``parasal train-demo`` has produced the committed ones).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist:test")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="bundle path (default: a temporary directory, removed)")
    p.add_argument("--random-init", action="store_true", help="untrained demo weights (timing only)")
    p.add_argument(
        "--model",
        default="demo-fashion",
        help="another model spec (e.g. package.module:factory), preprocessed like demo-fashion",
    )
    p.add_argument("--weights", default=None, help="state dict for --model")
    args = p.parse_args(argv)

    from parasal.indexer import IndexJob, open_bundle, run_index
    from parasal.indexer.zoo import DEMO_PREPROCESSING, DEMO_WEIGHTS_PATH, build_demo_model

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="parasal-bench-"))
    out = Path(args.out) if args.out else tmp / "bundle"
    weights = args.weights
    pre = {}
    if args.model != "demo-fashion":
        pre = {"channels": "L", "mean": DEMO_PREPROCESSING.mean, "std": DEMO_PREPROCESSING.std}
    elif args.random_init:
        torch.manual_seed(0)
        weights = tmp / "random-demo.pt"
        torch.save(build_demo_model().state_dict(), weights)
    elif weights is None and not Path(DEMO_WEIGHTS_PATH).is_file():
        print(
            f"demo weights missing at {DEMO_WEIGHTS_PATH}: run `parasal train-demo` or pass --random-init",
            file=sys.stderr,
        )
        return 2
    try:
        t0 = time.perf_counter()
        res = run_index(
            IndexJob(
                data=args.data,
                out=out,
                model=args.model,
                weights=weights,
                preprocessing=pre,
                limit=args.limit,
                batch_size=args.batch_size,
                shard_size=args.shard_size,
                device=args.device,
                overwrite=True,
                progress=sys.stderr.isatty(),
            )
        )
        wall = time.perf_counter() - t0
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        size_mib = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        with open_bundle(out) as b:
            q = b.profiles(b.ids[:100])
            b.search(q[:1], 10)
            t1 = time.perf_counter()
            for row in q:
                b.search(row[None], 10)
            single_ms = (time.perf_counter() - t1) * 1000 / len(q)
            t1 = time.perf_counter()
            b.search(q, 10)
            batched_ms = (time.perf_counter() - t1) * 1000 / len(q)
            filt = b.rows_where(misclassified=True)
            t1 = time.perf_counter()
            b.search(q, 10, allowed=filt)
            filtered_ms = (time.perf_counter() - t1) * 1000 / len(q)
            F_ = b.num_filters
        print(
            f"indexed       {res.samples} samples ({res.misclassified} misclassified, {res.skipped} skipped), "
            f"{F_} filters"
        )
        print(
            f"wall time     {wall:.1f} s  ({res.samples / wall:.0f} samples/s end to end; torch threads "
            f"{torch.get_num_threads()}, cpus {os.cpu_count()}, batch {args.batch_size})"
        )
        print(f"peak RSS      {peak_mib:.0f} MiB")
        print(f"bundle size   {size_mib:.1f} MiB ({out})")
        print(
            f"search k=10   {single_ms:.2f} ms/query one at a time, {batched_ms:.3f} ms/query in a batch of 100, "
            f"{filtered_ms:.3f} ms/query misclassified-only"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the bundle too, unless --out put it elsewhere
    return 0


if __name__ == "__main__":
    sys.exit(main())
