"""Browsing latency through the SDK against a running server, and listing at a million rows.

    python benchmarks/browse_latency.py --address 127.0.0.1:50051
    python benchmarks/browse_latency.py --scale 1000000      # in-process listing only, synthetic table

Against ``--address`` (one client, sequential calls, ``--repeats`` each; p50 / p90 in ms):

1. ListFailureModes, the first call (the server computes the modes; only meaningful on a
   freshly started server) and then cached;
2. GetConfusionMatrix;
3. ListSamples: the first page of misclassified samples by loss (a new ordering each time),
   the same again (the ordering kept), and every page of all samples (page_size 1000).

``--scale N``: server/browse.py's filter + sort over a synthetic table of N rows (the
vectorised path alone, no gRPC), for the figures a large bundle would see.

Prints a table and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from types import SimpleNamespace


def timed(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))]}


def against_server(address: str, repeats: int) -> dict:
    from parasal.client import Client

    out = {}
    with Client(address, timeout=600) as c:
        start = time.perf_counter()
        modes = c.failure_modes()
        out["failure_modes_first_ms"] = (time.perf_counter() - start) * 1000
        out["failure_modes_cached"] = timed(lambda: c.failure_modes(), repeats)
        out["failure_modes_with_map_and_members"] = timed(
            lambda: c.failure_modes(include_map=True, include_members=True), repeats
        )
        out["num_modes"] = len(modes)
        out["confusion_matrix"] = timed(lambda: c.confusion_matrix(), repeats)
        first = {"v": 0}

        def new_ordering():
            first["v"] += 1  # a different bound each time: a new ordering, not the kept one
            list(c.samples(correct=False, order_by="loss", descending=True, min_loss=first["v"] * 1e-9, limit=100))

        out["list_first_page_new_ordering"] = timed(new_ordering, repeats)
        out["list_first_page_kept"] = timed(
            lambda: list(c.samples(correct=False, order_by="loss", descending=True, limit=100)), repeats
        )
        out["list_all_pages_1000"] = timed(lambda: sum(1 for _ in c.samples(page_size=1000)), max(1, repeats // 5))
        out["num_samples"] = c.samples().total_size
    return out


def at_scale(n: int, repeats: int) -> dict:
    """matching_rows over a synthetic ServedBundle-like object with an n-row table."""
    import numpy as np

    from parasal.indexer.columns import SampleColumns
    from parasal.server import browse

    rng = np.random.default_rng(0)
    label = rng.integers(0, 10, n)
    predicted = np.where(rng.random(n) < 0.9, label, rng.integers(0, 10, n))
    columns = SampleColumns(
        ids=np.arange(n, dtype=np.int64),
        label=label,
        predicted=predicted,
        correct=label == predicted,
        true_confidence=rng.random(n),
        predicted_confidence=rng.random(n),
        loss=rng.exponential(size=n),
    )

    class Table:
        ids = columns.ids
        correct = columns.correct

        def rows_where(self, misclassified=None, labels=None, predicted=None, **reference):
            mask = np.ones(n, bool)
            if misclassified is not None:
                mask &= ~columns.correct if misclassified else columns.correct
            if labels is not None:
                mask &= np.isin(columns.label, labels)
            if predicted is not None:
                mask &= np.isin(columns.predicted, predicted)
            return mask

    served = SimpleNamespace(bundle=Table(), name="synthetic", num_classes=10)
    real = browse.sample_columns
    browse.sample_columns = lambda bundle: columns
    try:
        q_all = browse.SampleFilter(order_by="loss", descending=True)
        q_wrong = browse.SampleFilter(correct=False, true_labels=(6,), order_by="true_confidence")
        return {
            "rows": n,
            "all_by_loss": timed(lambda: browse.matching_rows(served, q_all), repeats),
            "misclassified_shirts_by_confidence": timed(lambda: browse.matching_rows(served, q_wrong), repeats),
        }
    finally:
        browse.sample_columns = real


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", help="a running parasal server")
    p.add_argument("--scale", type=int, help="rows of the synthetic table for the in-process listing figure")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    if not args.address and not args.scale:
        p.error("give --address, --scale or both")
    result = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "load": os.getloadavg()[0]}
    if args.address:
        result["server"] = against_server(args.address, args.repeats)
    if args.scale:
        result["scale"] = at_scale(args.scale, max(3, args.repeats // 4))
    for section in ("server", "scale"):
        for key, value in result.get(section, {}).items():
            if isinstance(value, dict):
                print(f"{section:7} {key:40} p50 {value['p50_ms']:9.1f} ms   p90 {value['p90_ms']:9.1f} ms")
            else:
                shown = f"{value:.1f}" if isinstance(value, float) else value
                print(f"{section:7} {key:40} {shown}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
