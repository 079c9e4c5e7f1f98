"""`parasal`: the command line over the SDK, plus lazy entry points to the engine.

    parasal info
    parasal sample 7 --image-out seven.png
    parasal similar --sample 7 -k 10 --only-misclassified
    parasal eval finetune --sample 7
    parasal ops list

`--json` prints one JSON document on stdout for scripts (strict JSON: `null` where a
value was not measured, never NaN); otherwise tables for people. Errors print one line,
`error: <details> (<CODE>)`, on stderr; under `--json` they are one JSON document on
stderr instead, `{"error": {"code": "NOT_FOUND", "message": "..."}}` (command-line
mistakes have code INVALID_ARGUMENT), so stdout only ever holds a result. The exit
status is 2 for usage errors, INVALID_ARGUMENT and NOT_FOUND, 1 for the rest.

Labels are class numbers or class names (`--label Shirt`, case-insensitive; the names
come from the bundle's IndexInfo); layer names may be module prefixes (`--layers layer4`).

`parasal index|serve|train-demo|demo ...` hand their arguments, untouched, to the engine's
own commands, imported only then: this module and the SDK never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import stat
import sys
from pathlib import Path

import grpc
import numpy as np

from ._cli_browse import add_browse_commands
from ._cli_dashboard import add_dashboard_commands
from ._cli_eval import add_eval_options, add_export_command, add_finetune_query_options, eval_kwargs
from ._cli_options import (  # the environment variables' names are public here
    TARGET_ENV,  # noqa: F401
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    _add_connection_options,
    _add_query_options,
    _add_top_option,
    _comma_ints,
    _comma_names,
    _positive_int,
)
from ._cli_output import (
    _class,
    _filters_table,
    _print_bundle,
    _print_json,
    _print_operation,
    _print_sample,
    _table,
    _time,
    _top_filter,
)
from ._cli_surprise import add_surprise_commands, similar_kwargs
from ._client import Client
from ._images import enlarge_png, png_size, readable_scale
from ._operations import OperationHandle
from .errors import OperationError, ParasalError

# Subcommands that need the engine extras (torch, faiss, lmdb): module and function,
# imported only when invoked.
ENGINE_COMMANDS: dict[str, tuple[str, str]] = {
    "index": ("parasal.indexer.cli", "main"),
    "serve": ("parasal.server.cli", "main"),
    "train-demo": ("parasal.indexer.train_demo", "main"),
    "demo": ("parasal.demo.run", "main"),
    "export": ("parasal.indexer.export", "main"),
    "report": ("parasal.demo.report_cli", "main"),
    "experiment": ("parasal.client._cli_experiment", "main"),
}
ENGINE_HELP = {
    "index": "build a saliency bundle from a model and a dataset (engine extras)",
    "serve": "run the gRPC server over bundles (engine extras)",
    "train-demo": "train the embedded demo-fashion model (engine extras)",
    "demo": "index Fashion-MNIST, serve it and walk through the API (engine extras)",
    "export": "write a bundle as a Parquet file, one row per sample (engine extras)",
    "report": "write the static HTML report for any bundle or server (engine extras)",
    "experiment": "run a dataset-level experiment in-process (--bundle DIR) or on a server (--server ADDR)",
}
ENGINE_PACKAGES = frozenset({"torch", "torchvision", "faiss", "lmdb", "matplotlib"})


EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_USAGE_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND})


class UsageError(Exception):
    """A command line that cannot work; reported as one line with exit status 2."""


class _ArgumentError(Exception):
    """argparse's usage error, raised instead of printed so --json can report it as JSON."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print and exit
        raise _ArgumentError(self, message)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ENGINE_COMMANDS:
        return _run_engine_command(argv[0], argv[1:])
    # Known before parsing, so even a command line argparse refuses is reported as JSON.
    as_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help
        return _exit_status(exc.code)
    except _ArgumentError as exc:
        if as_json:
            return _report("INVALID_ARGUMENT", str(exc), as_json, EXIT_USAGE)
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args) or EXIT_OK
    except UsageError as exc:
        return _report("INVALID_ARGUMENT", str(exc), as_json, EXIT_USAGE)
    except ParasalError as exc:
        status = EXIT_USAGE if exc.code in _USAGE_CODES else EXIT_ERROR
        return _report(exc.code.name, _error_message(exc, args), as_json, status, server=True)
    except BrokenPipeError:  # the reader went away (`parasal ... | head`): stop quietly
        _silence_stdout()
        return EXIT_ERROR
    except OSError as exc:  # unreadable input or unwritable output file
        return _report("INVALID_ARGUMENT", str(exc), as_json, EXIT_USAGE)
    except KeyboardInterrupt:
        return _report("CANCELLED", "interrupted", as_json, EXIT_INTERRUPTED)


