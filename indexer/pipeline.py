"""`parasal index` as a function: an :class:`IndexJob` in, a published bundle out.

Order of work (every rank runs the same code; see distributed.py):

1. cheap checks first: output path, model spec, data spec, FAISS factory string, and a
   preflight decode + forward (profiling.py) — all user errors surface before any work;
2. rank 0 prepares the work directory ``<out>.partial/`` (reusing finished shards of the
   same job, see shards.py); barrier;
3. each rank computes its shards (``j % world_size == rank``), writing each atomically;
   rerunning the same command after a crash (or kill -9) skips finished shards; barrier;
4. rank 0 assembles the generation (assemble.py) under a hidden name and publishes it
   with a rename (manifest.py describes the layout), then removes the work directory.

Before any work rank 0 prints (``IndexJob.notify``) the class -> index mapping and how the
samples were chosen; after the shards, it refuses to publish when more than
``max_skipped`` of them were skipped, and after publishing it warns when the error rate is
implausible (datachecks.py).

Appends (``append_to``) take the model, preprocessing and frozen statistics from the
bundle's current generation, skip images whose uri the bundle already holds, give new
samples ids from the bundle's ``next_id`` on, and
publish generation N+1 by replacing ``CURRENT``. Rank 0 holds the bundle's append lock
throughout and first recovers what a killed run of the same append left (appends.py): a
re-run after a kill anywhere gives the bundle of one clean append, and re-running a
finished append changes nothing.

With ``reference_data`` (reference_setup.py, reference_pass.py) every indexed row also
gets its filter importance α, and the ranks compute the reference set's α in shards of
their own after the profiles; rank 0 turns them into the class-filter statistics and
exemplars while assembling. An append to a bundle with reference data computes α for
its new rows and keeps the statistics frozen.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import datachecks, faiss_index
from .appends import AppendLock, publish_append, published_entry, recover, request_key
from .assemble import GenerationInputs, assemble_generation
from .distributed import DEFAULT_TIMEOUT_S, World, init_world
from .durable import fsync_dir
from .errors import DataSpecError, IndexerError, ModelSpecError, OutputExists
from .images import DEFAULT_MAX_IMAGE_PIXELS
from .manifest import (
    FORMAT_VERSION,
    META_FILE,
    generation_name,
    is_bundle_dir,
    read_manifest,
    resolve_generation,
    verify_files,
    write_current,
)
from .metadata import stored_uris
from .models import LoadedModel, load_model, load_model_from_manifest
from .profiling import ProfileEngine, compute_shard, preflight
from .reference_pass import DEFAULT_EXEMPLARS, ReferenceJob
from .reference_setup import (
    check_reference_options,
    check_reference_skipped,
    choose_importance,
    compute_reference,
    prepare_reference,
)
from .sampling import sample_entry, select_samples
from .shard_loop import run_shards
from .shards import SHARD_FORMAT, ShardPlan, WorkDir

__all__ = ["IndexJob", "IndexResult", "run_index", "work_dir_for"]

log = logging.getLogger(__name__)


@dataclass
class IndexJob:
    """One `parasal index` invocation. Exactly one of ``out`` (new bundle) or ``append_to``."""

    data: str
    out: str | os.PathLike | None = None
    append_to: str | os.PathLike | None = None
    model: str | None = None  # required with out; taken from the bundle with append_to
    weights: str | os.PathLike | None = None
    preprocessing: dict = field(default_factory=dict)  # overrides: channels, resize, crop, mean, std
    #: index a seeded (``seed``) sample of ``limit`` samples, stratified by label (ids stay dataset indices)
    limit: int | None = None
    #: how ``limit`` picks: "stratified" (default) or "first" (the first ``limit`` in dataset order)
    sample: str = "stratified"
    #: class order: a file (one name a line), "a,b,c" or a list; default: classes.txt, the
    #: model's (or, for appends, the bundle's) class names when they name every subfolder, else sorted subfolders
    classes: str | list[str] | None = None
    #: refuse to publish when more than this fraction of the samples is skipped
    max_skipped: float = datachecks.DEFAULT_MAX_SKIPPED
    batch_size: int = 64
    shard_size: int = 1024
    device: str = "cpu"  # "cpu" or "cuda" (each rank uses cuda:LOCAL_RANK)
    index_type: str = faiss_index.DEFAULT_INDEX_TYPE  # FAISS factory string
    nprobe: int | None = None  # IVF probes at search time (default min(nlist, 16))
    train_size: int = 32768  # rows sampled (seeded) to train indexes that need training
    seed: int = 0
    overwrite: bool = False
    workers: int = 0  # DataLoader processes decoding images (0: decode in the main process)
    progress: bool = True
    keep_work_dir: bool = False
    dist_timeout_s: float = DEFAULT_TIMEOUT_S
    #: images whose header declares more pixels (width x height) are skipped, undecoded
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    #: index file samples that resolve outside the dataset's folder (recorded: readers honour it)
    allow_outside_root: bool = False
    #: called with the shard index after each shard file is durably written (tests inject crashes here)
    on_shard_written: Callable[[int], None] | None = None
    #: surprise and expectation (Hartley et al.): the data spec of the reference set whose class-filter
    #: statistics and exemplars the bundle keeps (e.g. fashion-mnist:train); None: none (not with append_to)
    reference_data: str | None = None
    reference_layer: str | None = None  # the conv layer α is computed on; default: the last to run
    reference_method: str = "grad_amap"  # core.IMPORTANCE_METHODS
    #: a seeded (``seed``) stratified sample of this many reference samples; None: all of them
    reference_limit: int | None = None
    exemplars: int = DEFAULT_EXEMPLARS  # top reference samples kept per filter, overall and per class
    #: like on_shard_written, for the reference shards
    on_reference_shard_written: Callable[[int], None] | None = None
    #: rank 0's notes to the user (class mapping, sampling, slow paths); default: logged at INFO
    notify: Callable[[str], None] | None = None


@dataclass
class IndexResult:
    bundle: Path
    generation: int
    samples: int  # rows in the published generation (all generations' samples)
    misclassified: int
    skipped: int
    new_samples: int  # rows this job added
    computed_samples: int  # samples this rank computed in this run (not resumed)
    resumed_shards: int
    seconds: float
    rank: int = 0
    manifest: dict | None = None  # None on ranks other than 0

    def summary(self) -> str:
        if self.manifest is None:
            return f"rank {self.rank}: computed {self.computed_samples} samples in {self.seconds:.1f} s"
        return (
            f"indexed {self.samples} samples ({self.misclassified} misclassified, {self.skipped} skipped) "
            f"in {self.seconds:.1f} s -> {self.bundle} ({generation_name(self.generation)})"
        )


def work_dir_for(bundle_path: str | os.PathLike) -> Path:
    p = Path(os.path.abspath(bundle_path))
    return p.with_name(p.name + ".partial")


@dataclass
class _Prepared:
    """What every rank agrees on before computing: the model, the data and the shard plan."""

    loaded: LoadedModel
    ds: object  # the Dataset
    num_samples: int  # in the selection (after duplicates and --limit)
    index_type: str
    engine: ProfileEngine
    check: object  # preflight's answer: input shape, number of classes
    plan: ShardPlan
    work: WorkDir
    reference: ReferenceJob | None = None  # with reference data (frozen for an append)
    reference_check: object = None  # the reference data's preflight


def run_index(job: IndexJob) -> IndexResult:
    """Run one indexing job (every rank of a torchrun job calls this): check it, compute the
    shards this rank owns (resuming finished ones), and on rank 0 assemble and publish the
    generation, then remove the work directory."""
    t0 = time.perf_counter()
    _check_job(job)
    append = job.append_to is not None
    if append:
        resolve_generation(job.append_to)  # BundleCorrupt now for a path that is no bundle
    else:
        _check_out(Path(job.out), job.overwrite)
    ds = _open_data(job)
    device = _device(job.device)
    world = init_world(device, job.dist_timeout_s)
    try:
        with AppendLock(job.append_to) if append and world.is_main else contextlib.nullcontext():
            return _run(job, ds, device, world, t0)
    finally:
        world.close()


def _run(job: IndexJob, ds, device: str, world: World, t0: float) -> IndexResult:
    """run_index's steps, with the append lock held on rank 0."""
    append = job.append_to is not None
    if device == "cuda":
        device = f"cuda:{world.local_rank}"
    request = request_key(ds, _request_options(job, device)) if append else None
    if append:
        if world.is_main:
            recover(job.append_to, request)
        world.barrier()  # every rank then sees the recovered CURRENT
    base_gen, base_manifest = _base_generation(job)
    if append and published_entry(base_manifest, request) is not None:
        return _already_published(job, world, base_manifest, request, t0)
    notes: list[str] = []  # said once the checks passed: a user error stays one line
    prep = _prepare(job, device, base_gen, base_manifest, ds, notes.append)
    if world.is_main:
        for note in notes:
            _notifier(job)(note)
    ref_work = None if prep.reference is None or prep.reference.frozen else prep.reference.work
    if world.is_main:
        prep.work.prepare()
        if ref_work is not None:
            ref_work.prepare()
    world.barrier()
    prep.work.check()
    if ref_work is not None:
        ref_work.check()
    computed, resumed = _compute(job, world, prep.engine, prep.ds, prep.plan, prep.work, prep.check)
    ref_computed, ref_resumed = compute_reference(job, world, prep.engine, prep.reference, prep.reference_check)
    computed, resumed = computed + ref_computed, resumed + ref_resumed
    world.barrier()
    if not world.is_main:
        target = Path(os.path.abspath(job.append_to if append else job.out))
        return IndexResult(target, 0, 0, 0, 0, 0, computed, resumed, time.perf_counter() - t0, world.rank)
    _check_skipped(job, prep)
    check_reference_skipped(job, prep.reference)
    inputs = _generation_inputs(job, prep, world, device, base_manifest)
    if append:
        inputs.dataset_entry["request"] = request  # how a re-run knows it was published
        bundle_path, generation, manifest = publish_append(Path(job.append_to), base_gen, inputs)
    else:
        bundle_path, generation, manifest = _publish_new(Path(job.out), inputs, job.overwrite)
    if not job.keep_work_dir:
        prep.work.remove()
    _warn_error_rate(manifest, base_manifest, prep)
    c = manifest["counts"]
    return IndexResult(
        bundle_path,
        generation,
        c["samples"],
        c["misclassified"],
        c["skipped"],
        manifest["datasets"][-1]["indexed"],
        computed,
        resumed,
        time.perf_counter() - t0,
        0,
        manifest,
    )


