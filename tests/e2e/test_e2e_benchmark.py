"""The serving benchmark still runs end to end (a short run on the small test bundle):
every phase reports, the floor server answers, and the figures are plausible. Its speed
is not checked here (benchmarks print figures; tests do not time things)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the whole benchmark script against real servers

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_latency.py"


def test_serve_latency_benchmark_runs(bundle_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--bundle",
            str(bundle_dir),
            "--clients",
            "3",
            "--requests",
            "60",
            "--image-requests",
            "6",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == "serve_latency" and figures["samples"] == 300
    for phase in ("find_similar_id", "find_similar_id_top_filters", "find_similar_image", "floor_id"):
        assert figures[f"{phase}_p50_ms"] > 0 and figures[f"{phase}_qps"] > 0
    assert figures["find_similar_id_p99_ms"] >= figures["find_similar_id_p50_ms"]
    assert figures["find_similar_id_server_cpu_ms"] > 0 and figures["floor_id_server_cpu_ms"] > 0
    assert (figures["finetune_rows"], figures["finetune_neighbors"]) == (13, 10)
    assert isinstance(figures["targets_met"], bool)
