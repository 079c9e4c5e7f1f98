"""The start-up benchmark still runs end to end (one start of each, this tree against
itself, on the small test bundle). Its figures are not checked: benchmarks print figures,
tests do not time things."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts two real servers

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_startup.py"


def test_serve_startup_benchmark_runs(bundle_dir):
    cmd = [sys.executable, str(SCRIPT), "--bundle", str(bundle_dir), "--baseline", ".", "--candidate", "."]
    done = subprocess.run(cmd + ["--repeats", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == "serve_startup" and figures["repeats"] == 1
    for key in ("model_s", "listening_s"):
        assert figures[key]["baseline"] > 0 and figures[key]["candidate"] > 0
    assert "listening_s" in done.stdout and "ratio" in done.stdout
