"""`parasal demo`: the whole service on the embedded Fashion-MNIST default, end to end.

1. index the Fashion-MNIST test split with `demo-fashion`, with the training split as
   reference data for surprise and expectation (reusing a bundle that matches),
2. start `parasal serve` on a free local port,
3. write the report `parasal report` writes for any bundle (parasal.demo.collect, through
   the SDK): misclassified samples of different confusion pairs with their nearest failures,
   top salient filters, input-space heatmaps, surprise and expectation filters; one
   fine-tuning and one pruning evaluation as operations, with progress; the dataset-level
   neighbor and β metrics,
4. stop the server cleanly.

Ctrl-C at any point stops the server (it is our child and gets SIGTERM in `finally`), and
the indexer only ever publishes complete bundles, so nothing half-done is left behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from parasal.client import Client

from .collect import ReportOptions, gather_report
from .report import ReportContent, write_report
from .serving import ServeError, serve_bundle

MODEL = "demo-fashion"


class DemoError(Exception):
    """A step of the demo failed in a way the message explains; no traceback needed."""


#: The demo's reference data for surprise and expectation (Hartley et al. use the training
#: split); None builds the bundle without it (`parasal demo --no-reference-data`).
REFERENCE_DATA: str | None = "fashion-mnist:train"


@dataclass
class DemoOptions:
    """Settings of one demo run; the defaults are what `make demo` does."""

    data: str = "fashion-mnist:test"
    limit: int | None = None  # index a stratified sample of N (tests use 1,000)
    reference_data: str | None = REFERENCE_DATA
    reference_limit: int | None = None  # a stratified sample of the reference data (tests)
    bundle_dir: Path = Path("bundles/demo-fashion-test")
    report_dir: Path = Path("demo-report")
    report: ReportOptions = field(default_factory=ReportOptions)


def run_demo(opts: DemoOptions) -> ReportContent:
    """Runs the demo; returns what the report shows (its summary is also printed)."""
    bundle_dir = _ensure_bundle(opts)
    from parasal.indexer import open_bundle

    report = dataclasses.replace(opts.report, title=opts.report.title or "parasal demo: where demo-fashion goes wrong")
    opts.report_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open_bundle(bundle_dir) as bundle, serve_bundle(bundle_dir, opts.report_dir / "server.log") as target:
            with Client(target, timeout=report.timeout) as client:
                content = gather_report(client, report, bundle=bundle)
    except ServeError as exc:
        raise DemoError(str(exc)) from exc
    page = write_report(opts.report_dir, content)
    print_summary(content, page)
    return content


# -- 1. the bundle ------------------------------------------------------------------------


#: Written into the root of every bundle the demo builds. The demo replaces only bundles
#: that carry it: a path holding anything else (a user's own bundle, any other files) is
#: refused, never deleted.
DEMO_MARKER = "BUILT-BY-PARASAL-DEMO"


def _ensure_bundle(opts: DemoOptions) -> Path:
    """Reuses ``opts.bundle_dir`` if it opens cleanly and was made by this model from this
    data; rebuilds it only if the demo built it; refuses anything else."""
    if opts.bundle_dir.exists():
        reason = _reuse_or_reason(opts)
        if reason is None:
            return opts.bundle_dir
        if not (opts.bundle_dir / DEMO_MARKER).is_file():
            raise DemoError(
                f"{opts.bundle_dir} exists and was not built by the demo ({reason}); refusing to replace it. "
                "Pass another --bundle-dir, or remove it yourself if it is yours to delete."
            )
        print(f"Rebuilding {opts.bundle_dir}: {reason}")
    _build_bundle(opts)
    (opts.bundle_dir / DEMO_MARKER).write_text(f"built by `parasal demo` from {opts.data} with {MODEL}\n")
    return opts.bundle_dir


def _reuse_or_reason(opts: DemoOptions) -> str | None:
    """None when the bundle at ``opts.bundle_dir`` is the one this run would build, else why not."""
    from parasal.indexer import BundleError, load_model, open_bundle

    try:
        with open_bundle(opts.bundle_dir, model=load_model(MODEL)) as b:
            if b.num_samples != _expected_samples(opts):
                return f"it holds {b.num_samples} samples, this run indexes {_expected_samples(opts)}"
            reason = _reference_mismatch(b, opts)
            if reason:
                return reason
            print(f"Reusing bundle {opts.bundle_dir} ({b.num_samples} samples).")
            return None
    except BundleError as exc:
        return str(exc)


def _build_bundle(opts: DemoOptions) -> None:
    cmd = [
        sys.executable,
        "-m",
        "parasal.indexer",
        "--model",
        MODEL,
        "--data",
        opts.data,
        "--out",
        str(opts.bundle_dir),
        "--overwrite",  # only reached for a missing path or a bundle the demo built
    ]
    if opts.limit:
        cmd += ["--limit", str(opts.limit)]
    if opts.reference_data:
        cmd += ["--reference-data", opts.reference_data]
        if opts.reference_limit:
            cmd += ["--reference-limit", str(opts.reference_limit)]
    print("Indexing:", " ".join(cmd[2:]))
    opts.bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    if subprocess.run(cmd).returncode != 0:
        raise DemoError(f"indexing failed (see the message above); command: {' '.join(cmd)}")


def _expected_samples(opts: DemoOptions, data: str | None = None, limit: int | None = None) -> int:
    from parasal.indexer import open_dataset

    n = len(open_dataset(data or opts.data))
    limit = opts.limit if data is None else limit
    return min(n, limit) if limit else n


def _reference_mismatch(b, opts: DemoOptions) -> str | None:
    """Why the bundle's reference data is not what this run asks for (None when it is)."""
    ref = b.reference
    if opts.reference_data is None:
        return None if ref is None else f"it has reference data ({ref.dataset}), this run builds none"
    if ref is None:
        return f"it has no reference data, this run uses {opts.reference_data}"
    wanted = _expected_samples(opts, opts.reference_data, opts.reference_limit)
    if ref.dataset != opts.reference_data or ref.num_samples != wanted:
        return (
            f"its reference data is {ref.num_samples} samples of {ref.dataset}, "
            f"this run uses {wanted} of {opts.reference_data}"
        )
    return None


