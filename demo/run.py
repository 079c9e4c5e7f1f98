"""`parasal demo`: the whole service on the embedded Fashion-MNIST default, end to end.

1. index the Fashion-MNIST test split with `demo-fashion` (reusing a bundle that matches),
2. start `parasal serve` on a free local port,
3. through the SDK: pick misclassified samples of different confusion pairs and, for each,
   find its nearest failures, its top salient filters and its input-space heatmap; run one
   fine-tuning and one pruning evaluation as operations, with progress,
4. stop the server cleanly, compute dataset-level neighbor metrics, write the report.

Ctrl-C at any point stops the server (it is our child and gets SIGTERM in `finally`), and
the indexer only ever publishes complete bundles, so nothing half-done is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from parasal.client import Client
from parasal.core import DEFAULT_COUNTS

from .metrics import confusion_pairs, neighbor_agreement
from .report import NeighborView, QueryView, write_report

MODEL = "demo-fashion"


class DemoError(Exception):
    """A step of the demo failed in a way the message explains; no traceback needed."""


@dataclass
class DemoOptions:
    """Settings of one demo run; the defaults are what `make demo` does."""

    data: str = "fashion-mnist:test"
    limit: int | None = None  # index a stratified sample of N (tests use 1,000)
    bundle_dir: Path = Path("bundles/demo-fashion-test")
    report_dir: Path = Path("demo-report")
    queries: int = 4  # misclassified samples investigated, one per confusion pair
    k: int = 10
    eval_neighbors: int = 10
    eval_counts: tuple[int, ...] = DEFAULT_COUNTS
    timeout: float = 120.0


def run_demo(opts: DemoOptions) -> dict:
    """Runs the demo; returns the summary (also printed and written into the report)."""
    started = time.perf_counter()
    bundle_dir = _ensure_bundle(opts)
    from parasal.indexer import open_bundle

    opts.report_dir.mkdir(parents=True, exist_ok=True)
    with open_bundle(bundle_dir) as bundle, _server(bundle_dir, opts.report_dir / "server.log") as target:
        with Client(target, timeout=opts.timeout) as client:
            info = client.index_info()[0]
            queries = _investigate(client, bundle, info, opts)
        metrics = _dataset_metrics(bundle, opts.k)
        pairs = confusion_pairs(*_label_arrays(bundle), top=10)
    summary = {
        "model": info.model,
        "dataset": info.dataset,
        "samples indexed": info.num_samples,
        "misclassified": info.num_misclassified,
        "filters per profile": info.num_filters,
        "bundle": str(bundle_dir),
        "seconds": round(time.perf_counter() - started, 1),
    }
    page = write_report(
        opts.report_dir,
        title="parasal demo: where demo-fashion goes wrong",
        summary=summary,
        class_names=info.class_names,
        layers=[(l.name, l.filters, l.offset) for l in info.layers],
        queries=queries,
        dataset_confusions=pairs,
        metrics=metrics,
    )
    _print_summary(summary, queries, metrics, info.class_names, page)
    return summary


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
    print("Indexing:", " ".join(cmd[2:]))
    opts.bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    if subprocess.run(cmd).returncode != 0:
        raise DemoError(f"indexing failed (see the message above); command: {' '.join(cmd)}")


def _expected_samples(opts: DemoOptions) -> int:
    from parasal.indexer import open_dataset

    n = len(open_dataset(opts.data))
    return min(n, opts.limit) if opts.limit else n


# -- 2. the server ------------------------------------------------------------------------


@contextlib.contextmanager
def _server(bundle_dir: Path, log_path: Path):
    """`parasal serve` on a free port; yields its address; SIGTERM and wait on the way out.

    Its request log goes to ``log_path`` so the terminal shows the demo, not every call.
    """
    with tempfile.TemporaryDirectory(prefix="parasal-demo-state-") as state, open(log_path, "w") as log_file:
        cmd = [sys.executable, "-m", "parasal.server", "--bundle", str(bundle_dir), "--port", "0", "--state-dir", state]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log_file, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            target = _wait_for_address(proc)
            print(f"Server started on {target} (pid {proc.pid}; log: {log_path}).")
            yield target
        finally:
            _stop(proc)


def _wait_for_address(proc: subprocess.Popen, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    for line in proc.stdout:  # the server prints exactly one line with its address
        if line.startswith("parasal: serving on "):
            return line.split("serving on ", 1)[1].strip()
        if time.monotonic() > deadline:
            break
    raise DemoError(f"the server did not start (exit code {proc.poll()}); see its log")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(f"Server stopped (exit code {proc.returncode}).")


# -- 3. questions through the SDK -----------------------------------------------------------


def _investigate(client: Client, bundle, info, opts: DemoOptions) -> list[QueryView]:
    ids = _pick_queries(bundle, opts.queries)
    views = []
    for i, sid in enumerate(ids):
        sample = client.sample(sid, include_image=True)
        profile = client.profile(sample_id=sid, full=True)
        similar = client.find_similar_failures(sample_id=sid, k=opts.k, only_misclassified=True)
        explanation = client.explain_input(sample_id=sid)
        neighbors = [
            NeighborView(
                n.id,
                n.similarity,
                n.sample.label,
                n.sample.predicted,
                client.sample(n.id, include_image=True).image_png,
            )
            for n in similar.neighbors
        ]
        view = QueryView(
            id=sid,
            label=sample.label,
            predicted=sample.predicted,
            true_confidence=sample.true_confidence,
            predicted_confidence=sample.predicted_confidence,
            image_png=sample.image_png,
            overlay_png=explanation.overlay_png,
            profile=profile.vector,
            top_filters=[(f.layer, f.filter, f.z) for f in profile.top_filters],
            neighbors=neighbors,
            confusions=[(c.label, c.predicted, c.count) for c in similar.confusions],
        )
        if i == 0:  # one of each evaluation, on the first query
            view.finetune_rows = _run_operation(
                client.start_finetune_evaluation(
                    sample_id=sid, counts=opts.eval_counts, num_neighbors=opts.eval_neighbors
                ),
                "fine-tuning evaluation",
                opts.timeout,
            )
            view.pruning_rows = _run_operation(
                client.start_pruning_evaluation(
                    sample_id=sid, counts=opts.eval_counts, num_neighbors=opts.eval_neighbors
                ),
                "pruning evaluation",
                opts.timeout,
            )
        views.append(view)
    return views


def _pick_queries(bundle, count: int) -> list[int]:
    """The most confidently wrong sample of each of the most frequent confusion pairs."""
    labels, predicted = _label_arrays(bundle)
    ids = np.asarray(bundle.ids)
    chosen = []
    for true, pred, _ in confusion_pairs(labels, predicted, top=count):
        rows = np.flatnonzero((labels == true) & (predicted == pred))
        confidences = [bundle.meta(int(ids[r])).predicted_confidence for r in rows]
        chosen.append(int(ids[rows[int(np.argmax(confidences))]]))
    return chosen


def _run_operation(handle, what: str, timeout: float) -> list[dict]:
    with tqdm(total=1.0, desc=what, unit="", bar_format="{l_bar}{bar}| {elapsed}") as bar:
        for snapshot in handle:
            bar.n = round(snapshot.progress, 3)
            bar.set_postfix_str(snapshot.message[:40])
            bar.refresh()
    return handle.result(timeout=timeout).to_dicts()


# -- 4. dataset metrics ---------------------------------------------------------------------


def _label_arrays(bundle) -> tuple[np.ndarray, np.ndarray]:
    """(N,) true and predicted labels in the bundle's row order (the order of ``bundle.ids``)."""
    return np.asarray(bundle.labels), np.asarray(bundle.predicted)