def _request_options(job: IndexJob, device: str) -> dict:
    """The options besides the data that change an append's rows (appends.request_key)."""
    return {
        "limit": job.limit,
        **({"sample": job.sample, "sample_seed": int(job.seed)} if job.limit is not None else {}),
        "batch_size": int(job.batch_size),
        "shard_size": int(job.shard_size),
        "device": torch.device(device).type,
        "max_image_pixels": int(job.max_image_pixels),
    }


def _already_published(job: IndexJob, world: World, manifest: dict, request: str, t0: float) -> IndexResult:
    """A re-run of an append the bundle already holds: finish its clean-up, report it."""
    root = Path(os.path.abspath(job.append_to))
    entry = published_entry(manifest, request)
    if world.is_main:
        log.warning(
            "%s already holds this append (generation %d: same data and options); nothing to do",
            root,
            entry.get("generation", manifest["generation"]),
        )
        if not job.keep_work_dir:
            shutil.rmtree(work_dir_for(root), ignore_errors=True)
    c = manifest["counts"]
    return IndexResult(
        root,
        int(manifest["generation"]),
        c["samples"],
        c["misclassified"],
        c["skipped"],
        int(entry.get("indexed", 0)),
        0,
        0,
        time.perf_counter() - t0,
        world.rank,
        manifest if world.is_main else None,
    )


