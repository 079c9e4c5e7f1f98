"""`parasal dashboard`: the web dashboard over a running server (the `dashboard` extra).

The dashboard's package (FastAPI, uvicorn, Jinja2) is imported only when the command runs,
so `import parasal.client` and every other command stay free of it."""

from __future__ import annotations

import argparse

DASHBOARD_PACKAGES = frozenset({"fastapi", "starlette", "uvicorn", "jinja2", "multipart", "python_multipart"})
MISSING_EXTRA = "`parasal dashboard` needs the dashboard extra: pip install 'parasal[dashboard]'"


def add_dashboard_commands(sub, command) -> None:
    p = command("dashboard", cmd_dashboard, "serve the web dashboard over a parasal server (dashboard extra)")
    # --server is the dashboard's name for the common --target (the server it talks to).
    p.add_argument(
        "--server",
        dest="target",
        metavar="HOST:PORT",
        default=argparse.SUPPRESS,  # keeps --target's value (or its default) when not given
        help="the parasal server (same as --target)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve the dashboard on (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port to serve the dashboard on (default %(default)s)")


def cmd_dashboard(args) -> int:
    from .cli import EXIT_ERROR, _client, _report

    try:
        from .dashboard import serve
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in DASHBOARD_PACKAGES:
            return _report("FAILED_PRECONDITION", MISSING_EXTRA, args.json, EXIT_ERROR)
        raise
    client = _client(args)
    try:
        serve(client, host=args.host, port=args.port, bundle=args.bundle, target=args.target)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        message = f"cannot serve the dashboard on {args.host}:{args.port}: {exc.strerror or exc}"
        return _report("UNAVAILABLE", message, args.json, EXIT_ERROR)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0
