"""Serving latency on loopback: find-similar by id and by uploaded image, and one evaluation.

    python benchmarks/serve_latency.py --bundle bundles/fashion-test
    python benchmarks/serve_latency.py --address 127.0.0.1:50051   # a server already running

Starts ``python -m parasal.server`` on 127.0.0.1 (a free port, a temporary state dir)
unless --address is given, then, through the SDK:

1. warm-up calls of each kind;
2. ``--clients`` threads (8), each with its own channel, together issue ``--requests``
   FindSimilarFailures by sample id (k=10), then ``--image-requests`` by uploaded PNG;
3. one fine-tuning evaluation (4 counts x 3 selections x 10 neighbours), alone, timed
   from StartFinetuneEvaluation to its result.

Prints a table with the targets and, last, one JSON line with every figure. Sample ids are
taken as 0..num_samples-1 (true of a Fashion-MNIST split bundle).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from parasal.client import Client

TARGETS = {  # metric -> (target, unit)
    "find_similar_id_p50_ms": 5.0,
    "find_similar_id_p99_ms": 20.0,
    "find_similar_image_p50_ms": 50.0,
    "finetune_evaluation_s": 5.0,
}
SERVING = re.compile(r"^parasal: serving on (\S+)$")


def start_server(bundle: Path, threads: int, extra: list[str]) -> tuple[subprocess.Popen, str, tempfile.TemporaryDirectory]:
    state = tempfile.TemporaryDirectory(prefix="parasal-bench-state-")
    cmd = [sys.executable, "-m", "parasal.server", "--bundle", str(bundle), "--host", "127.0.0.1", "--port", "0",
           "--state-dir", state.name, "--threads", str(threads), "--log-level", "WARNING", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        match = SERVING.match(line.strip())
        if match:
            return proc, match.group(1), state
    raise SystemExit(f"the server did not start (exit status {proc.wait()})")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of this process, or of ``pid`` and its child processes (the
    server's saliency worker), from /proc on Linux."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # fields[1]: parent pid
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK") if ticks else float("nan")


def timed_calls(address: str, clients: int, calls: list) -> tuple[np.ndarray, float]:
    """Run ``calls`` (functions of a Client) spread over ``clients`` threads: (latencies in ms,
    wall seconds)."""
    chunks = [calls[i::clients] for i in range(clients)]

    def worker(chunk):
        out = []
        with Client(address, timeout=60) as client:
            client.index_info()  # connect before timing
            for call in chunk:
                start = time.perf_counter()
                call(client)
                out.append((time.perf_counter() - start) * 1e3)
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = np.array([ms for chunk in pool.map(worker, chunks) for ms in chunk])
    return latencies, time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--bundle", type=Path, help="bundle directory to serve (a server is started for it)")
    where.add_argument("--address", help="HOST:PORT of a running server instead")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=4000, help="find-similar-by-id calls in all")
    p.add_argument("--image-requests", type=int, default=480, help="find-similar-by-image calls in all")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--server-threads", type=int, default=16)
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for the started server")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    proc = state = None
    if args.bundle is not None:
        proc, address, state = start_server(args.bundle, args.server_threads, args.server_arg)
    else:
        address = args.address
    try:
        with Client(address, timeout=120) as client:
            info = client.index_info()[0]
            rng = random.Random(args.seed)
            ids = [rng.randrange(info.num_samples) for _ in range(args.requests)]
            image_ids = [rng.randrange(info.num_samples) for _ in range(min(64, args.image_requests))]
            images = [(client.sample(i, include_image=True).image_png, client.sample(i).label) for i in image_ids]
            failing = client.find_similar_failures(sample_id=0, k=1, only_misclassified=True).neighbors[0].id
            for i in ids[:20]:  # warm-up
                client.find_similar_failures(sample_id=i, k=args.k)
            for data, label in images[:5]:
                client.find_similar_failures(image=data, label=label, k=args.k)

        server_pid = proc.pid if proc is not None else None
        cpu = cpu_seconds(), cpu_seconds(server_pid)
        by_id, id_wall = timed_calls(address, args.clients,
                                     [lambda c, i=i: c.find_similar_failures(sample_id=i, k=args.k) for i in ids])
        client_ms = (cpu_seconds() - cpu[0]) / len(ids) * 1e3
        server_ms = (cpu_seconds(server_pid) - cpu[1]) / len(ids) * 1e3
        uploads = [images[j % len(images)] for j in range(args.image_requests)]
        cpu = cpu_seconds(), cpu_seconds(server_pid)
        by_image, image_wall = timed_calls(address, args.clients, [lambda c, d=d, l=l: c.find_similar_failures(
            image=d, label=l, k=args.k) for d, l in uploads])
        image_client_ms = (cpu_seconds() - cpu[0]) / len(uploads) * 1e3
        image_server_ms = (cpu_seconds(server_pid) - cpu[1]) / len(uploads) * 1e3

        with Client(address, timeout=120) as client:
            start = time.perf_counter()
            result = client.start_finetune_evaluation(sample_id=failing, counts=(1, 5, 25, 75), num_neighbors=10,
                                                      ).result(timeout=600)
            evaluation_s = time.perf_counter() - start
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            state.cleanup()

    figures = {
        "find_similar_id_p50_ms": float(np.percentile(by_id, 50)),
        "find_similar_id_p99_ms": float(np.percentile(by_id, 99)),
        "find_similar_id_qps": len(by_id) / id_wall,
        "find_similar_id_client_cpu_ms": client_ms,  # per call, all threads of this process
        "find_similar_id_server_cpu_ms": server_ms,
        "find_similar_image_p50_ms": float(np.percentile(by_image, 50)),
        "find_similar_image_p99_ms": float(np.percentile(by_image, 99)),
        "find_similar_image_qps": len(by_image) / image_wall,
        "find_similar_image_client_cpu_ms": image_client_ms,
        "find_similar_image_server_cpu_ms": image_server_ms,
        "finetune_evaluation_s": evaluation_s,
        "finetune_rows": len(result.rows),
        "finetune_neighbors": len(result.neighbor_ids),
    }
    print(f"server {address}: bundle {info.name!r}, {info.num_samples} samples, {info.num_filters} filters, "
          f"index {info.index_type}; {args.clients} clients, {len(by_id)} + {len(by_image)} calls, k={args.k}")
    print(f"{'metric':28s} {'value':>10s} {'target':>8s}  ok")
    for name, value in figures.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("yes" if value <= target else "NO")
        print(f"{name:28s} {value:10.2f} {'' if target is None else f'{target:8.1f}'}  {verdict}")
    print(json.dumps({"benchmark": "serve_latency", **{k: round(v, 3) if isinstance(v, float) else v
                                                          for k, v in figures.items()},
                      "clients": args.clients, "samples": info.num_samples, "filters": info.num_filters,
                      "index_type": info.index_type, "cpus": os.cpu_count(), "machine": platform.machine(),
                      "targets_met": all(figures[k] <= t for k, t in TARGETS.items())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
