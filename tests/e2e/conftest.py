"""End-to-end fixtures: one small real bundle and one real server process per session.

The bundle is built with the indexer's CLI (demo-fashion on the first 300 Fashion-MNIST
test images, ~15 s on two cores); set PARASAL_E2E_BUNDLE=DIR to reuse one. Servers are
started as `python -m parasal.server --port 0 ...` and found by the line they print.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PYTHON = sys.executable
BUNDLE_SIZE = 300
STARTUP_TIMEOUT_S = 180
SERVING = re.compile(r"^parasal: serving on (\S+):(\d+)$")


def child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # 2 shared cores: keep each process from oversubscribing
    return env


def build_bundle(out: Path) -> Path:
    cmd = [
        PYTHON,
        "-m",
        "parasal.indexer",
        "--model",
        "demo-fashion",
        "--data",
        "fashion-mnist:test",
        "--limit",
        str(BUNDLE_SIZE),
        "--sample",
        "first",  # ids 0..299: the tests name samples by id
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ]
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building the test bundle failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return out


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    given = os.environ.get("PARASAL_E2E_BUNDLE")
    if given:
        return Path(given)
    return build_bundle(tmp_path_factory.mktemp("bundles") / "fashion")


@pytest.fixture(scope="session")
def reference_bundle_dir(tmp_path_factory) -> Path:
    """Opt-in: a bundle WITH reference data (the same 300 test images, ids 0..299, and class-filter
    statistics over a stratified 600 of the training split; ~6 s). PARASAL_E2E_REFERENCE_BUNDLE=DIR reuses one.
    Serve it with ``start_server(bundle=reference_bundle_dir)``."""
    given = os.environ.get("PARASAL_E2E_REFERENCE_BUNDLE")
    if given:
        return Path(given)
    from indexer_helpers import build_reference_bundle

    return build_reference_bundle(tmp_path_factory.mktemp("bundles") / "fashion-reference", limit=BUNDLE_SIZE)


@pytest.fixture(scope="session")
def bundle(bundle_dir):
    """The same bundle opened in the test process (for oracles)."""
    from parasal.indexer import open_bundle

    with open_bundle(bundle_dir, gpu=False) as b:
        yield b


class ServerProcess:
    """`python -m parasal.server` in a child process, on 127.0.0.1 and a free port."""

    def __init__(self, bundle_dir: Path, state_dir: Path, *extra: str, log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"server-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        cmd = [
            PYTHON,
            "-m",
            "parasal.server",
            "--bundle",
            str(bundle_dir),
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--state-dir",
            str(state_dir),
            "--grace",
            "5",
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.address = self._wait_for_address()

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = SERVING.match(line.strip())
            if match:
                return f"{match.group(1)}:{match.group(2)}"
        self.proc.kill()
        raise RuntimeError(f"server did not start (exit {self.proc.wait()}):\n{self.log()[-3000:]}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def signal(self, sig: int, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


@pytest.fixture(scope="session")
def start_server(bundle_dir, tmp_path_factory):
    """start_server(*flags, state_dir=None, bundle_dir=None) -> ServerProcess; all stopped at the end."""
    started: list[ServerProcess] = []
    logs = tmp_path_factory.mktemp("server-logs")

    def start(*extra: str, state_dir: Path | None = None, bundle: Path | None = None) -> ServerProcess:
        state = state_dir or tmp_path_factory.mktemp("state")
        server = ServerProcess(bundle or bundle_dir, state, *extra, log_dir=logs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server) -> ServerProcess:
    return start_server()


@pytest.fixture(scope="session")
def client(server):
    from parasal.client import Client

    with Client(server.address, timeout=60) as c:
        yield c
