"""Finished shards (+ the previous generation, for appends) -> one complete generation directory.

Rank 0 only, streaming, one shard in memory at a time:

1. Statistics: the shards' RunningStats merged in shard order (Chan), or, for an append,
   the base generation's statistics unchanged (frozen: new data never moves µ/σ, so old
   vectors stay valid and comparable).
2. Each profile is standardized ((raw − µ)/σ), clipped to the float16 range and stored as
   a float16 row of ``profiles.npy`` (rows in id order; appends copy the old rows first,
   byte for byte). Metadata records go to LMDB and the label/prediction table to
   ``table.npz``; ``top_filters`` come from the stored (float16) z-scores.
3. The FAISS index is built from the stored rows (L2-normalised), or, for an append, the
   base generation's index is extended with the new rows without retraining.
4. The model's weights file (or TorchScript archive), when it has one, is copied in as
   ``model.pt`` (an append hard-links the base generation's copy), so the bundle serves
   on a machine without the original path; the fingerprint still checks it on load.
5. The manifest lists every file with its size and sha256.

With reference data (reference_pass.py), before step 2: ``reference.npz`` from the
reference shards (an append hard-links the base's: frozen statistics); step 2 then also
writes each row's α to ``alpha.npy`` and its β and surprise / expectation counts to
``table.npz``.

Everything is deterministic given the shards, so a resumed or multi-rank job produces the
same bytes as a clean single-process one (the manifest's timestamp and job info aside).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from parasal.core import RunningStats, top_k_filters

from . import faiss_index
from .durable import fsync_dir, fsync_file, write_npz
from .errors import DataSpecError
from .manifest import (
    ALPHA_FILE,
    DATA_FILES,
    FORMAT,
    FORMAT_VERSION,
    INDEX_FILE,
    META_FILE,
    MODEL_FILE,
    PROFILES_FILE,
    REFERENCE_FILE,
    REFERENCE_FILES,
    STATS_FILE,
    TABLE_FILE,
    file_entries,
    tool_versions,
    utc_now,
    write_manifest,
)
from .metadata import TOP_FILTERS, MetadataWriter, SampleMeta, encode_meta
from .reference_pass import ReferenceJob, SurpriseTables, reference_arrays, surprise_counts
from .shards import ShardPlan, WorkDir

__all__ = ["GenerationInputs", "assemble_generation", "FLOAT16_MAX"]

log = logging.getLogger(__name__)

FLOAT16_MAX = float(np.finfo(np.float16).max)
TABLE_COLUMNS = ("ids", "label", "predicted", "correct", "true_confidence", "predicted_confidence", "loss")


@dataclass
class GenerationInputs:
    """Everything a generation is made of besides the shards themselves."""

    generation: int
    plan: ShardPlan
    work: WorkDir
    ds: Any  # the Dataset the shards were computed from (for uris)
    dataset_entry: dict  # description, spec, limit, id range: appended to manifest["datasets"]
    model: dict  # {"spec", "fingerprint", "num_classes"}
    preprocessing: dict
    layout: list[dict]
    num_filters: int
    index_type: str
    nprobe: int | None = None
    train_size: int = 32768
    seed: int = 0
    job: dict = field(default_factory=dict)  # how it was run (batch size, world size, device): informational
    base: Any = None  # Bundle of the previous generation, for appends
    #: the weights file (or TorchScript archive) to keep in the generation; appends take the base's copy
    model_file: str | os.PathLike | None = None
    #: with reference data: the reference pass's shards, or (appends) the base's frozen statistics
    reference: ReferenceJob | None = None


@dataclass
class _Totals:
    """Step 1's result: the statistics every row is standardized with, and the counts."""

    stats: RunningStats
    n_old: int  # rows copied from the base generation
    n_new: int  # rows the shards add
    skipped: list[tuple[int, str]]  # (id, reason) of the samples the shards skipped
    surprise: SurpriseTables | None = None  # with reference data: what rows are compared with
    reference_entry: dict | None = None  # with reference data: manifest["reference"]


def assemble_generation(gen_dir: str | os.PathLike, inp: GenerationInputs) -> dict:
    """Write a complete generation into the (new, empty) ``gen_dir``; returns its manifest
    (the steps are the module docstring's)."""
    gen_dir = Path(gen_dir)
    gen_dir.mkdir(parents=True)
    totals = _statistics(inp)
    if inp.reference is not None:
        _write_reference(gen_dir, inp, totals)
    table = _write_rows(gen_dir, inp, totals)
    index_info = _write_index(gen_dir, inp, table["ids"])
    kept = _keep_model_file(gen_dir, inp)
    manifest = _manifest(gen_dir, inp, totals, table, index_info, kept)
    write_manifest(gen_dir, manifest)
    fsync_dir(gen_dir)
    return manifest


