"""Time `--reference-data` (class-filter statistics + exemplars) beside plain profile indexing; print figures.

    .venv/bin/python benchmarks/reference_stats.py [--limit N] [--batch-size B] [--threads T]

One run, three jobs through ``run_index`` (end to end: preflight, shards, assembly, manifest):

1. ``plain``: profile indexing of N Fashion-MNIST training images (default all 60,000)
   with the demo model, no reference data: the cost of the profiles themselves;
2. ``small``: the first 100 test images, no reference data;
3. ``small + reference``: the same, with ``--reference-data fashion-mnist:train``
   (``--reference-limit N``): α of every reference image, ClassFilterStats, exemplars,
   ``reference.npz``, and α / β / counts for the 100 rows.

The reference pass costs (3) − (2). Target (issue #14): ≤ 2 min for the 60,000 training
images on a quiet 2-core CPU. The load average before and after is printed: the figures
are only comparable at similar loads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch


def _timed(job) -> tuple[float, object]:
    from parasal.indexer import run_index

    t0 = time.perf_counter()
    result = run_index(job)
    return time.perf_counter() - t0, result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=60000, help="training images, for both passes (default 60000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-plain", action="store_true", help="only time the reference pass")
    args = p.parse_args(argv)

    from parasal.indexer import IndexJob, open_bundle

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="parasal-refbench-"))
    limit = None if args.limit >= 60000 else args.limit
    common = {
        "model": "demo-fashion",
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "device": args.device,
        "progress": False,
    }
    load_before = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f}")
    try:
        plain_s = None
        if not args.skip_plain:
            plain_s, res = _timed(
                IndexJob(data="fashion-mnist:train", out=tmp / "plain", limit=limit, sample="stratified", **common)
            )
            print(
                f"plain profile indexing, {res.samples} training images: "
                f"{plain_s:.1f} s ({res.samples / plain_s:.0f}/s)"
            )
        small = {"data": "fashion-mnist:test", "limit": 100, "sample": "first", **common}
        small_s, _ = _timed(IndexJob(out=tmp / "small", **small))
        ref_job = IndexJob(out=tmp / "ref", reference_data="fashion-mnist:train", reference_limit=limit, **small)
        ref_total_s, _ = _timed(ref_job)
        with open_bundle(tmp / "ref") as b:
            ref = b.reference
            n = ref.num_samples
            size = (b.generation_path / "reference.npz").stat().st_size
            t0 = time.perf_counter()
            ref.stats.percentile(99.9)
            open_s = time.perf_counter() - t0
        reference_s = ref_total_s - small_s
        print(
            f"reference pass ({ref.method} on {ref.layer}, {ref.num_filters} filters, top {ref.exemplars_per_filter} "
            f"exemplars), {n} training images: {reference_s:.1f} s ({n / reference_s:.0f}/s) "
            f"= {ref_total_s:.1f} s job with reference - {small_s:.1f} s without; "
            f"reference.npz {size / 2**20:.1f} MiB, "
            f"loaded + first percentile in {open_s * 1000:.0f} ms"
        )
        if plain_s:
            print(f"ratio reference pass / plain profile indexing of as many images: {reference_s / plain_s:.2f}")
        load_after = os.getloadavg()
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