# -- after the report ----------------------------------------------------------------------


def print_summary(content: ReportContent, page: Path) -> None:
    """The report's headline figures on the terminal."""
    names = content.class_names
    name = lambda c: names[c] if 0 <= c < len(names) else str(c)  # noqa: E731
    print("\n== parasal report ==")
    for key, value in content.summary.items():
        print(f"  {key:>20}: {value}")
    for q in content.queries:
        same = sum(1 for n in q.neighbors if {n.label, n.predicted} == {q.label, q.predicted})
        top = f"{q.top_filters[0][0]}[{q.top_filters[0][1]}] z={q.top_filters[0][2]:.1f}" if q.top_filters else "none"
        beta = f"; beta {q.surprise.beta:+.3g}" if q.surprise else ""
        print(
            f"  sample {q.id}: {name(q.label)} -> {name(q.predicted)}; top filter {top}{beta}; "
            f"{same}/{len(q.neighbors)} nearest failures share its confusion"
        )
    for space, m in (content.neighbors or {}).items():
        if m is None:
            continue
        print(
            f"  {space:>11} space: misclassified -> {_share(m['misclassified']['neighbors_misclassified'])} "
            f"neighbors misclassified, {_share(m['misclassified']['neighbors_same_confusion_pair'])} same pair; "
            f"correct -> {_share(m['correct']['neighbors_correct'])} neighbors correct"
        )
    if content.beta:
        b = content.beta
        print(
            f"  beta < 0: {_share(b['misclassified']['share_negative'])} of misclassified, "
            f"{_share(b['correct']['share_negative'])} of correct samples"
        )
    print(f"  report: {page.resolve()}")


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="parasal demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--limit", type=int, default=None, help="index a stratified random sample of N test images (default: all)"
    )
    parser.add_argument(
        "--bundle-dir",
        type=Path,
        default=DemoOptions.bundle_dir,
        help=f"where the demo's bundle is built or reused (default {DemoOptions.bundle_dir}); "
        "a bundle the demo did not build is never replaced",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=DemoOptions.report_dir,
        help=f"where the HTML report goes (default {DemoOptions.report_dir})",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=ReportOptions.queries,
        help=f"misclassified samples investigated, one per confusion pair (default {ReportOptions.queries})",
    )
    parser.add_argument(
        "--no-reference-data",
        action="store_true",
        help=f"build the bundle without reference data ({REFERENCE_DATA}): no surprise/expectation sections",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        run_demo(
            DemoOptions(
                limit=args.limit,
                bundle_dir=args.bundle_dir,
                report_dir=args.report_dir,
                reference_data=None if args.no_reference_data else REFERENCE_DATA,
                report=ReportOptions(queries=args.queries),
            )
        )
    except DemoError as exc:
        print(f"parasal demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted: the server was stopped and no partial bundle was published.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
