"""Failure modes: the misclassified samples of a bundle grouped by why their profiles say they fail.

A *mode* is a cluster of misclassified samples whose standardized profiles point the same
way (cosine geometry): samples failing for the same reason. Modes may split one confusion
pair (two different reasons for Shirt -> T-shirt) or merge several; the confusion pairs are
reported, never used to form the modes.

How modes are found (:func:`cluster_unit_vectors`), all seeded and deterministic:

1. every profile is L2-normalised, so Euclidean distance between rows is a function of
   their cosine (``|a - b|^2 = 2 - 2 cos``); k-means on these unit vectors is spherical
   k-means up to the centroid's length;
2. wide models (more than ``ModeSettings.max_dims`` filters) are first projected on their
   top right-singular vectors (TruncatedSVD: no centring, so inner products, hence cosines,
   are kept as far as the dropped directions allow);
3. k-means (k-means++, ``n_init`` restarts) for every k in ``k_min..k_max`` (``k_max`` =
   ``min(ModeSettings.k_max, n // min_mean_size)``: modes of ``min_mean_size`` members
   on average at the finest), fitted on at most ``max_fit`` samples (a seeded draw);
4. the k with the largest mean silhouette (cosine; on at most ``max_silhouette`` samples)
   wins; every sample is then assigned to its nearest centre by cosine. Every
   misclassified sample belongs to one mode (k-means has no noise label), so
   ``num_unassigned`` is 0. There is always more than one mode (silhouette is undefined for
   k = 1): a data set without structure shows as a low silhouette, which is reported.

Per mode (:func:`describe_modes`): size, confusion pairs (most frequent first), the mean
standardized profile's top filters (:func:`parasal.core.top_k_filters`), medoids (the
members closest by cosine to the mode's centre, closest first), cohesion (mean cosine of
the members to the centre), member ids, and, where the bundle has reference data, the
filters shared by the members' surprise / expectation sets.

The failure map (:func:`failure_map`) is the PCA (two components) of the same unit vectors.

Everything here is numpy and scikit-learn on arrays; :func:`bundle_failure_modes` reads
what it needs from an open :class:`~parasal.indexer.Bundle` in row blocks.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ModeSettings",
    "FailureMode",
    "FailureModes",
    "FailureMap",
    "TooFewFailures",
    "MIN_FAILURES",
    "cluster_unit_vectors",
    "describe_modes",
    "failure_map",
    "find_failure_modes",
    "bundle_failure_modes",
    "unit_rows",
]

#: Fewer misclassified samples than this cannot be grouped (silhouette needs k < n, k >= 2).
MIN_FAILURES = 4


class TooFewFailures(ValueError):
    """The bundle has fewer than ``MIN_FAILURES`` misclassified samples."""


@dataclass(frozen=True)
class ModeSettings:
    """How modes are found; the defaults are what the server and ``parasal export`` use."""

    k_min: int = 2
    k_max: int = 20
    #: The finest k considered leaves modes of at least this many members on average.
    min_mean_size: int = 10
    #: k-means restarts per k (the best inertia is kept) and the seed of everything random.
    n_init: int = 4
    seed: int = 0
    #: Samples k-means is fitted on (a seeded draw beyond it; all are assigned afterwards).
    max_fit: int = 20_000
    #: Samples the silhouette of each k is measured on.
    max_silhouette: int = 4_000
    #: Profiles wider than this are projected on this many singular directions first.
    max_dims: int = 1024
    #: Medoids and mean-profile top filters kept per mode (requests take a prefix).
    medoids: int = 100
    top_filters: int = 100
    #: Shared surprise / expectation filters kept per mode.
    shared: int = 100


@dataclass(frozen=True, eq=False)
class FailureMode:
    """One mode. ``member_ids`` ascending; ``medoid_ids`` closest to the centre first."""

    id: int
    size: int
    member_ids: np.ndarray  # (size,) int64, ascending
    medoid_ids: np.ndarray  # (<= settings.medoids,) int64, closest first
    confusions: list[tuple[int, int, int]]  # (label, predicted, count), most frequent first
    top_filters: list[tuple[int, float]]  # (profile index, z) of the mean standardized profile
    cohesion: float  # mean cosine of the members to the mode's centre
    shared_surprise: list[tuple[str, int, int]] = field(default_factory=list)  # (layer, filter, count)
    shared_expectation: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class FailureMap:
    """2-D coordinates of the misclassified samples (rows as ``ids``)."""

    ids: np.ndarray  # (n,) int64
    xy: np.ndarray  # (n, 2) float32
    labels: np.ndarray  # (n,) int64
    predicted: np.ndarray  # (n,) int64
    modes: np.ndarray  # (n,) int32, -1 for a sample in no mode
    method: str


@dataclass(frozen=True, eq=False)
class FailureModes:
    """The modes of one bundle generation, largest first (``modes[i].id == i``)."""

    modes: list[FailureMode]
    method: str
    silhouette: float  # of the chosen k
    k: int
    silhouettes: dict[int, float]  # every k tried -> its silhouette
    num_misclassified: int
    num_unassigned: int
    ids: np.ndarray  # (n,) int64 misclassified ids, ascending
    assignment: np.ndarray  # (n,) int32 mode of each of ``ids`` (-1: none)
    map: FailureMap | None = None

    def mode_of(self, ids) -> np.ndarray:
        """(m,) int32: the mode of each id; -1 for ids in no mode (correct or unknown samples)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        pos = np.searchsorted(self.ids, ids)
        pos_ok = np.minimum(pos, max(len(self.ids) - 1, 0))
        found = (pos < len(self.ids)) & (self.ids[pos_ok] == ids) if len(self.ids) else np.zeros(len(ids), bool)
        out = np.full(len(ids), -1, np.int32)
        out[found] = self.assignment[pos_ok[found]]
        return out


