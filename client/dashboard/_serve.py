"""Running the dashboard with uvicorn: `serve()` blocks (the CLI), `DashboardServer` runs it
in a thread on a free port (tests, `make dashboard`'s screenshots)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from ._app import create_app

log = logging.getLogger("parasal.dashboard")
# Open Server-Sent Event streams must not hold a stop for long.
GRACEFUL_S = 2


def _config(app, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=GRACEFUL_S, lifespan="off"
    )


def warm(client, bundle: str = "") -> None:
    """Asks the server once for what the overview needs (its failure modes are computed on
    the first request and cached), so the first page a person opens is fast. Errors are left
    for the pages to report."""
    from ..errors import ParasalError

    for method, kwargs in (("index_info", {}), ("confusion_matrix", {}), ("failure_modes", {"include_map": True})):
        call = getattr(client, method, None)
        if callable(call):
            try:
                call(bundle=bundle, **kwargs)
            except ParasalError as exc:
                log.info("warming %s: %s", method, exc)
                return


def serve(client, *, host: str = "127.0.0.1", port: int = 8080, bundle: str = "", target: str = "") -> None:
    """Serves the dashboard until interrupted; prints its URL once it listens."""
    app = create_app(client, bundle=bundle, target=target)
    server = uvicorn.Server(_config(app, host, port))
    sock = _bind(host, port)
    threading.Thread(target=warm, args=(client, bundle), daemon=True, name="parasal-dashboard-warm").start()
    print(f"parasal dashboard: http://{_url_host(host)}:{sock.getsockname()[1]}/ (server {target})", flush=True)
    server.run(sockets=[sock])


class DashboardServer:
    """The dashboard on ``host`` and a free port in a background thread.

    with DashboardServer(client) as dash:
        print(dash.url)
    """

    def __init__(self, client, *, host: str = "127.0.0.1", port: int = 0, bundle: str = "", target: str = ""):
        self.app = create_app(client, bundle=bundle, target=target)
        self._server = uvicorn.Server(_config(self.app, host, port))
        self._sock = _bind(host, port)
        self.url = f"http://{_url_host(host)}:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True, name="parasal-dashboard"
        )

    def start(self, timeout: float = 30.0) -> DashboardServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(GRACEFUL_S + 10)
        self._sock.close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before uvicorn starts, so port 0 gives a known port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
