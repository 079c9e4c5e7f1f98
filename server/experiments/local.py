"""Running experiments in this process on a bundle directory (the CLI's ``--bundle DIR`` and
``results.py``): one opened bundle, its model and one shared :class:`Context` for all."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from . import ExperimentOutput, run_experiment
from ._common import Context

__all__ = ["run_local", "write_output", "open_local"]


@contextlib.contextmanager
def open_local(bundle_dir: str | Path, should_stop: Callable[[], bool] | None = None):
    """(bundle, model, shared Context) of a bundle directory, for the block."""
    from parasal.indexer import open_bundle

    with open_bundle(bundle_dir, gpu=False) as bundle:
        model = bundle.load_model().model
        yield bundle, model, Context(bundle, model, should_stop=should_stop)


def write_output(output: ExperimentOutput, out: Path) -> tuple[Path, Path]:
    """OUT/NAME.json and OUT/NAME.png (each written to a temp name, then renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = out / f"{output.name}.json", out / f"{output.name}.png"
    for path, data in zip(paths, (output.json.encode() + b"\n", output.plot_png)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return paths


def run_local(
    bundle_dir: str | Path,
    names: Sequence[str],
    *,
    references: int = 0,
    seed: int = 0,
    options: dict[str, dict[str, str]] | None = None,
    progress: Callable[[str], Callable[[float, str], None] | None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[ExperimentOutput]:
    """Yields each experiment's output in ``names`` order. ``options``: experiment -> its
    options; ``progress(name)`` gives that experiment's progress callback (or None)."""
    with open_local(bundle_dir, should_stop) as (bundle, model, ctx):
        for name in names:
            start = time.perf_counter()
            output = run_experiment(
                name,
                bundle,
                model,
                references=references,
                seed=seed,
                options=(options or {}).get(name),
                progress=progress(name) if progress is not None else None,
                should_stop=should_stop,
                context=ctx,
            )
            # The time as the user waited for it, including the shared forward pass when
            # this experiment was the first to need it.
            yield ExperimentOutput(
                output.name,
                output.references,
                output.seed,
                output.points,
                output.extra,
                output.plot_png,
                time.perf_counter() - start,
            )
