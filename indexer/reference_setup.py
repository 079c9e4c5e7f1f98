"""The indexing job's side of ``--reference-data``: checks, the reference shard plan, the rank loop.

pipeline.py calls these in its own order: :func:`choose_importance` once the model and the
indexed data passed preflight (every indexed row then also gets α), :func:`prepare_reference`
(the reference data opened, its class order settled, ``--reference-limit`` applied and a
preflight of its own: every user error before any work), :func:`compute_reference` after
the profile shards (each rank its own reference shards, resumable), and on rank 0
:func:`check_reference_skipped` before assembling. What is computed is reference_pass.py's.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from . import datachecks
from .errors import DataSpecError, IndexerError, InputMismatch, ModelSpecError
from .profiling import Preflight, ProfileEngine, preflight
from .reference_pass import DEFAULT_HIGH, DEFAULT_LOW, ReferenceJob, ReferenceShardResult, compute_reference_shard
from .sampling import sample_entry, select_samples
from .shard_loop import run_shards
from .shards import SHARD_FORMAT, ShardPlan, WorkDir

__all__ = [
    "REFERENCE_DIR",
    "check_reference_options",
    "check_reference_skipped",
    "choose_importance",
    "compute_reference",
    "prepare_reference",
]

log = logging.getLogger(__name__)

REFERENCE_DIR = "reference"  # the reference shards' folder inside the work directory


def choose_importance(job, engine: ProfileEngine, check: Preflight, base_manifest: dict | None, say) -> bool:
    """Set ``engine``'s importance layer and method: an append's from its bundle (frozen),
    a new bundle's from ``--reference-layer`` (default: the last conv to run, said) and
    ``--reference-method``. Returns False (nothing set) for a job without reference data."""
    base_reference = None if base_manifest is None else base_manifest.get("reference")
    if base_reference is not None:
        layer, method = str(base_reference["layer"]), str(base_reference["method"])
    elif job.reference_data is not None:
        method = job.reference_method
        layer = job.reference_layer or _last_conv(engine, check)
        if not job.reference_layer:
            say(f"reference data: filter importance ({method}) of the last conv layer to run, {layer!r}")
    else:
        return False
    try:
        engine.set_importance(layer, method)
    except ValueError as e:
        raise ModelSpecError(f"--reference-layer: {e}") from e
    x = torch.zeros((1, *check.input_shape), dtype=torch.float32)
    try:  # a dry pass, so that a model filter_importance cannot hook fails now, not after the profiles
        engine.importance(x, torch.zeros(1, dtype=torch.int64), seed=0)
    except ValueError as e:
        raise InputMismatch(f"cannot compute the filter importance of layer {layer!r}: {e}") from e
    return True


def _last_conv(engine: ProfileEngine, check: Preflight) -> str:
    from parasal.core import last_conv_layer

    try:
        return last_conv_layer(engine.model, torch.zeros((1, *check.input_shape), device=engine.device))
    except ValueError as e:
        raise ModelSpecError(f"--reference-data: {e}") from e


def prepare_reference(
    job, engine: ProfileEngine, ds, loaded, check: Preflight, work_path: Path, base_manifest: dict | None, say
) -> ReferenceJob | None:
    """The reference half of the job (see the module docstring); None without reference data.
    An append to a bundle with reference data gets a frozen ReferenceJob (no shards)."""
    if engine.importance_of is None:
        return None
    layer, method = engine.importance_of
    base_reference = None if base_manifest is None else base_manifest.get("reference")
    common = {"layer": layer, "method": method, "num_filters": engine.importance_n, "num_classes": check.num_classes}
    if base_reference is not None:
        say(f"keeping the bundle's reference statistics ({base_reference['dataset']}, frozen)")
        return ReferenceJob(
            **common,
            exemplars_per_filter=int(base_reference["exemplars_per_filter"]),
            high=float(base_reference["high"]),
            low=float(base_reference["low"]),
        )
    ref_ds = _open_reference(job, ds, loaded, say)
    indices = select_samples(
        ref_ds,
        limit=job.reference_limit,
        how="stratified",
        seed=job.seed,
        say=lambda note: say("reference data: " + note.replace("--limit", "--reference-limit", 1)),
    )
    n = len(ref_ds) if indices is None else len(indices)
    if n == 0:
        raise DataSpecError(f"--reference-data {job.reference_data!r} has no samples")
    ref_check = preflight(engine, ref_ds, n, indices)
    if tuple(ref_check.input_shape) != tuple(check.input_shape):
        raise InputMismatch(
            f"--reference-data images preprocess to {_chw(ref_check.input_shape)} ({ref_check.first_uri}), "
            f"the indexed ones to {_chw(check.input_shape)}: both must feed the model the same way"
        )
    plan = ShardPlan(n, job.shard_size, 0, indices)
    selection = None if indices is None else hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()
    params = {
        "shard_format": SHARD_FORMAT,
        "kind": "reference",
        "model_fingerprint": loaded.fingerprint,
        "preprocessing": loaded.preprocessing.to_dict(),
        "input_shape": list(check.input_shape),
        "num_classes": check.num_classes,
        "data": ref_ds.describe(),
        "num_samples": n,
        "selection": selection,
        "importance": [layer, method],
        "batch_size": int(job.batch_size),
        "shard_size": int(job.shard_size),
        "device": torch.device(engine.device).type,
        "max_image_pixels": int(job.max_image_pixels),
    }
    entry = {
        "dataset": job.reference_data,
        "description": ref_ds.describe(),
        "limit": job.reference_limit,
        "sample": None if job.reference_limit is None else sample_entry("stratified", job.seed),
    }
    return ReferenceJob(
        **common,
        exemplars_per_filter=int(job.exemplars),
        high=DEFAULT_HIGH,
        low=DEFAULT_LOW,
        entry=entry,
        plan=plan,
        work=WorkDir(work_path / REFERENCE_DIR, params, result_type=ReferenceShardResult),
        ds=ref_ds,
    )


def _open_reference(job, ds, loaded, say):
    """The reference dataset, its classes in the indexed data's order (refused when they differ)."""
    from .datasets import open_dataset

    try:
        ref_ds = open_dataset(
            job.reference_data, max_pixels=job.max_image_pixels, allow_outside_root=job.allow_outside_root
        )
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        raise DataSpecError(f"--reference-data: {e}") from e
    indexed = getattr(ds, "classes", None)
    candidates = [(indexed, "the indexed data's class names"), (loaded.classes, "the model's class names")]
    try:
        ref_ds, note = datachecks.choose_classes(ref_ds, candidates)
    except ValueError as e:
        raise DataSpecError(f"--reference-data: {e}") from e
    if note:
        say(f"reference data: {note}")
    theirs = getattr(ref_ds, "classes", None)
    if indexed and theirs and list(theirs) != list(indexed)[: len(theirs)]:
        raise DataSpecError(
            f"--reference-data classes ({', '.join(theirs[:5])}, ...) are not the indexed data's "
            f"({', '.join(indexed[:5])}, ...) in the same order: a label must mean the same class in both"
        )
    return ref_ds


