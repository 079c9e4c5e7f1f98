"""`parasal experiment NAME|all`: the dataset-level experiments, in this process or on a server.

    parasal experiment pruning --bundle DIR --out results/            # in-process (engine extras)
    parasal experiment all --bundle DIR --out results/ --seed 1
    parasal experiment masking --server HOST:PORT --out results/      # through the SDK
    parasal experiment finetune --bundle DIR --out r/ --option k=5 --option collateral=0

Writes OUT/NAME.json (`{"experiment", "references", "seed", "points": [...], ...}`) and
OUT/NAME.png per experiment and prints each one's time. `--option KEY=VALUE` sets an
experiment's option (with `all`: `NAME.KEY=VALUE`). Dispatched before the client's own
parser (cli.py's ENGINE_COMMANDS), so the SDK path never imports torch; the in-process path
imports the engine only when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._experiment_types import EXPERIMENT_NAMES

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from . import _config
    from ._cli_options import TARGET_ENV

    p = _Parser(
        prog="parasal experiment",
        description="Run a dataset-level experiment (or all eight) and write OUT/NAME.json and OUT/NAME.png.",
    )
    p.add_argument("name", choices=(*EXPERIMENT_NAMES, "all"), help="the experiment, or all of them in order")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for NAME.json and NAME.png")
    p.add_argument(
        "--bundle",
        default="",
        help="a bundle directory (runs in this process), or with --server the bundle's name",
    )
    p.add_argument(
        "--server",
        "--target",
        dest="server",
        default=None,
        metavar="ADDR",
        help=f"run on this parasal server (host:port) instead (${TARGET_ENV} is not used implicitly)",
    )
    p.add_argument("--references", type=int, default=0, metavar="N", help="references (default: each one's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an experiment option (repeatable; with `all`: NAME.KEY=VALUE)",
    )
    p.add_argument("--token-file", type=Path, default=None, help="bearer token file (with --server)")
    p.add_argument("--timeout", type=float, default=_config.DEFAULT_TIMEOUT, help="seconds per call (with --server)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return p


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _ArgumentError(message)


def _options(args) -> dict[str, dict[str, str]]:
    """experiment -> {key: value} from the --option flags; ValueError for a malformed one."""
    names = EXPERIMENT_NAMES if args.name == "all" else (args.name,)
    out: dict[str, dict[str, str]] = {n: {} for n in names}
    for text in args.option:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {text!r}: expected KEY=VALUE")
        if args.name == "all":
            name, dot, key = key.partition(".")
            if not dot or name not in out:
                raise ValueError(f"--option {text!r}: with `all`, write NAME.KEY=VALUE (NAME one of the experiments)")
            out[name][key] = value
        else:
            out[args.name][key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    from .cli import EXIT_INTERRUPTED, EXIT_USAGE, _report

    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        options = _options(args)
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int) else 0
    except (_ArgumentError, ValueError) as exc:
        if not as_json:
            print("usage: parasal experiment NAME|all --out DIR (--bundle DIR | --server ADDR) ...", file=sys.stderr)
        return _report("INVALID_ARGUMENT", f"parasal experiment: {exc}", as_json, EXIT_USAGE)
    names = EXPERIMENT_NAMES if args.name == "all" else (args.name,)
    try:
        if args.server:
            rows = _remote(args, names, options)
        else:
            if not args.bundle:
                return _report(
                    "INVALID_ARGUMENT", "give --bundle DIR (in-process) or --server ADDR", as_json, EXIT_USAGE
                )
            rows = _local(args, names, options)
            if isinstance(rows, int):
                return rows
    except KeyboardInterrupt:
        return _report("CANCELLED", "interrupted", as_json, EXIT_INTERRUPTED)
    except _Failure as exc:
        return _report(exc.code, exc.message, as_json, exc.status, server=True)
    except OSError as exc:
        return _report("INVALID_ARGUMENT", str(exc), as_json, EXIT_USAGE)
    total = sum(r["seconds"] for r in rows)
    if as_json:
        print(json.dumps({"experiments": rows, "seconds": round(total, 3)}, allow_nan=False))
    else:
        print(f"all {len(rows)} experiment(s): {total:.1f} s")
    return 0


class _Failure(Exception):
    def __init__(self, code: str, message: str, status: int):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _status(code: str) -> int:
    return 2 if code in ("INVALID_ARGUMENT", "NOT_FOUND") else 1


def _bar(name: str, disabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=100,
        desc=name,
        file=sys.stderr,
        disable=True if disabled else None,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}",
    )


def _row(name: str, references: int, seconds: float, paths) -> dict:
    return {
        "experiment": name,
        "references": references,
        "seconds": round(seconds, 3),
        "json": str(paths[0]),
        "png": str(paths[1]),
    }


def _announce(args, row: dict) -> None:
    if not args.json:
        print(f"{row['experiment']}: {row['references']} references in {row['seconds']:.1f} s -> {row['json']}")


def _local(args, names, options) -> list[dict] | int:
    from .cli import EXIT_ERROR

    try:
        from parasal.server.errors import status_for
        from parasal.server.experiments.local import run_local, write_output
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("torch", "faiss", "lmdb", "matplotlib", "scipy", "skimage"):
            print(
                "error: `parasal experiment --bundle` needs the engine extras: pip install 'parasal[engine]'",
                file=sys.stderr,
            )
            return EXIT_ERROR
        raise
    if not Path(args.bundle).is_dir():
        raise _Failure("INVALID_ARGUMENT", f"--bundle {args.bundle}: no such bundle directory (or give --server)", 2)
    bars: dict[str, object] = {}

    def progress(name: str):
        bar = bars[name] = _bar(name, args.no_progress)

        def update(fraction: float, message: str) -> None:
            bar.n = round(100 * fraction, 1)
            bar.set_postfix_str(message[:60])
            bar.refresh()

        return update

    rows = []
    try:
        for output in run_local(
            args.bundle, names, references=args.references, seed=args.seed, options=options, progress=progress
        ):
            bars.pop(output.name).close()
            row = _row(output.name, output.references, output.seconds, write_output(output, args.out))
            rows.append(row)
            _announce(args, row)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a status code and reported, as the server would
        for bar in bars.values():
            bar.close()
        code, message = status_for(exc)
        raise _Failure(code.name, message, _status(code.name)) from None
    return rows


def _remote(args, names, options) -> list[dict]:
    from ._client import Client
    from .errors import ParasalError

    token = args.token_file.read_text().strip() if args.token_file else None
    rows = []
    try:
        with Client(args.server, token=token, timeout=args.timeout) as client:
            for name in names:
                handle = client.start_experiment(
                    name, bundle=args.bundle, references=args.references or None, seed=args.seed, options=options[name]
                )
                with _bar(name, args.no_progress) as bar:
                    try:
                        for op in handle:
                            bar.n = round(100 * op.progress, 1)
                            bar.set_postfix_str((op.message or op.state)[:60])
                            bar.refresh()
                    except KeyboardInterrupt:
                        handle.cancel()
                        raise
                result = handle.result()
                args.out.mkdir(parents=True, exist_ok=True)
                paths = args.out / f"{name}.json", args.out / f"{name}.png"
                paths[0].write_text(result.json + "\n")
                paths[1].write_bytes(result.plot_png)
                row = _row(name, result.references, result.seconds, paths)
                rows.append(row)
                _announce(args, row)
    except ParasalError as exc:
        raise _Failure(exc.code.name, exc.details or exc.code.name.lower(), _status(exc.code.name)) from None
    return rows
