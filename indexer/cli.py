"""`parasal index`: build a saliency bundle, or append data to one.

    parasal index --model demo-fashion --data fashion-mnist:test --out bundles/fashion
    parasal index --model torchvision:resnet50 --weights r50.pth --data imagenet-val/ --out bundles/r50 \\
                  --index-type PCA256,IVF1024,PQ32 --device cuda
    parasal index --append-to bundles/fashion --data more-images/
    parasal index --model demo-fashion --data fashion-mnist:test --reference-data fashion-mnist:train --out bundles/f
    torchrun --nproc-per-node 4 -m parasal.indexer --model ... --data ... --out ...

Rerunning an interrupted command resumes from its finished shards. User errors print one
line on stderr and exit with status 2; an interruption exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .errors import IndexerError
from .preprocessing import parse_size

__all__ = ["main", "build_parser", "job_from_args"]

PROG = "parasal index"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the whole usage block)
        self.exit(2, f"{PROG}: error: {message} (see {PROG} --help)\n")


def _floats(values: Sequence[str] | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                try:
                    out.append(float(part))
                except ValueError:
                    raise IndexerError(f"not a number: {part!r}") from None
    return tuple(out)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Index a dataset's parameter-saliency profiles into a bundle "
        "(FAISS index + LMDB metadata + statistics).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Model specs: demo-fashion | torchvision:<arch> --weights FILE | torchscript:PATH or *.pt | "
        "package.module:factory [--weights FILE] (its module importable: PYTHONPATH, to index and to serve).\n"
        "Data specs: fashion-mnist:test|train | an image-folder directory | a path,label CSV | "
        "package.module:factory returning a dataset of (image, label).",
    )
    what = p.add_argument_group("what to index")
    what.add_argument("--model", help="model spec (not with --append-to)")
    what.add_argument("--weights", help="state dict for torchvision:/factory specs, or to replace demo-fashion's")
    what.add_argument(
        "--data",
        required=True,
        help="data spec: fashion-mnist:test|train, an image folder (one subfolder per class), a path,label CSV, "
        "or package.module:factory returning a dataset of (image, label) (a PIL image or an uint8 / [0, 1] "
        "float array or tensor; the preprocessing below applies)",
    )
    what.add_argument(
        "--limit",
        type=int,
        help="index a random sample of N samples, stratified by label (seeded by --seed); ids stay the "
        "samples' dataset indices",
    )
    what.add_argument(
        "--sample",
        choices=["stratified", "first"],
        default="stratified",
        help="how --limit picks its N samples: stratified (default) or first (the first N in dataset order: "
        "an image folder's first classes only)",
    )
    what.add_argument(
        "--classes",
        metavar="FILE|a,b,c",
        help="class order (class index = position): a file with one name a line, or names separated by "
        "commas; it must name every subfolder of an image folder. Default: the folder's classes.txt, else the "
        "model's own class names when they name every subfolder, else the sorted subfolder names",
    )
    what.add_argument(
        "--max-skipped",
        type=float,
        default=None,
        metavar="FRACTION",
        help="publish nothing when more than this fraction of the samples is skipped (unreadable, label out "
        "of range, too large, ...; default 0.01)",
    )
    what.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="index image files that resolve outside the image folder or the CSV's directory "
        "(absolute paths, '..', symlinks); refused by default, recorded in the bundle",
    )
    what.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="skip images whose header declares more pixels (width x height) than this, undecoded "
        "(default 4096x4096, the server's limit)",
    )
    ref = p.add_argument_group(
        "reference data (surprise and expectation, Hartley et al.: per-class filter statistics, exemplars, "
        "per-sample α / β; not with --append-to, which keeps the bundle's frozen)"
    )
    ref.add_argument(
        "--reference-data",
        metavar="SPEC",
        help="data spec of the reference set (any of --data's kinds, e.g. fashion-mnist:train: the training "
        "split, as in the paper), preprocessed like --data",
    )
    ref.add_argument(
        "--reference-limit",
        type=int,
        metavar="N",
        help="use a random sample of N reference samples, stratified by label (seeded by --seed)",
    )
    ref.add_argument(
        "--reference-layer",
        metavar="NAME",
        help="the conv layer (module name) whose filters are scored (default: the last conv to run)",
    )
    ref.add_argument(
        "--reference-method",
        default="grad_amap",
        metavar="METHOD",
        help="filter importance: grad_amap (default, the paper's), taylor, taylor_class, l1, grad_cam, "
        "grad_cam_pp or random",
    )
    ref.add_argument(
        "--exemplars",
        type=int,
        default=6,
        metavar="K",
        help="reference samples kept per filter, overall and per class, highest importance first (default 6)",
    )
    where = p.add_argument_group("output")
    where.add_argument("--out", help="new bundle directory (must not exist unless --overwrite)")
    where.add_argument(
        "--append-to",
        dest="append_to",
        metavar="BUNDLE",
        help="add --data to this bundle as a new generation (frozen statistics)",
    )
    where.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    pre = p.add_argument_group("preprocessing (defaults depend on the model kind; recorded in the bundle)")
    pre.add_argument("--channels", choices=["L", "RGB"], help="convert images to 1 (L) or 3 (RGB) channels")
    pre.add_argument(
        "--resize", type=parse_size, metavar="N|none", help="resize the shorter side to N pixels (none: keep the size)"
    )
    pre.add_argument("--crop", type=parse_size, metavar="N|none", help="centre-crop to NxN (none: no crop)")
    pre.add_argument("--mean", nargs="+", help="per-channel mean, e.g. 0.485,0.456,0.406")
    pre.add_argument("--std", nargs="+", help="per-channel std")
    run = p.add_argument_group("execution")
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--shard-size", type=int, default=1024, help="samples per resumable shard (default 1024)")
    run.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    run.add_argument("--workers", type=int, default=0, help="image-decoding processes (default 0)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--keep-work-dir", action="store_true", help="keep <out>.partial/ shards after publishing")
    run.add_argument("--dist-timeout", type=float, default=None, help="seconds ranks wait at barriers (default 24 h)")
    idx = p.add_argument_group("FAISS index")
    idx.add_argument(
        "--index-type",
        default="Flat",
        help="FAISS factory string, inner-product metric (default Flat: exact), e.g. SQfp16, PCA256,IVF1024,PQ32",
    )
    idx.add_argument("--nprobe", type=int, help="IVF lists probed per query (default min(nlist, 16))")
    idx.add_argument("--train-size", type=int, default=32768, help="rows sampled to train the index (default 32768)")
    idx.add_argument(
        "--seed", type=int, default=0, help="seed of the --limit sample and of the index's training sample (default 0)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return p


def job_from_args(args: argparse.Namespace):
    import torch

    from .datachecks import DEFAULT_MAX_SKIPPED
    from .distributed import DEFAULT_TIMEOUT_S
    from .images import DEFAULT_MAX_IMAGE_PIXELS
    from .pipeline import IndexJob

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = {
        "channels": args.channels,
        "resize": args.resize,
        "crop": args.crop,
        "mean": _floats(args.mean),
        "std": _floats(args.std),
    }
    return IndexJob(
        data=args.data,
        out=args.out,
        append_to=args.append_to,
        model=args.model,
        weights=args.weights,
        preprocessing={k: v for k, v in overrides.items() if v is not None},
        limit=args.limit,
        sample=args.sample,
        classes=args.classes,
        max_skipped=DEFAULT_MAX_SKIPPED if args.max_skipped is None else args.max_skipped,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        device=device,
        index_type=args.index_type,
        nprobe=args.nprobe,
        train_size=args.train_size,
        seed=args.seed,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=not args.no_progress,
        keep_work_dir=args.keep_work_dir,
        dist_timeout_s=args.dist_timeout or DEFAULT_TIMEOUT_S,
        max_image_pixels=args.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS,
        allow_outside_root=args.allow_outside_root,
        reference_data=args.reference_data,
        reference_layer=args.reference_layer,
        reference_method=args.reference_method,
        reference_limit=args.reference_limit,
        exemplars=args.exemplars,
        notify=_say,
    )


def _say(message: str) -> None:
    """The job's notes (class mapping, sampling, slow paths), on stderr beside the warnings."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one at set-up: main() may run again
    with stderr replaced, as tests do)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_logging(verbose: bool) -> None:
    logger = logging.getLogger("parasal")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `parasal index` and `python -m parasal.indexer`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["index"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        from .pipeline import run_index

        result = run_index(job_from_args(args))
    except IndexerError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to resume from the finished shards", file=sys.stderr)
        return 130
    if result.manifest is not None:
        print(result.summary())
    return 0