def _report(code: str, message: str, as_json: bool, status: int, server: bool = False) -> int:
    """An error on stderr: one line for people (with the status code when the server sent
    it), one JSON document under --json."""
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}, allow_nan=False), file=sys.stderr)
    else:
        print(f"error: {message} ({code})" if server else f"error: {message}", file=sys.stderr)
    return status


def _silence_stdout() -> None:
    # Python would report the broken pipe again when it flushes stdout at exit.
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _exit_status(code) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_ERROR


def _error_message(exc: ParasalError, args) -> str:
    if exc.code == grpc.StatusCode.UNAVAILABLE and not isinstance(exc, OperationError):
        return f"cannot reach the parasal server at {args.target}: {exc.details}"
    if exc.code == grpc.StatusCode.UNAUTHENTICATED and not isinstance(exc, OperationError):
        # The server speaks of metadata; a CLI user needs the option that sends it.
        source = getattr(args, "token_source", None)
        if source is None:
            return (
                f"the server at {args.target} needs a token: pass --token-file FILE "
                f"(or set ${TOKEN_FILE_ENV} or ${TOKEN_ENV})"
            )
        return f"the server at {args.target} refused the token from {source}; check it is the server's token"
    return exc.details or exc.code.name.lower()


def _run_engine_command(name: str, rest: list[str]) -> int:
    module_name, function = ENGINE_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or ""
        if missing.split(".")[0] in ENGINE_PACKAGES:
            print(f"error: `parasal {name}` needs the engine extras: pip install 'parasal[engine]'", file=sys.stderr)
            return EXIT_ERROR
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            print(
                f"error: `parasal {name}` is not available in this installation ({module_name} is missing)",
                file=sys.stderr,
            )
            return EXIT_ERROR
        raise
    try:
        status = getattr(module, function)(rest)
    except SystemExit as exc:
        return _exit_status(exc.code)
    return int(status or 0)


# ---------------------------------------------------------------------------------------
# Argument parsing


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="parasal",
        description="Parameter-space saliency as a service: find images that fail for the same reason, "
        "explain them, and test fixes.",
    )
    _add_connection_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _add_connection_options(common, defaults=False)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name, func, help, parent=sub):
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    _add_sample_commands(command)
    _add_similar_command(command)
    _add_explain_command(command)
    _add_eval_commands(sub, command)
    _add_ops_commands(sub, command)
    add_surprise_commands(sub, command)  # after `similar`: adds its --beta-below/--beta-above/--only-with-surprise
    add_dashboard_commands(sub, command)
    add_browse_commands(sub, command)
    for name, help in ENGINE_HELP.items():  # dispatched before parsing; listed for --help
        sub.add_parser(name, help=help, add_help=False)
    return parser


