"""Fixtures for the SDK and CLI tests: a fake parasal server (client_fakes.py) and a client to it."""

from __future__ import annotations

import pytest
from client_fakes import start_fake


@pytest.fixture
def fake():
    f = start_fake()
    try:
        yield f
    finally:
        f.server.stop(grace=None)


@pytest.fixture
def client(fake):
    from parasal.client import Client

    with Client(fake.target, timeout=5.0) as c:
        yield c
