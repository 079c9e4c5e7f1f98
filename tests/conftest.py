"""Shared test configuration for the whole suite.

- ``@pytest.mark.fashion_mnist``: the one data marker. The test needs the real
  Fashion-MNIST files (Debian's ``dataset-fashion-mnist``, or ``$PARASAL_FASHION_MNIST``
  — the same lookup the indexer uses) and is skipped, saying how to install them,
  when they are missing. ``make test`` installs them, so CI never skips.
- ``@pytest.mark.slow``: the long end-to-end tests. They still run in ``make test``;
  ``pytest -m "not slow"`` is the quick loop while editing.
- Test helper modules (``tests/indexer/indexer_helpers.py``, ``tests/client/client_fakes.py``)
  are importable by name through ``pythonpath`` in ``pyproject.toml``: model specs such
  as ``indexer_helpers:fixed_size_net`` must resolve the same way in child processes.
"""

from __future__ import annotations

import pytest

FASHION_MNIST_PROBE = "t10k-images-idx3-ubyte.gz"


def fashion_mnist_missing() -> str | None:
    """Why the Fashion-MNIST tests cannot run here, or None when the files are present."""
    from parasal.indexer.datasets import fashion_mnist_dir

    where = fashion_mnist_dir()
    if (where / FASHION_MNIST_PROBE).is_file():
        return None
    return f"Fashion-MNIST not found at {where} (apt-get install dataset-fashion-mnist, or set PARASAL_FASHION_MNIST)"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("fashion_mnist") is not None:
        reason = fashion_mnist_missing()
        if reason:
            pytest.skip(reason)
