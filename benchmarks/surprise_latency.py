"""ExplainSurprise latency for one client on loopback: an indexed sample with 3 surprise and 3
expectation filters detailed (a region and 6 exemplars each, exemplar images included).

    python benchmarks/surprise_latency.py --bundle /tmp/ref-bundle      # built with --reference-data
    python benchmarks/surprise_latency.py --address 127.0.0.1:50051 --bundle DIR   # a server already running

Starts ``python -m parasal.server`` on the bundle (127.0.0.1, a free port, a temporary state
dir) unless --address is given. The samples are the bundle's with at least 3 surprise and 3
expectation filters (fewer if there are not enough: it says so). Then, through the SDK, one
client calls ``Client.surprise(id, include_exemplar_images=True)`` (server defaults:
3 detailed filters per list, 6 exemplars, 50 superpixels):

1. *cold*: each sample once (the first time its filters' exemplar images are drawn);
2. *warm*: ``--requests`` calls over the same samples in a seeded random order (exemplar
   images now come from the server's cache; regions are computed on every call);
3. *upload*: ``--uploads`` calls with the same samples' images uploaded with their labels
   (α computed by the model on every call, then as 2).

Prints p50/p90/p99 of each phase, the machine's load average at the start and the end, and
one JSON line with every figure. The target (issue #14): warm p50 <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from parasal.client import Client

TARGET_P50_MS = 100.0
SERVING = re.compile(r"^parasal: serving on (\S+)$")


def start_server(bundle: Path, state: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "parasal.server", "--bundle", str(bundle), "--port", "0", "--host", "127.0.0.1"]
    proc = subprocess.Popen([*cmd, "--state-dir", str(state)], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        match = SERVING.match(line.strip())
        if match:
            return proc, match.group(1)
    raise RuntimeError(f"the server exited ({proc.wait()}) before serving")


def samples_with_both(bundle_dir: Path, want: int = 3) -> tuple[list[int], int]:
    """Ids with >= ``want`` surprise and expectation filters (the best available otherwise), and that count."""
    from parasal.indexer import open_bundle

    with open_bundle(bundle_dir, gpu=False) as b:
        both = np.minimum(b.num_surprise, b.num_expectation)
        for need in range(want, 0, -1):
            ids = b.ids[both >= need]
            if len(ids):
                return [int(i) for i in ids[:50]], need
    raise SystemExit("no sample of this bundle has both surprise and expectation filters")


def timed(client: Client, queries: list[dict]) -> np.ndarray:
    """Milliseconds of each call (``Client.surprise(**query)``), in order."""
    out = []
    for query in queries:
        t0 = time.perf_counter()
        client.surprise(**query, include_exemplar_images=True)
        out.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(out)


def summary(ms: np.ndarray) -> dict:
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)} | {"calls": int(len(ms))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a bundle indexed with --reference-data")
    parser.add_argument("--address", help="a server already serving --bundle (default: start one)")
    parser.add_argument("--requests", type=int, default=200, help="warm calls (default 200)")
    parser.add_argument("--uploads", type=int, default=50, help="upload calls (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    ids, detailed = samples_with_both(args.bundle)
    load_before = os.getloadavg()
    proc = None
    with tempfile.TemporaryDirectory() as state:
        try:
            if args.address is None:
                proc, address = start_server(args.bundle, Path(state))
            else:
                address = args.address
            with Client(address, timeout=120) as client:
                example = client.surprise(ids[0], include_exemplar_images=True)  # connection, first-call set-up
                cold = timed(client, [{"sample_id": i} for i in ids])
                order = random.Random(args.seed).choices(ids, k=args.requests)
                warm = timed(client, [{"sample_id": i} for i in order])
                samples = {i: client.sample(i, include_image=True) for i in set(order[: args.uploads])}
                uploads = [{"image": samples[i].image_png, "label": samples[i].label} for i in order[: args.uploads]]
                upload = timed(client, uploads)
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    load_after = os.getloadavg()
    figures = {
        "samples": len(ids),
        "detailed_per_list": min(3, detailed),
        "exemplars_per_filter": len(example.surprise[0].exemplars) if example.surprise else 0,
        "cold": summary(cold),
        "warm": summary(warm),
        "upload": summary(upload),
        "target_warm_p50_ms": TARGET_P50_MS,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"ExplainSurprise, one client, {len(ids)} samples with >= {detailed} surprise and expectation filters")
    for phase in ("cold", "warm", "upload"):
        f = figures[phase]
        print(f"  {phase:<6} p50 {f['p50_ms']:7.1f} ms   p90 {f['p90_ms']:7.1f} ms   p99 {f['p99_ms']:7.1f} ms")
    ok = figures["warm"]["p50_ms"] <= TARGET_P50_MS
    print(f"  target: warm p50 <= {TARGET_P50_MS:g} ms: {'met' if ok else 'NOT met'}")
    print(f"  load average (1, 5, 15 min): before {load_before}, after {load_after}; {os.cpu_count()} CPUs")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
