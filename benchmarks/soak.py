"""Bounded soak run: many clients, mixed work, a fixed time; then: did anything go wrong?

    python benchmarks/soak.py --bundle bundles/fashion-test                 # 32 clients, 60 s
    python benchmarks/soak.py --bundle B --clients 8 --seconds 10          # the smoke test's size

Starts ``python -m parasal.server`` on 127.0.0.1 (a free port, a temporary state dir) and
runs ``--clients`` threads, each with its own SDK channel, for ``--seconds``. Each call is
drawn (seeded) from a mix: find-similar by id (55 %), by uploaded image (15 %), profile by
id (10 %), sample with its image (5 %), operations list / get (5 %), and a small pruning
evaluation that the caller then watches to its end (10 %). Afterwards it waits for every
operation to end, and reports:

* outcomes by status code: everything but OK must be a *documented* refusal, i.e.
  RESOURCE_EXHAUSTED (a full pool, the per-caller operation limit, admission);
* operations still pending or running after the drain (must be 0);
* the server's resident memory after warm-up and at the end (growth must stay < 10 %);
* latency percentiles per kind of call.

The load stays on loopback and stops by itself. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import _sample_ids, start, stop

from parasal.client import Client, ParasalError

MIX = (
    ("similar_id", 55),
    ("similar_image", 15),
    ("profile", 10),
    ("sample_image", 5),
    ("operations", 5),
    ("evaluation", 10),
)
DOCUMENTED = {"RESOURCE_EXHAUSTED"}  # refusals the README documents under load


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Soak:
    def __init__(self, address: str, ids: list[int], images: list[tuple[bytes, int]], seconds: float, seed: int):
        self.address, self.ids, self.images = address, ids, images
        self.deadline = time.monotonic() + seconds
        self.seed = seed
        self.lock = threading.Lock()
        self.outcomes: collections.Counter = collections.Counter()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.operation_ids: set[str] = set()

    def run_client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        kinds, weights = zip(*MIX)
        with Client(self.address, timeout=60) as client:
            while time.monotonic() < self.deadline:
                kind = rng.choices(kinds, weights)[0]
                start_t = time.perf_counter()
                try:
                    self.call(client, kind, rng)
                    code = "OK"
                except ParasalError as exc:
                    code = exc.code.name if exc.code is not None else type(exc).__name__
                with self.lock:
                    self.outcomes[(kind, code)] += 1
                    self.latency[kind].append((time.perf_counter() - start_t) * 1e3)

    def call(self, client: Client, kind: str, rng: random.Random) -> None:
        sample = rng.choice(self.ids)
        if kind == "similar_id":
            client.find_similar_failures(sample_id=sample, k=10)
        elif kind == "similar_image":
            image, label = rng.choice(self.images)
            client.find_similar_failures(image=image, label=label, k=10)
        elif kind == "profile":
            client.profile(sample_id=sample)
        elif kind == "sample_image":
            client.sample(sample, include_image=True)
        elif kind == "operations":
            for op in client.operations(page_size=20)[:3]:
                client.operation(op.id)
        else:
            handle = client.start_pruning_evaluation(
                sample_id=sample, counts=[1, 5], selections=["most", "random"], num_neighbors=3
            )
            with self.lock:
                self.operation_ids.add(handle.id)
            handle.result(timeout=120)


def drain(address: str, operation_ids: set[str], timeout: float) -> list[str]:
    """Ids of operations that are still pending or running after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    with Client(address, timeout=30) as client:
        while True:
            open_ids = [i for i in sorted(operation_ids) if not client.operation(i).done]
            if not open_ids or time.monotonic() > end:
                return open_ids
            time.sleep(0.5)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for the started server")
    args = p.parse_args(argv)

    state = tempfile.TemporaryDirectory(prefix="parasal-soak-state-")
    cmd = [sys.executable, "-m", "parasal.server", "--bundle", str(args.bundle), "--host", "127.0.0.1"]
    cmd += ["--port", "0", "--state-dir", state.name, "--log-level", "WARNING", *args.server_arg]
    proc, address = start(cmd)
    try:
        ids = _sample_ids(args.bundle, 0)
        with Client(address, timeout=60) as client:
            picks = random.Random(args.seed).sample(ids, min(16, len(ids)))
            images = [(client.sample(i, include_image=True).image_png, client.sample(i).label) for i in picks]
            for i in picks:  # warm-up: caches and the saliency child
                client.find_similar_failures(sample_id=i, k=10)
            for image, label in images[:4]:
                client.find_similar_failures(image=image, label=label, k=10)
        rss_start = rss_kib(proc.pid)
        soak = Soak(address, ids, images, args.seconds, args.seed)
        threads = [threading.Thread(target=soak.run_client, args=(i,)) for i in range(args.clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        stuck = drain(address, soak.operation_ids, timeout=120)
        rss_end = rss_kib(proc.pid)
    finally:
        stop(proc)
        state.cleanup()
    return report(args, soak, wall, stuck, rss_start, rss_end)


def report(args, soak: Soak, wall: float, stuck: list[str], rss_start: int, rss_end: int) -> int:
    total = sum(soak.outcomes.values())
    undocumented = {f"{k} {c}": n for (k, c), n in soak.outcomes.items() if c != "OK" and c not in DOCUMENTED}
    growth = (rss_end - rss_start) / rss_start
    print(f"soak: {args.clients} clients, {wall:.1f} s, {total} calls ({total / wall:.0f}/s)")
    print(f"{'call':<14} {'calls':>6} {'OK':>6} {'refused':>8} {'other':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for kind, _ in MIX:
        codes = {c: n for (k, c), n in soak.outcomes.items() if k == kind}
        lat = np.array(soak.latency.get(kind) or [0.0])
        refused = codes.get("RESOURCE_EXHAUSTED", 0)
        other = sum(codes.values()) - codes.get("OK", 0) - refused
        print(
            f"{kind:<14} {sum(codes.values()):>6} {codes.get('OK', 0):>6} {refused:>8} {other:>6} "
            f"{np.percentile(lat, 50):>8.1f} {np.percentile(lat, 99):>8.1f}"
        )
    print(f"operations started: {len(soak.operation_ids)}, still open after the drain: {len(stuck)}")
    print(f"server RSS: {rss_start / 1024:.0f} MiB after warm-up -> {rss_end / 1024:.0f} MiB ({growth:+.1%})")
    ok = not undocumented and not stuck and growth < 0.10
    print("checks:", "all passed" if ok else f"FAILED (undocumented: {undocumented}, stuck: {stuck[:5]})")
    figures = {
        "benchmark": "soak",
        "clients": args.clients,
        "seconds": round(wall, 1),
        "calls": total,
        "outcomes": {f"{k} {c}": n for (k, c), n in sorted(soak.outcomes.items())},
        "undocumented_errors": sum(undocumented.values()),
        "operations": len(soak.operation_ids),
        "operations_stuck": len(stuck),
        "rss_growth": round(growth, 4),
        "passed": ok,
    }
    print(json.dumps(figures, allow_nan=False))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