# ---------------------------------------------------------------------------------------
# Geometry and clustering (arrays only)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, d) float32 rows scaled to length 1 (an all-zero row stays zero)."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


@dataclass(frozen=True)
class Clustering:
    assignment: np.ndarray  # (n,) int32 cluster of each row, 0..k-1 (k-means' own numbering)
    centres: np.ndarray  # (k, d) float32 unit centre directions, in the clustering space
    space: np.ndarray  # (n, d) float32 unit rows the clustering worked in
    k: int
    silhouette: float
    silhouettes: dict[int, float]
    method: str


def cluster_unit_vectors(unit: np.ndarray, settings: ModeSettings = ModeSettings()) -> Clustering:
    """Cluster (n, F) unit rows by cosine, k chosen by silhouette (see the module docstring)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.metrics import silhouette_score

    n, f = unit.shape
    if n < MIN_FAILURES:
        raise TooFewFailures(f"{n} misclassified samples; failure modes need at least {MIN_FAILURES}")
    rng = np.random.default_rng(settings.seed)
    fit_rows = np.sort(rng.choice(n, settings.max_fit, replace=False)) if n > settings.max_fit else np.arange(n)
    space, projected = unit, ""
    if f > settings.max_dims:
        svd = TruncatedSVD(settings.max_dims, algorithm="randomized", random_state=settings.seed)
        svd.fit(unit[fit_rows])
        space = unit_rows(_blocks(unit, svd.transform))  # (n, max_dims)
        projected = f", on {settings.max_dims} singular directions"
    fit = space[fit_rows]
    k_high = min(settings.k_max, len(fit) - 1, max(settings.k_min, len(fit) // settings.min_mean_size))
    k_low = min(settings.k_min, k_high)
    sil_rows = (
        np.sort(rng.choice(len(fit), settings.max_silhouette, replace=False))
        if len(fit) > settings.max_silhouette
        else np.arange(len(fit))
    )
    best, silhouettes = None, {}
    for k in range(k_low, k_high + 1):
        km = KMeans(k, n_init=settings.n_init, random_state=settings.seed).fit(fit)
        labels = km.labels_[sil_rows]
        score = float(silhouette_score(fit[sil_rows], labels, metric="cosine")) if len(set(labels)) > 1 else -1.0
        silhouettes[k] = score
        if best is None or score > best[0]:  # ties keep the smaller k
            best = (score, k, km)
    score, k, km = best
    centres = unit_rows(km.cluster_centers_)  # (k, d)
    assignment = _blocks(space, lambda rows: np.argmax(rows @ centres.T, axis=1)).astype(np.int32)
    method = (
        f"k-means on L2-normalised standardized profiles (cosine){projected}, "
        f"k={k} by silhouette (cosine) over k={k_low}..{k_high}"
    )
    return Clustering(assignment, centres, space, k, score, silhouettes, method)


def _blocks(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], rows: int = 8192) -> np.ndarray:
    """``fn`` applied to ``x`` a block of rows at a time (bounded temporaries), concatenated."""
    return np.concatenate([fn(x[a : a + rows]) for a in range(0, len(x), rows)]) if len(x) else fn(x)


# ---------------------------------------------------------------------------------------
# Description of the modes


@dataclass(frozen=True)
class SharedSets:
    """Per misclassified sample (rows as ``ids``): its surprise and expectation filters (within ``layer``)."""

    layer: str
    surprise: list[np.ndarray]  # each (s_i,) int64 filter indices
    expectation: list[np.ndarray]


def describe_modes(
    ids: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    profiles_sum: np.ndarray,
    clustering: Clustering,
    settings: ModeSettings = ModeSettings(),
    shared: SharedSets | None = None,
) -> list[FailureMode]:
    """The modes, largest first (ties: the one with the smallest member id first), renumbered 0..k-1.

    ``profiles_sum`` (k, F): the sum of the standardized profiles of each cluster's members
    (k-means numbering), for the mean profile's top filters.
    """
    from parasal.core import top_k_filters

    a = clustering.assignment
    sizes = np.bincount(a, minlength=clustering.k)
    first_id = np.full(clustering.k, np.iinfo(np.int64).max)
    np.minimum.at(first_id, a, ids)
    order = sorted((c for c in range(clustering.k) if sizes[c]), key=lambda c: (-sizes[c], first_id[c]))
    cos = np.einsum("nd,nd->n", clustering.space, clustering.centres[a])  # (n,) cosine to own centre
    modes = []
    for new_id, c in enumerate(order):
        rows = np.flatnonzero(a == c)  # ascending ids (ids are ascending)
        closest = rows[np.lexsort((ids[rows], -cos[rows]))][: settings.medoids]
        confusions = confusion_pairs(labels[rows].tolist(), predicted[rows].tolist())
        idx, z = top_k_filters(profiles_sum[c] / sizes[c], settings.top_filters)
        surprise, expectation = _shared(shared, rows, settings.shared)
        modes.append(
            FailureMode(
                id=new_id,
                size=int(sizes[c]),
                member_ids=ids[rows].astype(np.int64),
                medoid_ids=ids[closest].astype(np.int64),
                confusions=confusions,
                top_filters=list(zip(idx.tolist(), z.astype(float).tolist())),
                cohesion=float(cos[rows].mean()),
                shared_surprise=surprise,
                shared_expectation=expectation,
            )
        )
    return modes


def _shared(shared: SharedSets | None, rows: np.ndarray, keep: int):
    """(surprise, expectation) as [(layer, filter, members having it)], most shared first (ties: lower filter)."""
    if shared is None:
        return [], []
    out = []
    for sets in (shared.surprise, shared.expectation):
        counts = Counter(int(f) for r in rows.tolist() for f in np.unique(sets[r]).tolist())
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
        out.append([(shared.layer, f, n) for f, n in ranked])
    return out[0], out[1]


def failure_map(
    unit: np.ndarray, ids, labels, predicted, assignment, settings: ModeSettings = ModeSettings()
) -> FailureMap:
    """PCA (2 components, fitted on at most ``max_fit`` seeded rows) of the unit profiles."""
    from sklearn.decomposition import PCA

    n = len(unit)
    rng = np.random.default_rng(settings.seed + 1)
    fit_rows = np.sort(rng.choice(n, settings.max_fit, replace=False)) if n > settings.max_fit else np.arange(n)
    pca = PCA(2, random_state=settings.seed).fit(unit[fit_rows])
    xy = _blocks(unit, pca.transform).astype(np.float32)
    ratio = pca.explained_variance_ratio_
    method = (
        f"PCA of the L2-normalised standardized profiles of the misclassified samples "
        f"(x: {ratio[0]:.0%}, y: {ratio[1]:.0%} of the variance)"
    )
    return FailureMap(
        np.asarray(ids, np.int64),
        xy,
        np.asarray(labels, np.int64),
        np.asarray(predicted, np.int64),
        np.asarray(assignment, np.int32),
        method,
    )


def find_failure_modes(
    ids,
    profiles,
    labels,
    predicted,
    settings: ModeSettings = ModeSettings(),
    *,
    shared: SharedSets | None = None,
    with_map: bool = True,
) -> FailureModes:
    """Failure modes of misclassified samples given as arrays (rows in ascending ``ids`` order).

    ``profiles`` (n, F): their standardized profiles. Raises :class:`TooFewFailures` below
    ``MIN_FAILURES`` samples.
    """
    ids = np.asarray(ids, np.int64)
    profiles = np.asarray(profiles, np.float32)
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    if len(ids) and not np.all(np.diff(ids) > 0):
        raise ValueError("ids must be strictly increasing")
    unit = unit_rows(profiles)  # (n, F)
    clustering = cluster_unit_vectors(unit, settings)
    sums = np.zeros((clustering.k, profiles.shape[1]), np.float64)  # (k, F)
    np.add.at(sums, clustering.assignment, profiles)
    return _assemble(ids, labels, predicted, unit, sums, clustering, settings, shared, with_map)


def _assemble(ids, labels, predicted, unit, sums, clustering, settings, shared, with_map) -> FailureModes:
    modes = describe_modes(ids, labels, predicted, sums, clustering, settings, shared)
    # Renumbered as described: k-means' cluster c -> the rank of its mode.
    renumber = np.full(clustering.k, -1, np.int32)
    for mode in modes:
        renumber[clustering.assignment[np.searchsorted(ids, mode.member_ids[0])]] = mode.id
    assignment = renumber[clustering.assignment]
    result = FailureModes(
        modes=modes,
        method=clustering.method,
        silhouette=clustering.silhouette,
        k=clustering.k,
        silhouettes=dict(clustering.silhouettes),
        num_misclassified=len(ids),
        num_unassigned=int(np.sum(assignment < 0)),
        ids=ids,
        assignment=assignment,
    )
    if with_map:
        result = dataclasses.replace(result, map=failure_map(unit, ids, labels, predicted, assignment, settings))
    return result


# ---------------------------------------------------------------------------------------
# From a bundle


def bundle_failure_modes(
    bundle, settings: ModeSettings = ModeSettings(), *, shared: bool = True, with_map: bool = True, block: int = 4096
) -> FailureModes:
    """The failure modes of an open bundle's misclassified samples.

    Profiles are read ``block`` rows at a time (float16 on disk -> float32). ``shared``:
    also count the members' surprise / expectation filters where the bundle has reference
    data (skipped otherwise).
    """
    ids = np.asarray(bundle.ids[~np.asarray(bundle.correct, bool)], np.int64)  # ascending
    if len(ids) < MIN_FAILURES:
        raise TooFewFailures(
            f"bundle {bundle.name} has {len(ids)} misclassified samples; failure modes need at least {MIN_FAILURES}"
        )
    rows = bundle.rows_of(ids)
    labels = np.asarray(bundle.labels, np.int64)[rows]
    predicted = np.asarray(bundle.predicted, np.int64)[rows]
    f = bundle.num_filters
    unit = np.empty((len(ids), f), np.float32)  # (n, F)
    for a in range(0, len(ids), block):
        unit[a : a + block] = bundle.profiles(ids[a : a + block])
    # The sums for the mean profiles need the raw rows, re-read per block after clustering
    # rather than holding a second (n, F) copy.
    unit_in_place(unit)
    clustering = cluster_unit_vectors(unit, settings)
    sums = np.zeros((clustering.k, f), np.float64)
    for a in range(0, len(ids), block):
        np.add.at(sums, clustering.assignment[a : a + block], bundle.profiles(ids[a : a + block]))
    sets = _bundle_shared_sets(bundle, ids, labels) if shared else None
    return _assemble(ids, labels, predicted, unit, sums, clustering, settings, sets, with_map)


def unit_in_place(x: np.ndarray, block: int = 8192) -> None:
    """Scale the rows of float32 ``x`` (n, F) to length 1 in place (zero rows stay zero)."""
    for a in range(0, len(x), block):
        part = x[a : a + block]
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        part /= np.where(norms > 0, norms, 1.0)


def _bundle_shared_sets(bundle, ids: np.ndarray, labels: np.ndarray, block: int = 4096) -> SharedSets | None:
    """The members' surprise / expectation filters at the bundle's thresholds; None without reference data."""
    if not getattr(bundle, "has_reference", False):
        return None
    from parasal.core import surprise_expectation

    ref = bundle.reference
    surprise, expectation = [], []
    for a in range(0, len(ids), block):
        results = surprise_expectation(
            bundle.alpha(ids[a : a + block]), labels[a : a + block], ref.stats, high=ref.high, low=ref.low
        )
        surprise += [np.array([d.filter for d in r.surprise], np.int64) for r in results]
        expectation += [np.array([d.filter for d in r.expectation], np.int64) for r in results]
    return SharedSets(ref.layer, surprise, expectation)


def confusion_pairs(labels: Sequence[int], predicted: Sequence[int]) -> list[tuple[int, int, int]]:
    """(label, predicted, count) of every pair, most frequent first (ties: smaller pair first)."""
    pairs = Counter(zip(list(labels), list(predicted)))
    return [(t, p, n) for (t, p), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))]
