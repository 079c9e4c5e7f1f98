"""The soak benchmark runs end to end on the small test bundle (a short, small run): every kind
of call is made, nothing but documented refusals fails, no operation is left open, and the
server's memory stays put. The full-size run (32 clients, 60 s) is in the README."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real server under load for a few seconds

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def test_soak_benchmark_passes_its_checks(bundle_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--bundle", str(bundle_dir), "--clients", "6", "--seconds", "6"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    kinds = {key.split()[0] for key in figures["outcomes"]}
    assert kinds == {"similar_id", "similar_image", "profile", "sample_image", "operations", "evaluation"}
    assert figures["undocumented_errors"] == 0 and figures["operations_stuck"] == 0 and figures["passed"]
    assert figures["outcomes"].get("similar_id OK", 0) > 0 and figures["operations"] > 0
