"""Failure modes (indexer/failure_modes.py): planted clusters are found with their k, the result
is deterministic, and every reported field agrees with a plain recomputation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, silhouette_score

from parasal.core import top_k_filters
from parasal.indexer.failure_modes import (
    MIN_FAILURES,
    ModeSettings,
    SharedSets,
    TooFewFailures,
    find_failure_modes,
    unit_rows,
)


def planted(k: int = 3, per: tuple[int, ...] = (40, 25, 15), f: int = 48, noise: float = 0.15, seed: int = 0):
    """``k`` clusters around random directions (scaled by random lengths: only the direction
    matters for cosine), rows shuffled into ascending ids; returns (ids, profiles, truth, labels, predicted)."""
    rng = np.random.default_rng(seed)
    directions = unit_rows(rng.normal(size=(k, f)))
    truth = np.repeat(np.arange(k), per[:k])
    rng.shuffle(truth)
    x = directions[truth] + noise * rng.normal(size=(len(truth), f)) / np.sqrt(f)
    x *= rng.uniform(0.5, 5.0, size=(len(truth), 1))  # lengths differ: cosine ignores them
    ids = np.arange(len(truth), dtype=np.int64) * 3 + 7
    labels = truth % 2
    predicted = (truth + 1) % 3
    return ids, x.astype(np.float32), truth, labels, predicted


def test_planted_clusters_are_found_with_their_number():
    ids, x, truth, labels, predicted = planted()
    modes = find_failure_modes(ids, x, labels, predicted)
    assert modes.k == 3
    assert adjusted_rand_score(truth, modes.assignment) == 1.0
    assert [m.size for m in modes.modes] == [40, 25, 15]  # largest first
    assert [m.id for m in modes.modes] == [0, 1, 2]
    assert modes.silhouette == max(modes.silhouettes.values()) == modes.silhouettes[3]
    assert "k=3 by silhouette" in modes.method and "cosine" in modes.method
    assert modes.num_misclassified == len(ids) and modes.num_unassigned == 0


def test_the_reported_silhouette_is_sklearns_cosine_silhouette_of_the_assignment():
    ids, x, truth, labels, predicted = planted(seed=3)
    modes = find_failure_modes(ids, x, labels, predicted)
    expected = silhouette_score(unit_rows(x), modes.assignment, metric="cosine")
    assert modes.silhouette == pytest.approx(expected, abs=1e-6)


def test_five_planted_clusters_in_a_wide_model_go_through_the_projection():
    ids, x, truth, labels, predicted = planted(k=5, per=(30, 30, 20, 20, 12), f=300, seed=1)
    settings = ModeSettings(max_dims=64)  # wider than this: projected first
    modes = find_failure_modes(ids, x, labels, predicted, settings)
    assert "64 singular directions" in modes.method
    assert modes.k == 5 and adjusted_rand_score(truth, modes.assignment) == 1.0


def test_fitting_on_a_draw_still_assigns_every_sample():
    ids, x, truth, labels, predicted = planted(per=(60, 50, 40), seed=2)
    modes = find_failure_modes(ids, x, labels, predicted, ModeSettings(max_fit=50, max_silhouette=30))
    assert modes.k == 3 and adjusted_rand_score(truth, modes.assignment) == 1.0
    assert sum(m.size for m in modes.modes) == len(ids)


def test_the_same_input_gives_the_same_modes():
    ids, x, _, labels, predicted = planted(seed=4)
    a = find_failure_modes(ids, x, labels, predicted)
    b = find_failure_modes(ids, x.copy(), labels, predicted)
    assert a.method == b.method and a.silhouettes == b.silhouettes
    assert np.array_equal(a.assignment, b.assignment)
    for ma, mb in zip(a.modes, b.modes, strict=True):
        assert np.array_equal(ma.member_ids, mb.member_ids) and np.array_equal(ma.medoid_ids, mb.medoid_ids)
        assert ma.top_filters == mb.top_filters and ma.confusions == mb.confusions and ma.cohesion == mb.cohesion
    assert np.array_equal(a.map.xy, b.map.xy)


def test_every_field_of_a_mode_agrees_with_a_plain_recomputation():
    ids, x, _, labels, predicted = planted(seed=5)
    modes = find_failure_modes(ids, x, labels, predicted, ModeSettings(medoids=4, top_filters=6))
    unit = unit_rows(x)
    for mode in modes.modes:
        rows = [i for i in range(len(ids)) if modes.assignment[i] == mode.id]
        assert mode.member_ids.tolist() == [int(ids[i]) for i in rows]
        centre = unit[rows].mean(axis=0)
        centre /= np.linalg.norm(centre)
        cosines = {int(ids[i]): float(unit[i] @ centre) for i in rows}
        closest = sorted(cosines, key=lambda i: (-cosines[i], i))[:4]
        assert mode.medoid_ids.tolist() == closest
        assert mode.cohesion == pytest.approx(np.mean(list(cosines.values())), abs=1e-5)
        mean_profile = x[rows].astype(np.float64).mean(axis=0)
        idx, z = top_k_filters(mean_profile, 6)
        assert [i for i, _ in mode.top_filters] == idx.tolist()
        assert np.allclose([v for _, v in mode.top_filters], z)
        pairs = {}
        for i in rows:
            pairs[(int(labels[i]), int(predicted[i]))] = pairs.get((int(labels[i]), int(predicted[i])), 0) + 1
        expected = sorted(((t, p, n) for (t, p), n in pairs.items()), key=lambda c: (-c[2], c[0], c[1]))
        assert mode.confusions == expected
    # mode_of: each id's mode; -1 for ids that are not misclassified samples
    assert modes.mode_of(ids).tolist() == modes.assignment.tolist()
    assert modes.mode_of([0, 8, int(ids[-1]) + 3]).tolist() == [-1, -1, -1]


def test_the_failure_map_is_the_pca_of_the_unit_profiles():
    from sklearn.decomposition import PCA

    ids, x, _, labels, predicted = planted(seed=6)
    modes = find_failure_modes(ids, x, labels, predicted)
    expected = PCA(2, random_state=0).fit_transform(unit_rows(x))
    assert np.allclose(np.abs(modes.map.xy), np.abs(expected), atol=1e-4)  # a component's sign is arbitrary
    assert modes.map.ids.tolist() == ids.tolist() and modes.map.modes.tolist() == modes.assignment.tolist()
    assert modes.map.method.startswith("PCA")
    assert find_failure_modes(ids, x, labels, predicted, with_map=False).map is None


def test_shared_surprise_and_expectation_filters_are_counted_per_mode():
    ids, x, _, labels, predicted = planted(seed=7)
    n = len(ids)
    surprise = [np.array([1, 2]) if i % 2 else np.array([2]) for i in range(n)]
    expectation = [np.array([], np.int64) if i % 3 else np.array([5]) for i in range(n)]
    modes = find_failure_modes(ids, x, labels, predicted, shared=SharedSets("conv9", surprise, expectation))
    for mode in modes.modes:
        rows = [i for i in range(n) if modes.assignment[i] == mode.id]
        odd, thirds = sum(i % 2 for i in rows), sum(i % 3 == 0 for i in rows)
        expected = [("conv9", 2, len(rows))] + ([("conv9", 1, odd)] if odd else [])
        assert mode.shared_surprise == expected
        assert mode.shared_expectation == ([("conv9", 5, thirds)] if thirds else [])
    assert find_failure_modes(ids, x, labels, predicted).modes[0].shared_surprise == []


def test_too_few_failures_is_its_own_error():
    ids, x, _, labels, predicted = planted()
    with pytest.raises(TooFewFailures):
        find_failure_modes(ids[: MIN_FAILURES - 1], x[:3], labels[:3], predicted[:3])
    four = find_failure_modes(ids[:MIN_FAILURES], x[:4], labels[:4], predicted[:4])
    assert 2 <= four.k <= 3 and sum(m.size for m in four.modes) == 4


def test_settings_are_values():
    assert dataclasses.replace(ModeSettings(), seed=1) != ModeSettings()


def test_reading_a_bundle_in_blocks_gives_the_modes_of_its_arrays(tmp_path):
    import indexer_helpers as H

    from parasal.indexer import open_bundle
    from parasal.indexer.failure_modes import bundle_failure_modes
    from parasal.indexer.pipeline import IndexJob, run_index

    data = H.make_image_folder(tmp_path / "imgs", per_class=12)
    gray = {"channels": "L", "mean": (0.5,), "std": (0.5,)}
    run_index(IndexJob(data=str(data), out=tmp_path / "b", model=H.FACTORY, preprocessing=gray, progress=False))
    with open_bundle(tmp_path / "b") as b:
        wrong = b.ids[~b.correct]
        rows = b.rows_of(wrong)
        from_arrays = find_failure_modes(wrong, b.profiles(wrong), b.labels[rows], b.predicted[rows])
        from_bundle = bundle_failure_modes(b, block=5)  # blocks smaller than the data
    assert from_bundle.method == from_arrays.method and from_bundle.k == from_arrays.k
    assert np.array_equal(from_bundle.assignment, from_arrays.assignment)
    for a, m in zip(from_bundle.modes, from_arrays.modes, strict=True):
        assert np.array_equal(a.member_ids, m.member_ids) and np.array_equal(a.medoid_ids, m.medoid_ids)
        assert [i for i, _ in a.top_filters] == [i for i, _ in m.top_filters]
        assert np.allclose([z for _, z in a.top_filters], [z for _, z in m.top_filters])
        assert a.confusions == m.confusions and a.shared_surprise == []  # no reference data
