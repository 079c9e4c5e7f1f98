"""Fixtures of the dashboard tests: the fake SDK and its app (dashboard_fakes.py), and the
e2e bundle with reference data (tests/e2e/conftest.py) for the browser tests."""

from __future__ import annotations

import pytest
from dashboard_fakes import FakeClient, e2e

reference_bundle_dir = e2e.reference_bundle_dir


@pytest.fixture
def fake():
    return FakeClient()


@pytest.fixture
def app_client(fake):
    from fastapi.testclient import TestClient

    from parasal.client.dashboard import create_app

    with TestClient(create_app(fake, target="fake:1"), raise_server_exceptions=True) as tc:
        yield tc
