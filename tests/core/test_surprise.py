"""surprise_expectation and beta_scores against an independent recomputation from the raw reference values."""

from __future__ import annotations

import numpy as np
import pytest

from parasal.core import ClassFilterStats, beta_scores, surprise_expectation

K, N = 3, 40


def reference(seed=0, m=3000):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 3.0, N)  # filters used very differently, so the µ-above-mean rule matters
    alpha = (rng.gamma(2.0, 1.0, (m, N)) * scale).astype(np.float32)
    labels = rng.integers(0, K, m)
    return alpha, labels, scale


def recompute(a, c, ref_alpha, ref_labels, high, low):
    """(β, surprise [(n, dev)], expectation [(n, dev)]) with a loop over filters and np.percentile."""
    rows = ref_alpha[ref_labels == c].astype(np.float64)
    mu = [float(np.mean(rows[:, n])) for n in range(N)]
    floor = sum(mu) / N
    beta = sum(float(a[n]) - mu[n] for n in range(N)) / N
    surprise, expectation = [], []
    for n in range(N):
        dev = float(a[n]) - mu[n]
        if float(a[n]) > np.percentile(rows[:, n], high):
            surprise.append((n, dev))
        if float(a[n]) < np.percentile(rows[:, n], low) and mu[n] > floor:
            expectation.append((n, dev))
    surprise.sort(key=lambda t: (-t[1], t[0]))
    expectation.sort(key=lambda t: (t[1], t[0]))
    return beta, surprise, expectation


@pytest.mark.parametrize("high,low", [(99.9, 0.1), (90.0, 10.0)])
def test_matches_independent_recomputation(high, low):
    ref_alpha, ref_labels, scale = reference()
    stats = ClassFilterStats.of(ref_alpha, ref_labels, K)
    rng = np.random.default_rng(5)
    queries = (rng.gamma(2.0, 1.0, (12, N)) * scale * rng.choice([0.05, 1.0, 4.0], (12, N))).astype(np.float32)
    labels = rng.integers(0, K, 12)
    results = surprise_expectation(queries, labels, stats, high=high, low=low)
    found = 0
    for a, c, got in zip(queries, labels, results):
        beta, surprise, expectation = recompute(a, c, ref_alpha, ref_labels, high, low)
        assert got.label == c
        assert got.beta == pytest.approx(beta, rel=1e-9, abs=1e-12)
        assert [f.filter for f in got.surprise] == [n for n, _ in surprise]
        assert [f.filter for f in got.expectation] == [n for n, _ in expectation]
        for f, (_, dev) in zip(got.surprise + got.expectation, surprise + expectation):
            assert f.deviation == pytest.approx(dev, rel=1e-9, abs=1e-12)
            assert f.alpha == pytest.approx(float(a[f.filter])) and f.deviation == pytest.approx(f.alpha - f.mean)
        for f in got.surprise:
            assert f.alpha > f.threshold
        for f in got.expectation:
            assert f.alpha < f.threshold and f.mean > got.mean_of_means
        found += len(surprise) + len(expectation)
    assert found > 20  # the queries exercise both rules
    np.testing.assert_allclose(beta_scores(queries, labels, stats), [r.beta for r in results], rtol=1e-12)


def test_known_answer_and_top():
    # class 0: filter n takes the values n, n + 1, ..., n + 99 (µ = n + 49.5)
    values = np.arange(100, dtype=np.float32)[:, None] + np.arange(4, dtype=np.float32)
    stats = ClassFilterStats.of(values, np.zeros(100, int), 1)
    a = np.array([200.0, 150.0, 2.0, 1.0], np.float32)  # 0, 1 surprising; 2, 3 below P(0.1) of theirs
    (r,) = surprise_expectation(a[None], [0], stats)
    assert [f.filter for f in r.surprise] == [0, 1]  # deviations 150.5 > 99.5
    # µ = 49.5..52.5, their mean 51: only filters 2 and 3 qualify; deviations -49.5 and -51.5
    assert [f.filter for f in r.expectation] == [3, 2]
    assert r.beta == pytest.approx(np.mean(a - (np.arange(4) + 49.5)))
    (short,) = surprise_expectation(a[None], [0], stats, top=1)
    assert [f.filter for f in short.surprise] == [0] and [f.filter for f in short.expectation] == [3]


def test_refuses_bad_input():
    stats = ClassFilterStats.of(np.ones((2, 3)), [0, 0], 2)
    with pytest.raises(ValueError, match="no reference samples"):
        surprise_expectation(np.ones((1, 3)), [1], stats)
    with pytest.raises(ValueError, match="expected"):
        surprise_expectation(np.ones((1, 4)), [0], stats)
    with pytest.raises(ValueError, match="low <= high"):
        surprise_expectation(np.ones((1, 3)), [0], stats, high=0.1, low=99.9)
