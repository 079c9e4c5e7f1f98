"""parasal.client.dashboard: the web dashboard (`parasal dashboard`).

A FastAPI app that talks to a parasal server only through the SDK (`parasal.client.Client`),
renders pages with Jinja2 and ships every asset in the package (no CDN). Needs the
`dashboard` extra: ``pip install 'parasal[dashboard]'``.

    from parasal.client import Client
    from parasal.client.dashboard import create_app, serve

    app = create_app(Client("127.0.0.1:50051"))        # an ASGI app (uvicorn, tests)
    serve(Client("127.0.0.1:50051"), port=8080)         # blocks; prints the URL
"""

from ._app import create_app
from ._serve import DashboardServer, serve

__all__ = ["DashboardServer", "create_app", "serve"]