def _chw(shape) -> str:
    return "x".join(str(v) for v in shape) + " (CxHxW)"


def compute_reference(job, world, engine: ProfileEngine, ref: ReferenceJob, check: Preflight) -> tuple[int, int]:
    """This rank's reference shards (``j % world_size == rank``), skipping finished ones;
    returns (samples computed, shards resumed). A progress bar on rank 0, as for the profiles."""
    if ref is None or ref.frozen:
        return 0, 0

    def one(shard, on_samples):
        return compute_reference_shard(
            engine,
            ref.ds,
            shard,
            ref.plan,
            check,
            batch_size=job.batch_size,
            workers=job.workers,
            on_samples=on_samples,
        )

    return run_shards(
        ref.plan,
        ref.work,
        world,
        one,
        progress=job.progress,
        desc="reference",
        on_written=job.on_reference_shard_written,
    )


def check_reference_skipped(job, ref: ReferenceJob | None) -> None:
    """Rank 0, before assembling: say what of the reference set was skipped; refuse above ``max_skipped``."""
    if ref is None or ref.frozen:
        return
    skipped = []
    for shard in ref.plan.shards:
        res = ref.work.load(shard)
        skipped += [(ref.ds.uri(int(i)), r) for i, r in zip(res.skipped_ids, res.skipped_reasons)]
    text, error = datachecks.check_skipped(skipped, ref.plan.num_samples, float(job.max_skipped))
    if error:
        raise DataSpecError(f"--reference-data: {error}")
    if text:
        log.warning("reference data: %s", text)


def check_reference_options(job) -> None:
    """The job's reference options on their own (before anything is opened)."""
    from parasal.core import IMPORTANCE_METHODS

    given = [
        name
        for name, value in (
            ("--reference-layer", job.reference_layer),
            ("--reference-limit", job.reference_limit),
        )
        if value is not None
    ]
    if job.reference_data is None:
        if given:
            raise IndexerError(f"{', '.join(given)} need(s) --reference-data")
        return
    if job.append_to is not None:
        raise IndexerError(
            "--reference-data does not apply to --append-to: an append keeps the bundle's reference statistics "
            "frozen (its new samples are compared with them); build a new bundle to change the reference data"
        )
    if job.reference_method not in IMPORTANCE_METHODS:
        raise IndexerError(
            f"--reference-method must be one of {', '.join(IMPORTANCE_METHODS)}; got {job.reference_method!r}"
        )
    if int(job.exemplars) < 1:
        raise IndexerError(f"--exemplars must be at least 1, got {job.exemplars}")
    if job.reference_limit is not None and int(job.reference_limit) < 1:
        raise IndexerError(f"--reference-limit must be at least 1, got {job.reference_limit}")