def _base_generation(job: IndexJob) -> tuple[Path | None, dict | None]:
    """For an append, the current generation and its manifest (sizes checked); for a new
    bundle, (None, None)."""
    if job.append_to is None:
        return None, None
    base_gen = resolve_generation(job.append_to)
    base_manifest = read_manifest(base_gen)
    verify_files(base_gen, base_manifest, "size")
    return base_gen, base_manifest


def _prepare(job: IndexJob, device: str, base_gen: Path | None, base_manifest: dict | None, ds, say) -> _Prepared:
    """Load the model (the base's for an append), settle the class order and the samples
    (saying both), preflight one sample and lay out the shards and the work directory
    (not created yet)."""
    append = base_manifest is not None
    loaded = (
        load_model_from_manifest(base_manifest, generation_dir=base_gen)
        if append
        else load_model(job.model, job.weights, job.preprocessing)
    )
    ds = _settle_classes(job, ds, loaded, base_manifest, say)
    indices = _select(job, ds, base_gen, say)
    n = len(ds) if indices is None else len(indices)
    F_ = loaded.layout.num_filters
    index_type = base_manifest["index"]["type"] if append else faiss_index.canonical_index_type(job.index_type)
    if not append:
        faiss_index.check_index_type(index_type, F_, n)
    engine = ProfileEngine(loaded, device)
    check = preflight(engine, ds, n, indices)
    if engine.use_reference:
        say(engine.reference_reason)
    if check.upsampling and not {"resize", "crop"} & set(job.preprocessing):  # a default the user did not pick
        say(f"warning: {check.upsampling}")
    choose_importance(job, engine, check, base_manifest, say)  # then every row also gets α
    id_offset = int(base_manifest["next_id"]) if append else 0
    plan = ShardPlan(n, job.shard_size, id_offset, indices)
    work_path = work_dir_for(job.append_to if append else job.out)
    params = _job_params(job, loaded, ds, plan, device, check, base_manifest)
    if engine.importance_of is not None:  # only then: other jobs keep the keys (and shards) they had
        params["importance"] = list(engine.importance_of)
    work = WorkDir(work_path, params)
    reference = prepare_reference(job, engine, ds, loaded, check, work_path, base_manifest, say)
    ref_check = None if reference is None or reference.frozen else check
    return _Prepared(loaded, ds, n, index_type, engine, check, plan, work, reference, ref_check)


