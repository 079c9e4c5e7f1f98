"""A `parasal serve` child process over one bundle, for the demo and `parasal report --bundle`.

The report talks to the service only through the SDK, as a user's dashboard would; over a
bundle directory it starts the real server on a free local port and stops it on the way out.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class ServeError(Exception):
    """The child server did not come up; the message says where its log is."""


@contextlib.contextmanager
def serve_bundle(bundle_dir: Path, log_path: Path, *, quiet: bool = False):
    """`parasal serve` on a free port; yields its address; SIGTERM and wait on the way out.

    Its request log goes to ``log_path`` so the terminal shows the caller's steps, not every call.
    The operation store lives in a temporary state directory: nothing is left in the bundle.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="parasal-report-state-") as state, open(log_path, "w") as log_file:
        cmd = [sys.executable, "-m", "parasal.server", "--bundle", str(bundle_dir), "--port", "0", "--state-dir", state]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log_file, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            target = _wait_for_address(proc, log_path)
            if not quiet:
                print(f"Server started on {target} (pid {proc.pid}; log: {log_path}).")
            yield target
        finally:
            _stop(proc, quiet)


def _wait_for_address(proc: subprocess.Popen, log_path: Path, timeout: float = 180.0) -> str:
    deadline = time.monotonic() + timeout
    for line in proc.stdout:  # the server prints exactly one line with its address
        if line.startswith("parasal: serving on "):
            return line.split("serving on ", 1)[1].strip()
        if time.monotonic() > deadline:
            break
    try:  # stdout closed: the server is exiting; its status says how
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        code = None
    raise ServeError(f"the server did not start (exit code {code}){_last_line(log_path)}; see its log {log_path}")


def _last_line(log_path: Path) -> str:
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f": {lines[-1][:300]}" if lines else ""


def _stop(proc: subprocess.Popen, quiet: bool) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    if not quiet:
        print(f"Server stopped (exit code {proc.returncode}).")
