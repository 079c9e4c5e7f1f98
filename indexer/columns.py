"""A bundle's per-sample table as read-only numpy columns, for listing and export.

``table.npz`` holds one column per sample field (row order = ``Bundle.ids``); listing,
sorting and the Parquet export work on these arrays directly (no LMDB, no per-row Python).
This is the one place outside bundle.py that knows the column names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SampleColumns", "sample_columns"]


@dataclass(frozen=True, eq=False)
class SampleColumns:
    """Every column (n,) in row order; the reference columns are None without reference data."""

    ids: np.ndarray  # int64, strictly increasing
    label: np.ndarray  # int64
    predicted: np.ndarray  # int64
    correct: np.ndarray  # bool
    true_confidence: np.ndarray  # float64
    predicted_confidence: np.ndarray  # float64
    loss: np.ndarray  # float64
    beta: np.ndarray | None = None  # float32 (NaN: the class has no reference samples)
    num_surprise: np.ndarray | None = None  # int32
    num_expectation: np.ndarray | None = None  # int32

    def __len__(self) -> int:
        return len(self.ids)


def sample_columns(bundle) -> SampleColumns:
    """The columns of an open :class:`~parasal.indexer.Bundle` (shared with it: read-only)."""
    table = bundle._table  # the bundle's own read-only arrays (indexer-internal)
    reference = bundle.has_reference if hasattr(bundle, "has_reference") else False
    return SampleColumns(
        ids=table["ids"],
        label=table["label"],
        predicted=table["predicted"],
        correct=table["correct"].astype(bool, copy=False),
        true_confidence=table["true_confidence"],
        predicted_confidence=table["predicted_confidence"],
        loss=table["loss"],
        beta=table["beta"] if reference else None,
        num_surprise=table["num_surprise"] if reference else None,
        num_expectation=table["num_expectation"] if reference else None,
    )
