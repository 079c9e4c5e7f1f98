"""Which of a dataset's samples a job indexes: ``--limit`` as a seeded stratified sample,
and, for appends, without the images the bundle already holds.

A selection is a sorted array of dataset indices; ids stay ``id_offset + index`` (never
renumbered), so sample 17 of Fashion-MNIST's test split is id 17 whatever else is indexed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["select_samples", "sample_entry", "dataset_labels", "stratified_sample", "describe_sample"]


def select_samples(
    ds,
    *,
    limit: int | None,
    how: str = "stratified",
    seed: int = 0,
    exclude_uris: set[str] | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> np.ndarray | None:
    """The sorted dataset indices a job indexes, or None for all of them: without the
    samples whose uri is in ``exclude_uris`` (an append's bundle), then ``limit`` of the
    rest, a stratified sample (``how="stratified"``) or the first ones (``"first"``).
    ``say`` gets one line per choice made."""
    total = len(ds)
    pool = None  # None: every index
    if exclude_uris:
        keep = np.array([ds.uri(i) not in exclude_uris for i in range(total)], bool)
        if not keep.all():
            say(f"skipping {int((~keep).sum())} of {total} samples already in the bundle (same uri)")
            pool = np.flatnonzero(keep).astype(np.int64)
    size = total if pool is None else len(pool)
    if limit is None or int(limit) >= size:
        return pool
    everything = np.arange(total, dtype=np.int64) if pool is None else pool
    if how == "first":
        say(f"--limit {limit} --sample first: the first {limit} of {size} samples in dataset order")
        return everything[: int(limit)]
    labels = dataset_labels(ds, everything)
    chosen = stratified_sample(everything, labels, int(limit), seed)
    say(describe_sample(chosen, labels[np.searchsorted(everything, chosen)], size, seed))
    return chosen


def sample_entry(how: str, seed: int) -> dict:
    """How ``--limit`` chose, for the manifest's dataset entry."""
    if how == "first":
        return {"kind": "first"}
    return {"kind": "stratified", "by": "label", "seed": int(seed)}


def dataset_labels(ds, candidates: np.ndarray) -> np.ndarray:
    """The labels of ``candidates`` (dataset indices), without decoding images where the
    dataset keeps a label array."""
    labels = getattr(ds, "labels", None)
    if labels is not None and len(labels) == len(ds):
        return np.asarray(labels, dtype=np.int64)[candidates]
    return np.asarray([ds.label(int(i)) for i in candidates], dtype=np.int64)


def stratified_sample(candidates: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of ``candidates`` (sorted dataset indices), each label keeping its share
    (largest remainder: shares differ from exact by less than one sample), drawn with
    ``np.random.default_rng(seed)``; sorted. All of them when ``n >= len(candidates)``."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if n >= len(candidates):
        return candidates
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = counts * (n / len(candidates))
    take = np.floor(exact).astype(np.int64)
    # The samples floor() left over go to the labels with the largest remainders (ties: smaller label).
    order = np.lexsort((values, -(exact - take)))
    take[order[: n - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(candidates[inverse == k], size=int(t), replace=False) for k, t in enumerate(take) if t]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def describe_sample(chosen: np.ndarray, labels_of_chosen: np.ndarray, total: int, seed: int) -> str:
    """One line for the output: how many, of how many, per label."""
    values, counts = np.unique(labels_of_chosen, return_counts=True)
    per = ", ".join(f"{int(v)}: {int(c)}" for v, c in zip(values[:12], counts[:12]))
    more = f", ... ({len(values)} labels)" if len(values) > 12 else ""
    return (
        f"--limit {len(chosen)}: a stratified random sample of {len(chosen)} of {total} samples "
        f"(seed {seed}; per label {per}{more}); ids are the samples' dataset indices"
    )