def _add_sample_commands(command) -> None:
    """info, sample, profile: what the server holds about one sample."""
    command("info", cmd_info, "the bundles the server has loaded")

    p = command("sample", cmd_sample, "metadata of an indexed sample")
    p.add_argument("id", type=int, nargs="?", metavar="ID", help="the sample id (or --sample ID)")
    p.add_argument("--sample", dest="sample", type=int, metavar="ID", help="the sample id, as in the other commands")
    p.add_argument("--image-out", type=Path, metavar="PNG", help="also save the sample's image here")

    p = command("profile", cmd_profile, "saliency profile of a sample or an image")
    _add_query_options(p)
    p.add_argument("--full", action="store_true", help="fetch the whole standardized vector")
    _add_top_option(p, "most salient filters to show (default: the server's, 10)")
    p.add_argument("--vector-out", type=Path, metavar="NPY", help="save the full vector as .npy (implies --full)")


def _add_similar_command(command) -> None:
    """similar: samples failing for the same reason."""
    p = command("similar", cmd_similar, "samples failing for the same reason (nearest profiles)")
    _add_query_options(p, vector=True)
    p.add_argument(
        "-k",
        "--neighbors",
        dest="k",
        type=_positive_int,
        metavar="N",
        help="number of neighbours (default: the server's, 10)",
    )
    p.add_argument("--only-misclassified", action="store_true", help="only neighbours the model got wrong")
    p.add_argument("--include-self", action="store_true", help="keep the query sample among the results")
    p.add_argument(
        "--layers",
        type=_comma_names,
        metavar="A,B",
        help="compare only these layers' filters; a module name (layer4) means every layer under it",
    )
    p.add_argument(
        "--true-labels",
        type=_comma_names,
        metavar="C1,C2",
        help="only neighbours whose true class is one of these (numbers or class names)",
    )
    p.add_argument(
        "--predicted-labels",
        type=_comma_names,
        metavar="C1,C2",
        help="only neighbours the model predicted as one of these (numbers or class names)",
    )
    p.add_argument(
        "--top-filters",
        action="store_true",
        help="also fetch each neighbour's most salient filters (table: the first; --json: all)",
    )


def _add_explain_command(command) -> None:
    """explain: input-space saliency of a sample or an image."""
    p = command("explain", cmd_explain, "input-space saliency heatmap of a sample or an image")
    _add_query_options(p)
    _add_top_option(p, "boost this many most salient filters (default: the server's, 10)")
    p.add_argument("--filters", type=_comma_ints, metavar="1,2", help="boost exactly these profile indices")
    p.add_argument("--boost", type=float, help="boost factor (default: the server's, 100)")
    p.add_argument("--out", type=Path, required=True, metavar="PNG", help="write the overlay PNG here")
    p.add_argument(
        "--scale",
        type=_positive_int,
        metavar="N",
        help="enlarge the overlay N times (default: enough for 256 pixels, e.g. 10 for 28x28 images)",
    )
    p.add_argument("--heatmap-out", type=Path, metavar="NPY", help="also save the (H, W) heatmap as .npy")


def _add_eval_commands(sub, command) -> None:
    """eval finetune | pruning | export: long-running evaluations of salient filters, and a row's edited model."""
    p = sub.add_parser("eval", help="evaluate salient filters (long-running operations)")
    eval_sub = p.add_subparsers(title="evaluations", metavar="KIND", required=True)
    for kind, help in (
        ("finetune", "one gradient step on the most/random/least salient filters"),
        ("pruning", "zero the most/random/least salient filters"),
    ):
        e = command(kind, cmd_eval, help, parent=eval_sub)
        e.set_defaults(kind=kind)
        if kind == "finetune":
            add_finetune_query_options(e)  # also --failure-mode
        else:
            _add_query_options(e)
        # Unset options go out as 0 / empty: the server applies the proto's defaults.
        e.add_argument(
            "--counts",
            type=_comma_ints,
            metavar="1,2,5",
            help="numbers of filters to change (default: the server's, 0.15/0.3/0.75/3.7/11%% of the filters)",
        )
        e.add_argument(
            "--selections",
            type=_comma_names,
            metavar="most,random,least",
            help="which filters (default: the server's, most,random,least)",
        )
        e.add_argument(
            "--neighbors",
            dest="num_neighbors",
            type=_positive_int,
            metavar="N",
            help="nearest misclassified neighbours to measure on (default: the server's, 10)",
        )
        e.add_argument(
            "--seed", type=int, default=0, help="seed of the random draws (mixed with the reference) and collateral"
        )
        add_eval_options(e)
        if kind == "finetune":
            e.add_argument(
                "--step-size",
                type=float,
                help="gradient step size: the learning rate of the model's last training epoch "
                "(default: the server's, 0.001)",
            )
            e.add_argument("--neighbor-bundle", default="", help="bundle to find neighbours in (default --bundle)")
        e.add_argument("--no-wait", action="store_true", help="print the operation id and return")
    add_export_command(eval_sub, command)


