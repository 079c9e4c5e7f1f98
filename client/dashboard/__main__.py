"""`python -m parasal.client.dashboard --bundle DIR`: a parasal server over one bundle and the
dashboard over it, together (what `make dashboard` runs on the demo bundle).

The server runs as its own process (`python -m parasal.server`, the engine extras); this
process only talks to it through the SDK, as `parasal dashboard --server` would. Ctrl-C
stops both.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

SERVING = re.compile(r"^parasal: serving on (\S+):(\d+)$")
STARTUP_S = 600  # a large bundle's neighbour lists take a while on a small machine


def start_server(bundle: Path, grpc_port: int, log) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "parasal.server", "--bundle", str(bundle), "--host", "127.0.0.1"]
    cmd += ["--port", str(grpc_port), "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = SERVING.match(line.strip())
        if match:
            return proc, f"{match.group(1)}:{match.group(2)}"
    proc.kill()
    raise RuntimeError(f"the parasal server did not start (exit {proc.wait()}); see its log above")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parasal.client.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle directory to serve")
    parser.add_argument("--port", type=int, default=8080, help="the dashboard's port (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="the dashboard's address (default %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=0, help="the server's port (default: a free one)")
    args = parser.parse_args(argv)
    if not args.bundle.is_dir():
        print(
            f"error: no bundle at {args.bundle}; build the demo's with `make demo` (or `parasal demo`), "
            "or index your own with `parasal index`",
            file=sys.stderr,
        )
        return 2
    from parasal.client import Client

    from . import serve

    os.environ.setdefault("OMP_NUM_THREADS", "2")
    print(f"starting the parasal server over {args.bundle} ...", flush=True)
    server, address = start_server(args.bundle, args.grpc_port, sys.stderr)
    try:
        with Client(address, timeout=120) as client:
            serve(client, host=args.host, port=args.port, target=address)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: cannot serve the dashboard on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