def _notifier(job: IndexJob) -> Callable[[str], None]:
    return job.notify or (lambda message: log.info("%s", message))


def _settle_classes(job: IndexJob, ds, loaded: LoadedModel, base_manifest: dict | None, say):
    """The dataset with its class order settled (see IndexJob.classes); says the mapping."""
    bundle_classes = None
    if base_manifest is not None and base_manifest.get("datasets"):
        bundle_classes = (base_manifest["datasets"][0].get("description") or {}).get("classes")
    candidates = [(bundle_classes, "the bundle's class names"), (loaded.classes, "the model's class names")]
    if job.classes is None:
        try:
            ds, note = datachecks.choose_classes(ds, candidates)
        except ValueError as e:
            raise DataSpecError(str(e)) from e
        if note:
            say(note)
    say(datachecks.class_mapping(ds))
    return ds


def _select(job: IndexJob, ds, base_gen: Path | None, say) -> np.ndarray | None:
    """The dataset indices to index (sorted), or None for all of them (sampling.py)."""
    exclude = stored_uris(base_gen / META_FILE) if base_gen is not None else None
    chosen = select_samples(ds, limit=job.limit, how=job.sample, seed=job.seed, exclude_uris=exclude, say=say)
    n = len(ds) if chosen is None else len(chosen)
    if n == 0 and exclude is not None and job.limit != 0:
        raise DataSpecError(
            f"all {len(ds)} samples of {job.data!r} are already in {job.append_to} (same uris); nothing to append"
        )
    if n == 0:
        raise DataSpecError(f"{job.data!r} has no samples to index" + (" (--limit 0)" if job.limit == 0 else ""))
    return chosen


def _check_skipped(job: IndexJob, prep: _Prepared) -> None:
    """Rank 0, before assembling: say what was skipped; DataSpecError above ``max_skipped``."""
    skipped = []
    for shard in prep.plan.shards:
        summary = prep.work.load_summary(shard)
        offset = prep.plan.id_offset
        skipped += [(prep.ds.uri(int(i) - offset), r) for i, r in zip(summary.skipped_ids, summary.skipped_reasons)]
    text, error = datachecks.check_skipped(skipped, prep.num_samples, float(job.max_skipped))
    if error:
        raise DataSpecError(error)
    if text:
        log.warning("%s", text)


