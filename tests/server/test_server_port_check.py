"""`parasal serve` refuses a port in use before it opens any bundle (issue #13).

The check (server/cli.py ``port_problem``) is compared with grpc's own bind, the oracle,
on the same host/port situations; then the command itself is run against a held port and
shown never to reach the bundle: it never imports torch, which opening one needs.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent import futures
from contextlib import closing, contextmanager

import grpc
import pytest

from parasal.server.cli import port_problem


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _held(how: str):
    """A port in one of the states a user meets; yields the port number."""
    if how == "free":
        yield _free_port()
        return
    s = socket.socket()
    try:
        if how == "listening":  # another server (SO_REUSEADDR, as servers set it)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen()
        elif how == "listening-any":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", 0))
            s.listen()
        elif how == "bound":  # bound, not listening, no SO_REUSEADDR (a client's source port)
            s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
    finally:
        s.close()


def _grpc_can_bind(host: str, port: int) -> bool:
    """The oracle: does grpc (with the server's own so_reuseport=0) bind host:port?"""
    server = grpc.server(futures.ThreadPoolExecutor(1), options=[("grpc.so_reuseport", 0)])
    try:
        return server.add_insecure_port(f"{host}:{port}") != 0
    except RuntimeError:
        return False
    finally:
        server.stop(None).wait(5)


@pytest.mark.parametrize("how", ["free", "listening", "listening-any", "bound"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0", "[::]"])
def test_the_check_agrees_with_grpcs_own_bind(host, how):
    with _held(how) as port:
        problem = port_problem(host, port)
        expected = _grpc_can_bind(host, port)
    assert (problem is None) == expected, (host, how, problem)
    if problem is not None:
        assert str(port) in problem and "\n" not in problem


def test_port_zero_is_never_checked():
    assert port_problem("127.0.0.1", 0) is None


def test_a_held_port_fails_at_once_without_opening_the_bundle(tmp_path):
    not_a_bundle = tmp_path / "bundle"  # opening it would fail with "… bundle …", after the imports
    not_a_bundle.mkdir()
    with _held("listening") as port:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "parasal.server", "--bundle", str(not_a_bundle)]
            + ["--port", str(port), "--state-dir", str(tmp_path / "state")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    imported = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert said == [
        f"parasal serve: error: port {port} on 127.0.0.1 is already in use; stop what holds it, "
        "or pick another --port (0 = a free one)"
    ]
    # Causal, not timed: opening a bundle needs torch (and faiss); neither was imported.
    modules = {line.split("|")[-1].strip() for line in imported}
    assert "torch" not in modules and "faiss" not in modules and "parasal.server.app" not in modules
    assert imported, "importtime output missing: the check above would prove nothing"