def _add_ops_commands(sub, command) -> None:
    """ops list | get | cancel | watch."""
    p = sub.add_parser("ops", help="list, inspect, watch or cancel operations")
    ops_sub = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    o = command("list", cmd_ops_list, "operations, newest first", parent=ops_sub)
    o.add_argument(
        "--state",
        choices=["pending", "running", "succeeded", "failed", "cancelled", "aborted"],
        help="only operations in this state",
    )
    o.add_argument("--limit", type=_positive_int, help="at most this many (default: the server's, 100)")
    for action, func, help in (
        ("get", cmd_ops_get, "one operation and its result"),
        ("cancel", cmd_ops_cancel, "ask an operation to stop"),
        ("watch", cmd_ops_watch, "follow an operation until it ends"),
    ):
        command(action, func, help, parent=ops_sub).add_argument("id", help="the operation id")


# ---------------------------------------------------------------------------------------
# Commands


def _client(args) -> Client:
    token = None
    if args.token_file is not None:
        token, args.token_source = _read_token_file(args.token_file), f"--token-file {args.token_file}"
    elif os.environ.get(TOKEN_ENV):
        token, args.token_source = os.environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    elif os.environ.get(TOKEN_FILE_ENV):
        token = _read_token_file(Path(os.environ[TOKEN_FILE_ENV]).expanduser())
        args.token_source = f"${TOKEN_FILE_ENV} ({os.environ[TOKEN_FILE_ENV]})"
    tls = bool(args.tls or args.ca_file)
    return Client(args.target, token=token, timeout=args.timeout, tls=tls, root_certificates=args.ca_file)


def _read_token_file(path: Path) -> str:
    """The token in ``path``; warns (as ssh does for keys) when others may read or change it."""
    token = path.read_text().strip()
    if not token:
        raise UsageError(f"token file {path} is empty")
    mode = path.stat().st_mode
    if mode & 0o077:
        print(
            f"warning: token file {path} is accessible by others (mode {stat.S_IMODE(mode):04o}); chmod 600 {path}",
            file=sys.stderr,
        )
    return token


def _query_kwargs(args, client: Client) -> dict:
    if getattr(args, "image", None) is not None:
        if args.label is None:
            raise UsageError("--image needs --label (the image's true class)")
        return {"image": args.image, "label": _labels(client, args, [args.label], "--label")[0]}
    if args.label is not None:
        raise UsageError("--label goes with --image only")
    if getattr(args, "vector_file", None) is not None:
        return {"vector": np.load(args.vector_file, allow_pickle=False)}
    return {"sample_id": args.sample}


def cmd_info(args) -> int:
    with _client(args) as client:
        bundles = client.index_info(bundle=args.bundle)
    if args.json:
        return _print_json({"bundles": bundles})
    for i, b in enumerate(bundles):
        if i:
            print()
        _print_bundle(b, default=(i == 0 and not args.bundle))
    if not bundles:
        print("the server has no bundles loaded")
    return EXIT_OK


def _labels(client: Client, args, values: list[str] | None, option: str) -> list[int] | None:
    """Class numbers for ``values``, each a number or a class name (case-insensitive) of the
    bundle's IndexInfo, which is fetched only when a name needs it."""
    if values is None:
        return None
    labels, names = [], None
    for value in values:
        if value.strip().lstrip("-").isdigit():
            labels.append(int(value))
            continue
        if names is None:
            bundles = client.index_info(bundle=args.bundle)
            names = bundles[0].class_names if bundles else []
        matches = [i for i, name in enumerate(names) if name.casefold() == value.strip().casefold()]
        if not matches:
            known = ", ".join(f"{i}:{n}" for i, n in enumerate(names)) if names else "none; use class numbers"
            raise UsageError(f"{option}: unknown class {value!r}; this bundle's classes are {known}")
        labels.append(matches[0])
    return labels