def _warn_error_rate(manifest: dict, base_manifest: dict | None, prep: _Prepared) -> None:
    new = int(manifest["datasets"][-1]["indexed"])
    before = 0 if base_manifest is None else int(base_manifest["counts"]["misclassified"])
    wrong = int(manifest["counts"]["misclassified"]) - before
    warning = datachecks.error_rate_warning(wrong, new, prep.check.num_classes, datachecks.class_mapping(prep.ds))
    if warning:
        log.warning("%s", warning)


def _generation_inputs(
    job: IndexJob, prep: _Prepared, world: World, device: str, base_manifest: dict | None
) -> GenerationInputs:
    loaded, check = prep.loaded, prep.check
    # An append records the spec as the bundle was built (loaded.spec points at the base's copy).
    spec = base_manifest["model"]["spec"] if base_manifest is not None else loaded.spec
    return GenerationInputs(
        generation=0,
        plan=prep.plan,
        work=prep.work,
        ds=prep.ds,
        dataset_entry={
            "spec": job.data,
            "description": prep.ds.describe(),
            "limit": job.limit,
            "sample": None if job.limit is None else sample_entry(job.sample, job.seed),
            "id_offset": prep.plan.id_offset,
            "num_ids": prep.plan.id_span,
            "selected": prep.num_samples,
        },
        model={"spec": spec, "fingerprint": loaded.fingerprint, "num_classes": check.num_classes},
        model_file=loaded.model_file,
        preprocessing=_recorded_preprocessing(loaded, check),
        layout=loaded.layout.to_dict(),
        num_filters=loaded.layout.num_filters,
        index_type=prep.index_type,
        reference=prep.reference,
        nprobe=job.nprobe,
        train_size=job.train_size,
        seed=job.seed,
        job={
            "batch_size": job.batch_size,
            "shard_size": job.shard_size,
            "world_size": world.world_size,
            "device": str(torch.device(device).type),
            "saliency": "reference" if prep.engine.use_reference else "filter_saliency",
        },
    )


# ---------------------------------------------------------------------------------------


def _check_job(job: IndexJob) -> None:
    if (job.out is None) == (job.append_to is None):
        raise IndexerError("give exactly one of --out DIR (new bundle) or --append-to BUNDLE")
    if job.append_to is not None:
        given = [name for name, v in (("--model", job.model), ("--weights", job.weights)) if v]
        given += [f"--{k}" for k, v in job.preprocessing.items() if v is not None]
        if given:
            raise IndexerError(f"--append-to uses the bundle's own model and preprocessing; drop {', '.join(given)}")
        if job.overwrite:
            raise IndexerError("--overwrite does not apply to --append-to (appends publish a new generation)")
    elif not job.model:
        raise ModelSpecError("--model is required to build a new bundle (e.g. --model demo-fashion)")
    for name, value in (
        ("--batch-size", job.batch_size),
        ("--shard-size", job.shard_size),
        ("--max-image-pixels", job.max_image_pixels),
    ):
        if int(value) < 1:
            raise IndexerError(f"{name} must be at least 1, got {value}")
    if job.limit is not None and int(job.limit) < 0:
        raise IndexerError(f"--limit must be non-negative, got {job.limit}")
    if job.sample not in ("stratified", "first"):
        raise IndexerError(f"--sample must be stratified or first, got {job.sample!r}")
    if not 0 <= float(job.max_skipped) <= 1:
        raise IndexerError(f"--max-skipped is a fraction of the samples, from 0 to 1; got {job.max_skipped}")
    check_reference_options(job)


