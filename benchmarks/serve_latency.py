"""Serving latency on loopback: find-similar by id and by uploaded image, and one evaluation.

    python benchmarks/serve_latency.py --bundle bundles/fashion-test
    python benchmarks/serve_latency.py --address 127.0.0.1:50051   # a server already running

Starts ``python -m parasal.server`` on 127.0.0.1 (a free port, a temporary state dir)
unless --address is given, then, through the SDK:

1. warm-up calls of each kind (by id: a tenth of the calls, concurrently, untimed);
2. ``--clients`` threads (8), each with its own channel, together issue ``--requests``
   FindSimilarFailures by sample id (k=10), the same again with ``include_top_filters``,
   then ``--image-requests`` by uploaded PNG;
3. one fine-tuning evaluation (4 counts x 3 selections x 10 neighbours), alone, timed
   from StartFinetuneEvaluation to its result;
4. the floor: the same by-id calls against ``canned_server.py``, a server doing no work
   that answers each with one real response (same Python, gRPC and thread pool), so the
   by-id figures can be read against what Python gRPC alone costs on this machine.

Prints a table with the targets and, last, one JSON line with every figure. Sample ids are
read from the bundle with --bundle, and taken as 0..num_samples-1 with --address (true of
a whole Fashion-MNIST split).
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

import grpc
import numpy as np

from parasal.client import Client
from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

TARGETS = {  # metric -> (target, unit)
    "find_similar_id_p50_ms": 5.0,
    "find_similar_id_p99_ms": 20.0,
    "find_similar_image_p50_ms": 50.0,
    "finetune_evaluation_s": 5.0,
}
SERVING = re.compile(r"^parasal: serving on (\S+)$")


def start(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    """Start a server process; (process, address) once it prints that it is serving."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        match = SERVING.match(line.strip())
        if match:
            return proc, match.group(1)
    raise SystemExit(f"{cmd[1]} did not start (exit status {proc.wait()})")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of this process (all its threads), or of ``pid`` and its
    child processes (the server's saliency worker), from /proc on Linux."""
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


def timed_calls(address: str, clients: int, calls: list[tuple[str, dict]]) -> tuple[np.ndarray, float, float]:
    """Run ``calls`` (SDK method name, keyword arguments) spread over ``clients`` threads,
    each with its own Client: (latencies in ms, wall seconds, CPU seconds of this process)."""

    def client_thread(chunk):
        out = []
        with Client(address, timeout=60) as client:
            client.index_info()  # connect before timing
            for method, kwargs in chunk:
                start = time.perf_counter()
                getattr(client, method)(**kwargs)
                out.append((time.perf_counter() - start) * 1e3)
        return out

    cpu, start = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = np.array(
            [ms for chunk in pool.map(client_thread, [calls[i::clients] for i in range(clients)]) for ms in chunk]
        )
    return latencies, time.perf_counter() - start, cpu_seconds() - cpu


def phase(
    name: str, address: str, server_pid: int | None, clients: int, calls: list[tuple[str, dict]]
) -> dict[str, float]:
    """Latency percentiles, calls/s and CPU per call (clients together; server with its
    child processes) of ``calls`` spread over ``clients``."""
    server_cpu = cpu_seconds(server_pid)
    latencies, wall, client_cpu = timed_calls(address, clients, calls)
    server_cpu = cpu_seconds(server_pid) - server_cpu
    return {
        f"{name}_p50_ms": float(np.percentile(latencies, 50)),
        f"{name}_p99_ms": float(np.percentile(latencies, 99)),
        f"{name}_qps": len(calls) / wall,
        f"{name}_client_cpu_ms": client_cpu / len(calls) * 1e3,
        f"{name}_server_cpu_ms": server_cpu / len(calls) * 1e3,
    }


def _sample_ids(bundle: Path | None, num_samples: int) -> list[int]:
    """The bundle's sample ids (a stratified ``--limit`` sample has gaps); against a running
    server (``--address``) they are taken as 0..num_samples-1, as for a whole dataset split."""
    if bundle is None:
        return list(range(num_samples))
    from parasal.indexer import open_bundle

    with open_bundle(bundle, verify="size") as b:
        return [int(i) for i in b.ids]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--bundle", type=Path, help="bundle directory to serve (a server is started for it)")
    where.add_argument("--address", help="HOST:PORT of a running server instead")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=4000, help="find-similar-by-id calls per by-id phase")
    p.add_argument("--image-requests", type=int, default=480, help="find-similar-by-image calls in all")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--server-threads", type=int, default=16)
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for the started server")
    p.add_argument("--no-floor", action="store_true", help="skip the canned-response server phase")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    proc = state = None
    if args.bundle is not None:
        state = tempfile.TemporaryDirectory(prefix="parasal-bench-state-")
        proc, address = start(
            [
                sys.executable,
                "-m",
                "parasal.server",
                "--bundle",
                str(args.bundle),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--state-dir",
                state.name,
                "--threads",
                str(args.server_threads),
                "--log-level",
                "WARNING",
                *args.server_arg,
            ]
        )
    else:
        address = args.address
    server_pid = proc.pid if proc is not None else None
    figures: dict[str, float] = {}
    try:
        with Client(address, timeout=120) as client:
            info = client.index_info()[0]
            rng = random.Random(args.seed)
            known = _sample_ids(args.bundle, info.num_samples)
            ids = [rng.choice(known) for _ in range(args.requests)]
            image_ids = [rng.choice(known) for _ in range(min(64, args.image_requests))]
            images = [(client.sample(i, include_image=True).image_png, client.sample(i).label) for i in image_ids]
            failing = client.find_similar_failures(sample_id=known[0], k=1, only_misclassified=True).neighbors[0].id
            for i in ids[:20]:  # warm-up
                client.find_similar_failures(sample_id=i, k=args.k)
            for data, label in images[:5]:
                client.find_similar_failures(image=data, label=label, k=args.k)
            with grpc.insecure_channel(address) as channel:  # one real answer, as bytes, for the floor phase
                canned = (
                    pb_grpc.SaliencyServiceStub(channel)
                    .FindSimilarFailures(pb.FindSimilarFailuresRequest(sample_id=ids[0], k=args.k))
                    .SerializeToString()
                )

        by_id = [("find_similar_failures", dict(sample_id=i, k=args.k)) for i in ids]
        with_filters = [(m, dict(kw, include_top_filters=True)) for m, kw in by_id]
        warm = len(ids) // 10  # concurrent warm-up, untimed: the server's thread pool grows, caches fill
        timed_calls(address, args.clients, by_id[:warm] + with_filters[:warm])
        figures |= phase("find_similar_id", address, server_pid, args.clients, by_id)
        figures |= {
            k: v
            for k, v in phase("find_similar_id_top_filters", address, server_pid, args.clients, with_filters).items()
            if k.endswith(("p50_ms", "qps"))
        }
        uploads = [images[j % len(images)] for j in range(args.image_requests)]
        figures |= phase(
            "find_similar_image",
            address,
            server_pid,
            args.clients,
            [("find_similar_failures", dict(image=d, label=l, k=args.k)) for d, l in uploads],
        )
        with Client(address, timeout=120) as client:
            # The shape earlier runs measured (one random draw, no collateral), then today's
            # defaults (5 random draws per random row, 500 correct samples for collateral).
            for name, extra in (
                ("finetune_evaluation_s", dict(random_draws=1, skip_collateral=True)),
                ("finetune_evaluation_default_s", {}),
            ):
                begin = time.perf_counter()
                result = client.start_finetune_evaluation(
                    sample_id=failing, counts=(1, 5, 25, 75), num_neighbors=10, **extra
                ).result(timeout=600)
                figures[name] = time.perf_counter() - begin
            figures |= {"finetune_rows": len(result.rows), "finetune_neighbors": len(result.neighbor_ids)}
    finally:
        if proc is not None:
            stop(proc)
            state.cleanup()

    if not args.no_floor:
        # The same by-id calls against a server that does no work (same Python, gRPC and
        # thread pool) answering with one real response: what Python gRPC itself costs here.
        with tempfile.NamedTemporaryFile(suffix=".bin") as response:
            response.write(canned)
            response.flush()
            floor, floor_address = start(
                [
                    sys.executable,
                    str(Path(__file__).with_name("canned_server.py")),
                    response.name,
                    "--threads",
                    str(args.server_threads),
                ]
            )
            try:
                got = phase("floor_id", floor_address, floor.pid, args.clients, by_id)
            finally:
                stop(floor)
        figures |= {k: got[k] for k in ("floor_id_p50_ms", "floor_id_qps", "floor_id_server_cpu_ms")}
        figures["find_similar_id_p50_over_floor"] = figures["find_similar_id_p50_ms"] / figures["floor_id_p50_ms"]

    print(
        f"server {address}: bundle {info.name!r}, {info.num_samples} samples, {info.num_filters} filters, "
        f"index {info.index_type}; {args.clients} client threads, "
        f"{len(ids)} calls per by-id phase, {args.image_requests} uploads, k={args.k}"
    )
    print(f"{'metric':34s} {'value':>10s} {'target':>8s}  ok")
    for name, value in figures.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("yes" if value <= target else "NO")
        print(f"{name:34s} {value:10.2f} {'' if target is None else f'{target:8.1f}'}  {verdict}")
    print(
        json.dumps(
            {
                "benchmark": "serve_latency",
                **{k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()},
                "clients": args.clients,
                "samples": info.num_samples,
                "filters": info.num_filters,
                "index_type": info.index_type,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "targets_met": all(figures[k] <= t for k, t in TARGETS.items()),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