def cmd_sample(args) -> int:
    if args.id is not None and args.sample is not None and args.id != args.sample:
        raise UsageError(f"two sample ids: {args.id} and --sample {args.sample}")
    if args.id is None and args.sample is None:
        raise UsageError("which sample? give its id: parasal sample ID (or --sample ID)")
    args.id = args.id if args.id is not None else args.sample
    with _client(args) as client:
        sample = client.sample(args.id, include_image=args.image_out is not None, bundle=args.bundle)
    if args.image_out is not None:
        if not sample.image_png:
            raise UsageError(f"the server sent no image for sample {args.id}")
        args.image_out.write_bytes(sample.image_png)
    if args.json:
        return _print_json({"sample": sample, "image_out": args.image_out})
    _print_sample(sample)
    if args.image_out is not None:
        print(f"image written to {args.image_out}")
    return EXIT_OK


def cmd_profile(args) -> int:
    full = args.full or args.vector_out is not None
    with _client(args) as client:
        profile = client.profile(**_query_kwargs(args, client), full=full, top_k=args.top_k, bundle=args.bundle)
    if args.vector_out is not None and profile.vector is not None:
        np.save(args.vector_out, profile.vector)
    if args.json:
        return _print_json({"profile": profile})
    who = f"sample {profile.sample_id}" if profile.sample_id is not None else f"image {args.image}"
    print(f"{who}: label {profile.label}, predicted {profile.predicted} ({'correct' if profile.correct else 'wrong'})")
    print(
        f"  true confidence {profile.true_confidence:.4f}, predicted confidence "
        f"{profile.predicted_confidence:.4f}, loss {profile.loss:.4f}"
    )
    if profile.vector is not None:
        v = profile.vector
        print(f"  vector: {v.size} filters, z from {v.min():.3f} to {v.max():.3f}, mean {v.mean():.3f}")
    if args.vector_out is not None:
        print(f"  vector written to {args.vector_out}")
    print("top filters:")
    print(_filters_table(profile.top_filters))
    return EXIT_OK


def cmd_similar(args) -> int:
    with _client(args) as client:
        result = client.find_similar_failures(
            **_query_kwargs(args, client),
            k=args.k,
            only_misclassified=args.only_misclassified,
            exclude_self=not args.include_self,
            layers=args.layers,
            true_labels=_labels(client, args, args.true_labels, "--true-labels"),
            predicted_labels=_labels(client, args, args.predicted_labels, "--predicted-labels"),
            include_top_filters=args.top_filters,
            bundle=args.bundle,
            **similar_kwargs(args),
        )
    if args.json:
        return _print_json({"neighbors": result.neighbors, "confusions": result.confusions})
    header = ["rank", "id", "similarity", "label", "predicted", "correct", "uri"] + ["top filter"] * args.top_filters
    rows = [
        [
            i + 1,
            n.id,
            n.similarity,
            _class(n.sample.label, n.sample.label_name),
            _class(n.sample.predicted, n.sample.predicted_name),
            n.sample.correct,
            n.sample.uri,
        ]
        + [_top_filter(n.sample.top_filters)] * args.top_filters
        for i, n in enumerate(result)
    ]
    print(_table(header, rows) if rows else "no neighbours matched")
    if result.confusions:
        print("\nconfusions among the neighbours:")
        print(_table(["label", "predicted", "count"], [[c.label, c.predicted, c.count] for c in result.confusions]))
    return EXIT_OK