def _check_out(out: Path, overwrite: bool) -> None:
    out = Path(os.path.abspath(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # `--out bundles/r18` in a fresh checkout
    except OSError as e:
        raise OutputExists(f"cannot create {out}: cannot create its parent directory {out.parent} ({e})") from e
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise OutputExists(f"cannot create {out}: no write permission in {out.parent}")
    if not out.exists():
        return
    if not overwrite:
        raise OutputExists(
            f"output {out} already exists; pass --overwrite to replace it (or --append-to to add data to a bundle)"
        )
    if not (is_bundle_dir(out) or (out.is_dir() and not any(out.iterdir()))):
        raise OutputExists(f"refusing to overwrite {out}: it is not a parasal bundle")


def _device(device: str) -> str:
    device = (device or "cpu").lower()
    if device not in ("cpu", "cuda"):
        raise IndexerError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise IndexerError("--device cuda, but torch sees no CUDA device")
    return device


def _open_data(job: IndexJob):
    from .datasets import open_dataset, parse_class_list

    try:
        classes = None if job.classes is None else parse_class_list(job.classes)
        return open_dataset(
            job.data, classes=classes, max_pixels=job.max_image_pixels, allow_outside_root=job.allow_outside_root
        )
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        raise DataSpecError(str(e)) from e


def _recorded_preprocessing(loaded: LoadedModel, check) -> dict:
    """The preprocessing as the server must replay it, with ``input_shape`` pinned to the
    shape every indexed sample had (others were skipped), so uploads can be checked the same way."""
    pre = loaded.preprocessing.to_dict()
    pre["input_shape"] = list(check.input_shape)
    return pre


def _job_params(job, loaded, ds, plan: ShardPlan, device, check, base_manifest) -> dict:
    """Everything that changes shard contents (see shards.py)."""
    selection = None
    if plan.indices is not None:
        selection = hashlib.sha256(np.asarray(plan.indices, np.int64).tobytes()).hexdigest()
    return {
        "format_version": FORMAT_VERSION,
        "shard_format": SHARD_FORMAT,
        "model_fingerprint": loaded.fingerprint,
        "layout": loaded.layout.to_dict(),
        "preprocessing": loaded.preprocessing.to_dict(),
        "input_shape": list(check.input_shape),
        "data": ds.describe(),
        "num_samples": plan.num_samples,
        "selection": selection,  # sha256 of the selected dataset indices (None: all of them)
        "id_offset": plan.id_offset,
        "batch_size": int(job.batch_size),
        "shard_size": int(job.shard_size),
        "device": torch.device(device).type,
        "max_image_pixels": int(job.max_image_pixels),  # which samples are skipped
        "base": None
        if base_manifest is None
        else {"generation": base_manifest["generation"], "manifest_sha256": base_manifest["manifest_sha256"]},
    }


def _compute(job: IndexJob, world: World, engine, ds, plan: ShardPlan, work: WorkDir, check) -> tuple[int, int]:
    """This rank's profile shards (resuming finished ones): (samples computed, shards resumed)."""

    def one(shard, on_samples):
        return compute_shard(
            engine, ds, shard, plan, check, batch_size=job.batch_size, workers=job.workers, on_samples=on_samples
        )

    return run_shards(plan, work, world, one, progress=job.progress, desc="indexing", on_written=job.on_shard_written)


def _remove_stale(parent: Path, prefix: str) -> None:
    """Remove ``<prefix><pid>-*`` directories left by a killed job whose process is gone."""
    for path in parent.glob(f"{prefix}*"):
        try:
            pid = int(path.name[len(prefix) :].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            log.info("removing %s, left by a job that was killed", path)
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def _publish_new(out: Path, inputs: GenerationInputs, overwrite: bool) -> tuple[Path, int, dict]:
    out = Path(os.path.abspath(out))
    _remove_stale(out.parent, f".{out.name}.staging-")
    _remove_stale(out.parent, f".{out.name}.old-")
    staging = out.with_name(f".{out.name}.staging-{os.getpid()}-{os.urandom(3).hex()}")
    try:
        inputs.generation = 1
        manifest = assemble_generation(staging / generation_name(1), inputs)
        write_current(staging, 1)
        fsync_dir(staging)
        if out.exists():
            _check_out(out, overwrite)  # it may have appeared while we worked
            trash = out.with_name(f".{out.name}.old-{os.getpid()}-{os.urandom(3).hex()}")
            os.rename(out, trash)
            os.rename(staging, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, out)
        fsync_dir(out.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out, 1, manifest
