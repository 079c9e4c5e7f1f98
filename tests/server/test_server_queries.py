"""Query helpers that need no bundle: the top filters of a profile."""

from types import SimpleNamespace

import numpy as np
import pytest

from parasal.core import FilterLayout, LayerSpan
from parasal.server.queries import FilterScore, top_filters

LAYOUT = FilterLayout((LayerSpan("stem", "conv2d", 8, 0), LayerSpan("head", "conv2d", 30, 8)))


def locate(index):
    span, j = LAYOUT.locate(index)
    return span.name, j


SERVED = SimpleNamespace(layout=LAYOUT)


def slow_top_filters(vector, k):
    """The oracle: the stable sort the server used before parasal.core.top_k_filters."""
    order = np.argsort(-vector.astype(np.float64), kind="stable")[:k]
    return [FilterScore(int(i), *locate(int(i)), float(vector[i])) for i in order]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 10, 38])
def test_top_filters_equal_the_stable_sort_with_ties_by_lower_index(seed, k):
    rng = np.random.default_rng(seed)
    vector = rng.integers(-3, 4, 38).astype(np.float32)  # few distinct values: many ties
    if seed % 2:
        vector = rng.standard_normal(38).astype(np.float32)
    got = top_filters(SERVED, vector, k)
    assert got == slow_top_filters(vector, k)
    assert [f.z for f in got] == sorted((f.z for f in got), reverse=True)