def cmd_explain(args) -> int:
    with _client(args) as client:
        explanation = client.explain_input(
            **_query_kwargs(args, client), top_k=args.top_k, filters=args.filters, boost=args.boost, bundle=args.bundle
        )
    # The server draws the overlay on the original image (the size `sample --image-out`
    # writes); enlarged here so that tiny images can be read.
    width, height = png_size(explanation.overlay_png)
    scale = args.scale or readable_scale((width, height))
    args.out.write_bytes(enlarge_png(explanation.overlay_png, scale))
    if args.heatmap_out is not None:
        np.save(args.heatmap_out, explanation.heatmap)
    if args.json:
        return _print_json(
            {
                "out": args.out,
                "heatmap_out": args.heatmap_out,
                "heatmap_shape": list(explanation.heatmap.shape),
                "overlay_size": [width * scale, height * scale],
                "label": explanation.label,
                "predicted": explanation.predicted,
                "filters": explanation.filters,
            }
        )
    h, w = explanation.heatmap.shape
    print(
        f"overlay written to {args.out} ({width * scale}x{height * scale}: the {width}x{height} image "
        f"enlarged {scale}x; {h}x{w} heatmap; label {explanation.label}, predicted {explanation.predicted})"
    )
    print("boosted filters:")
    print(_filters_table(explanation.filters))
    return EXIT_OK


def cmd_eval(args) -> int:
    with _client(args) as client:
        common = dict(
            **_query_kwargs(args, client),
            counts=args.counts,
            selections=args.selections,
            num_neighbors=args.num_neighbors,
            seed=args.seed,
            bundle=args.bundle,
            **eval_kwargs(args),
        )
        if args.kind == "finetune":
            handle = client.start_finetune_evaluation(
                **common, step_size=args.step_size, neighbor_bundle=args.neighbor_bundle
            )
        else:
            handle = client.start_pruning_evaluation(**common)
        if args.no_wait:
            if args.json:
                return _print_json({"operation": handle.operation})
            print(f"started {args.kind} evaluation {handle.id} (parasal ops watch {handle.id})")
            return EXIT_OK
        return _wait_and_print(handle, args)


def cmd_ops_list(args) -> int:
    with _client(args) as client:
        ops = client.operations(state=args.state, page_size=args.limit, bundle=args.bundle)
    if args.json:
        return _print_json({"operations": ops})
    if not ops:
        print("no operations")
        return EXIT_OK
    rows = [[op.id, op.kind, op.state, f"{op.progress:.0%}", op.bundle, _time(op.created_at), op.message] for op in ops]
    print(_table(["id", "kind", "state", "progress", "bundle", "created", "message"], rows))
    return EXIT_OK


def cmd_ops_get(args) -> int:
    with _client(args) as client:
        op = client.operation(args.id, bundle=args.bundle)
    if args.json:
        return _print_json({"operation": op})
    _print_operation(op)
    return EXIT_OK


def cmd_ops_cancel(args) -> int:
    with _client(args) as client:
        op = client.cancel(args.id, bundle=args.bundle)
    if args.json:
        return _print_json({"operation": op})
    print(f"operation {op.id}: {op.state}")
    return EXIT_OK


def cmd_ops_watch(args) -> int:
    with _client(args) as client:
        return _wait_and_print(client.operation_handle(args.id), args)


def _wait_and_print(handle: OperationHandle, args) -> int:
    """Follows the operation with a progress bar on stderr, then prints it (or raises its error)."""
    from tqdm import tqdm

    op = handle.operation
    try:
        with tqdm(
            total=100,
            desc=f"{op.kind if op else 'operation'} {handle.id}",
            file=sys.stderr,
            disable=None,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}",
        ) as bar:
            for op in handle:
                bar.n = round(100 * op.progress, 1)
                bar.set_postfix_str(op.message or op.state)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; operation {handle.id} keeps running "
            f"(parasal ops watch {handle.id} / parasal ops cancel {handle.id})",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if args.json:
        _print_json({"operation": op})
    else:
        _print_operation(op)
    handle.result()  # raises the operation's typed error when it did not succeed
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