def _statistics(inp: GenerationInputs) -> _Totals:
    """1. The statistics and counts, from the shard summaries (no profile is loaded)."""
    shard_stats, n_new, skipped = [], 0, []
    for shard in inp.plan.shards:
        summary = inp.work.load_summary(shard)
        summary.check(inp.plan, 0)
        shard_stats.append(summary.stats)
        n_new += len(summary.ids)
        skipped += [(int(i), r) for i, r in zip(summary.skipped_ids, summary.skipped_reasons)]
    base = inp.base
    if base is None:
        stats = RunningStats.empty(inp.num_filters)
        for s in shard_stats:
            stats = stats.merge(s)
    else:
        stats = base.stats  # frozen: new data never moves µ/σ
    n_old = 0 if base is None else base.num_samples
    if n_old + n_new == 0:
        raise DataSpecError(
            f"no sample could be indexed: all {len(skipped)} were skipped "
            f"(first reason: {skipped[0][1] if skipped else 'none'})"
        )
    if base is None and stats.count < 2:
        log.warning("statistics from %d sample(s): σ is undefined and treated as 1", stats.count)
    return _Totals(stats, n_old, n_new, skipped)


def _write_reference(gen_dir: Path, inp: GenerationInputs, totals: _Totals) -> None:
    """Before 2: reference.npz (new statistics from the reference shards, or the base's
    linked unchanged) and the tables every row is compared with."""
    ref, base = inp.reference, inp.base
    if ref.frozen:
        base_ref = base.reference
        _link_or_copy(base_ref.path, gen_dir / REFERENCE_FILE)
        stats = base_ref.stats
        totals.reference_entry = dict(base_ref.info.entry)
    else:
        arrays, stats, skipped = reference_arrays(ref)
        write_npz(gen_dir / REFERENCE_FILE, arrays)
        totals.reference_entry = {
            **(ref.entry or {}),
            "num_samples": int(len(arrays["ids"])),
            "layer": ref.layer,
            "method": ref.method,
            "num_filters": int(stats.num_filters),
            "exemplars_per_filter": int(ref.exemplars_per_filter),
            "high": float(ref.high),
            "low": float(ref.low),
            "skipped": len(skipped),
            "from_generation": inp.generation,
        }
    empty = [c for c in range(stats.num_classes) if stats.counts[c] == 0]
    if empty:
        log.warning("the reference data has no sample of class(es) %s: their rows get no β or surprise counts", empty)
    totals.surprise = SurpriseTables(stats, ref.high, ref.low)


def _write_rows(gen_dir: Path, inp: GenerationInputs, totals: _Totals) -> dict[str, np.ndarray]:
    """2. profiles.npy, meta.lmdb, table.npz and stats.npz (and alpha.npy); returns the table's columns."""
    n = totals.n_old + totals.n_new
    profiles = np.lib.format.open_memmap(
        gen_dir / PROFILES_FILE, mode="w+", dtype=np.float16, shape=(n, inp.num_filters)
    )
    table = {
        c: np.zeros(n, np.bool_ if c == "correct" else (np.int64 if c in ("ids", "label", "predicted") else np.float64))
        for c in TABLE_COLUMNS
    }
    alpha = None
    if inp.reference is not None:
        n_alpha = inp.reference.num_filters
        alpha = np.lib.format.open_memmap(gen_dir / ALPHA_FILE, mode="w+", dtype=np.float32, shape=(n, n_alpha))
        table.update(
            beta=np.zeros(n, np.float32), num_surprise=np.zeros(n, np.int32), num_expectation=np.zeros(n, np.int32)
        )
    meta = MetadataWriter(gen_dir / META_FILE, n)
    row = 0 if inp.base is None else inp.base.copy_rows(profiles, table, meta, alpha=alpha)  # old rows first, as is
    for shard in inp.plan.shards:
        res = inp.work.load(shard)
        res.check(inp.plan, inp.num_filters)
        if len(res.ids):
            _write_shard(res, row, profiles, table, meta, inp, totals.stats)
            if alpha is not None:
                _write_alpha(res, row, alpha, table, totals.surprise)
            row += len(res.ids)
    meta.close()
    profiles.flush()
    del profiles
    fsync_file(gen_dir / PROFILES_FILE)
    if alpha is not None:
        alpha.flush()
        del alpha
        fsync_file(gen_dir / ALPHA_FILE)
    if not np.all(np.diff(table["ids"]) > 0):
        raise AssertionError("sample ids are not strictly increasing across rows")  # a bug, not a user error
    write_npz(gen_dir / TABLE_FILE, table)
    write_npz(gen_dir / STATS_FILE, totals.stats.to_arrays())
    return table


