"""parasal.server: the gRPC service over saliency bundles.

Public surface: :class:`ServerConfig`, :func:`create_server` (start in-process, e.g. for
tests), :func:`serve` (run until a signal) and :func:`main` (the ``parasal serve`` CLI).
Importing this package is cheap; torch, FAISS and the bundles load with the app.
"""

from .config import ServerConfig

__all__ = ["ServerConfig", "create_server", "serve", "main"]


def __getattr__(name):  # lazy: `parasal serve --help` should not import torch
    if name in ("create_server", "serve"):
        from . import app

        return getattr(app, name)
    if name == "main":
        from .cli import main

        return main
    raise AttributeError(f"module 'parasal.server' has no attribute {name!r}")