def _dataset_metrics(bundle, k: int) -> dict:
    labels, predicted = _label_arrays(bundle)
    ids = [int(i) for i in bundle.ids]
    saliency = np.asarray(bundle.profiles(ids), dtype=np.float32)
    return {
        "saliency": neighbor_agreement(saliency, labels, predicted, k),
        "penultimate": neighbor_agreement(penultimate_features(bundle, ids), labels, predicted, k),
    }


@torch.no_grad()
def penultimate_features(bundle, ids: list[int], batch_size: int = 500) -> np.ndarray:
    """(N, D) inputs of the model's last ``nn.Linear``: the paper's A.4 baseline space."""
    loaded = bundle.load_model()
    model = loaded.model.eval()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    captured = []
    handle = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].flatten(1).cpu()))
    try:
        for start in range(0, len(ids), batch_size):
            batch = torch.stack([loaded.preprocessing(bundle.load_image(i)) for i in ids[start : start + batch_size]])
            model(batch)
    finally:
        handle.remove()
    return torch.cat(captured).numpy()


def _print_summary(summary, queries: list[QueryView], metrics: dict, class_names, page: Path) -> None:
    name = lambda c: class_names[c] if c < len(class_names) else str(c)  # noqa: E731
    print("\n== parasal demo ==")
    for key, value in summary.items():
        print(f"  {key:>20}: {value}")
    for q in queries:
        same = sum(1 for n in q.neighbors if {n.label, n.predicted} == {q.label, q.predicted})
        print(
            f"  sample {q.id}: {name(q.label)} -> {name(q.predicted)}; top filter "
            f"{q.top_filters[0][0]}[{q.top_filters[0][1]}] z={q.top_filters[0][2]:.1f}; "
            f"{same}/{len(q.neighbors)} nearest failures share its confusion"
        )
    for space in ("saliency", "penultimate"):
        m = metrics[space]
        print(
            f"  {space:>11} space: misclassified -> {m['misclassified']['neighbors_misclassified']:.1%} neighbors "
            f"misclassified, {m['misclassified']['neighbors_same_confusion_pair']:.1%} same pair; "
            f"correct -> {m['correct']['neighbors_correct']:.1%} neighbors correct"
        )
    print(f"  report: {page.resolve()}")


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
        default=DemoOptions.queries,
        help=f"misclassified samples investigated, one per confusion pair (default {DemoOptions.queries})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        run_demo(
            DemoOptions(limit=args.limit, bundle_dir=args.bundle_dir, report_dir=args.report_dir, queries=args.queries)
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