def _write_shard(
    res, row: int, profiles: np.ndarray, table: dict, meta: MetadataWriter, inp: GenerationInputs, stats: RunningStats
) -> None:
    """One shard's rows from ``row`` on: standardized float16 profiles, table, metadata."""
    m = len(res.ids)
    z = stats.standardize(res.raw.astype(np.float32))  # (m, F) float32
    z16 = np.clip(z, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
    profiles[row : row + m] = z16
    idx, vals = top_k_filters(z16.astype(np.float32), TOP_FILTERS)  # (m, 10): from the stored precision
    correct = res.predicted == res.label
    block = {
        "ids": res.ids,
        "label": res.label,
        "predicted": res.predicted,
        "correct": correct,
        "true_confidence": res.true_confidence,
        "predicted_confidence": res.predicted_confidence,
        "loss": res.loss,
    }
    for c in TABLE_COLUMNS:
        table[c][row : row + m] = block[c]
    for j in range(m):
        sample_id = int(res.ids[j])
        meta.put(
            sample_id,
            encode_meta(
                SampleMeta(
                    id=sample_id,
                    uri=inp.ds.uri(sample_id - inp.plan.id_offset),
                    label=int(res.label[j]),
                    predicted=int(res.predicted[j]),
                    true_confidence=float(res.true_confidence[j]),
                    predicted_confidence=float(res.predicted_confidence[j]),
                    loss=float(res.loss[j]),
                    correct=bool(correct[j]),
                    top_filters=list(zip(idx[j].tolist(), vals[j].tolist())),
                )
            ),
        )


def _write_alpha(res, row: int, alpha: np.ndarray, table: dict, surprise: SurpriseTables) -> None:
    """One shard's α rows and their β / surprise / expectation columns (against the reference tables)."""
    m = len(res.ids)
    if res.alpha is None or res.alpha.shape != (m, alpha.shape[1]):
        raise AssertionError(f"shard {res.shard.index} has no α of {alpha.shape[1]} filters")  # job params differ
    alpha[row : row + m] = res.alpha
    beta, num_surprise, num_expectation = surprise_counts(res.alpha, res.label, surprise)
    table["beta"][row : row + m] = beta
    table["num_surprise"][row : row + m] = num_surprise
    table["num_expectation"][row : row + m] = num_expectation


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link an immutable file of the base generation (copy across file systems)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    fsync_file(target)


def _write_index(gen_dir: Path, inp: GenerationInputs, ids: np.ndarray) -> dict:
    """3. index.faiss from the stored rows (an append extends the base's index without
    retraining); returns the manifest's index entry."""
    base = inp.base
    stored = np.load(gen_dir / PROFILES_FILE, mmap_mode="r")
    base_index = None if base is None else faiss.read_index(str(base.generation_path / INDEX_FILE))
    index, index_info = faiss_index.build_index(
        inp.index_type, stored, ids, train_size=inp.train_size, seed=inp.seed, nprobe=inp.nprobe, base=base_index
    )
    if base is not None:
        index_info = {**base.manifest.index.entry, "ntotal": int(index.ntotal)}
    del stored
    faiss_index.write_index(index, gen_dir / INDEX_FILE)
    del index
    fsync_dir(gen_dir)
    return index_info


def _keep_model_file(gen_dir: Path, inp: GenerationInputs) -> bool:
    """4. ``model.pt``: the base generation's copy (hard-linked: generations are never
    modified), else a copy of the user's file (copied: the user may overwrite it). Returns
    whether the generation keeps one."""
    target = gen_dir / MODEL_FILE
    base_copy = None if inp.base is None else inp.base.generation_path / MODEL_FILE
    if base_copy is not None and base_copy.is_file():
        _link_or_copy(base_copy, target)  # generations are never modified
        return True
    if inp.model_file:
        shutil.copyfile(inp.model_file, target)
        fsync_file(target)
        return True
    return False


def _manifest(
    gen_dir: Path, inp: GenerationInputs, totals: _Totals, table: dict, index_info: dict, kept_model: bool
) -> dict:
    """5. The manifest dict (the JSON written to disk), listing every file's size and sha256."""
    base, plan, skipped = inp.base, inp.plan, totals.skipped
    skipped_rows = [{"id": i, "uri": inp.ds.uri(i - plan.id_offset), "reason": r} for i, r in sorted(skipped)]
    datasets = ([] if base is None else [d.entry for d in base.manifest.datasets]) + [
        {**inp.dataset_entry, "generation": inp.generation, "indexed": totals.n_new, "skipped": len(skipped)}
    ]
    old_skipped = [] if base is None else [s.to_dict() for s in base.manifest.skipped]
    if base is None:
        statistics = {"count": int(totals.stats.count), "from_generation": inp.generation, "frozen_since": None}
    else:
        old = base.manifest.statistics
        statistics = {**old, "frozen_since": old.get("frozen_since") or inp.generation}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generation": inp.generation,
        "parent_generation": None if base is None else base.generation,
        "created": utc_now(),
        "model": {**inp.model, "file": MODEL_FILE} if kept_model else inp.model,
        "preprocessing": inp.preprocessing,
        "layout": inp.layout,
        "num_filters": inp.num_filters,
        "datasets": datasets,
        "statistics": statistics,
        "counts": {
            "samples": totals.n_old + totals.n_new,
            "misclassified": int((~table["correct"]).sum()),
            "skipped": len(old_skipped) + len(skipped),
        },
        "next_id": int(plan.id_offset + plan.id_span),
        "index": index_info,
        "skipped": old_skipped + skipped_rows,
        "versions": tool_versions(),
        "job": inp.job,
        "files": file_entries(
            gen_dir,
            DATA_FILES + ((MODEL_FILE,) if kept_model else ()) + (REFERENCE_FILES if totals.reference_entry else ()),
        ),
        **({"reference": totals.reference_entry} if totals.reference_entry is not None else {}),
    }
