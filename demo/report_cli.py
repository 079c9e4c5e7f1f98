"""`parasal report`: the static HTML report for any bundle (the demo writes the same one).

    parasal report --bundle bundles/mine --out report/
    parasal report --server 10.0.0.5:50051 --token-file token.txt --out report/
    parasal report --server HOST:PORT --bundle bundles/mine     # a running server, local arrays

With ``--bundle DIR`` it starts `parasal serve` over the bundle on a free local port, asks it
everything through the SDK and stops it; the dataset section reads the bundle's arrays and
runs the model once over the samples. With ``--server ADDR`` it asks a running server; the
sections that need the model or every profile (neighbor agreement, pre-softmax Spearman)
are then left out with a note, unless ``--bundle`` names the same bundle's directory too.
Sections a bundle cannot fill (no class names, no reference data, no misclassified samples)
are left out with a one-line note.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from parasal.client import Client, ParasalError
from parasal.indexer import CorruptSample, IndexerError

from .collect import BundleMismatch, ReportOptions, gather_report
from .report import write_report
from .run import print_summary
from .serving import ServeError, serve_bundle

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print and exit: --json reports it as JSON instead
        raise _UsageError(message)


class _UsageError(Exception):
    """A command line that cannot work: exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="parasal report", description=__doc__.split("\n\n")[0])
    where = p.add_argument_group("what to report on (one or both)")
    where.add_argument("--bundle", type=Path, metavar="DIR", help="a bundle directory")
    where.add_argument("--server", metavar="HOST:PORT", help="a running parasal server")
    p.add_argument("--bundle-name", default="", help="with --server: the bundle's name (default: the server's first)")
    p.add_argument("--token-file", type=Path, help="with --server: file holding the bearer token")
    p.add_argument("--tls", action="store_true", help="with --server: connect with TLS")
    p.add_argument("--ca-file", type=Path, help="with --server: PEM root certificates (implies --tls)")
    p.add_argument("--out", type=Path, default=Path("report"), help="output directory (default %(default)s)")
    p.add_argument(
        "--queries",
        type=int,
        default=ReportOptions.queries,
        help="misclassified samples investigated, one per confusion pair (default %(default)s)",
    )
    p.add_argument("-k", type=int, default=ReportOptions.k, help="nearest neighbours (default %(default)s)")
    p.add_argument(
        "--no-evaluations", action="store_true", help="skip the fine-tuning and pruning evaluations on the first query"
    )
    p.add_argument("--title", help="the page's title (default: names the model and dataset)")
    p.add_argument(
        "--timeout", type=float, default=ReportOptions.timeout, help="seconds per call (default %(default)s)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--json", action="store_true", help="print the page's path, summary and metrics as one JSON document"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        if "--json" not in argv:
            parser.print_usage(sys.stderr)
        return _fail(str(exc), "INVALID_ARGUMENT", "--json" in argv, EXIT_USAGE)
    logging.basicConfig(level=logging.WARNING)
    try:
        options = _options(args)
        page, content = write_bundle_report(args, options)
    except (ServeError, IndexerError, CorruptSample) as exc:  # e.g. a model or image that will not load
        return _fail(str(exc), "FAILED_PRECONDITION", args.json, EXIT_ERROR)
    except (_UsageError, BundleMismatch) as exc:  # a bad option value; --server and --bundle disagree
        return _fail(str(exc), "INVALID_ARGUMENT", args.json, EXIT_USAGE)
    except ParasalError as exc:
        return _fail(_server_message(exc, args), exc.code.name, args.json, EXIT_ERROR)
    except OSError as exc:  # the output directory cannot be written
        return _fail(f"cannot write the report to {args.out}: {exc}", "INVALID_ARGUMENT", args.json, EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted; the server the report started was stopped", "CANCELLED", args.json, EXIT_INTERRUPTED)
    if args.json:
        metrics = json.loads((page.parent / "metrics.json").read_text())
        doc = {"report": str(page.resolve()), "summary": content.summary, "metrics": metrics}
        print(json.dumps(doc, allow_nan=False))
    else:
        print_summary(content, page)
    return EXIT_OK


def _options(args) -> ReportOptions:
    if args.bundle is None and args.server is None:
        raise _UsageError("give --bundle DIR or --server HOST:PORT (or both)")
    if args.queries < 0 or args.k < 1 or args.timeout <= 0:
        raise _UsageError("--queries must be >= 0, -k >= 1 and --timeout > 0")
    return ReportOptions(
        queries=args.queries,
        k=args.k,
        evaluations=not args.no_evaluations,
        timeout=args.timeout,
        title=args.title,
        progress=not (args.no_progress or args.json),
    )


def write_bundle_report(args, options: ReportOptions):
    """Gathers and writes the report; returns (page path, ReportContent)."""
    with contextlib.ExitStack() as stack:
        bundle = None
        if args.bundle is not None:
            bundle = stack.enter_context(_open_bundle(args.bundle))
        if args.server is not None:
            target, name = args.server, args.bundle_name
        else:
            quiet = args.json or args.no_progress
            target = stack.enter_context(serve_bundle(args.bundle, args.out / "server.log", quiet=quiet))
            name = ""
        client = stack.enter_context(_connect(args, target))
        content = gather_report(client, options, bundle=bundle, bundle_name=name)
        return write_report(args.out, content), content


@contextlib.contextmanager
def _open_bundle(path: Path):
    from parasal.indexer import open_bundle

    with open_bundle(path, gpu=False) as bundle:  # BundleError (an IndexerError) says what is wrong
        yield bundle


def _connect(args, target: str) -> Client:
    # The same token lookup as every `parasal` command (--token-file, $PARASAL_TOKEN, $PARASAL_TOKEN_FILE).
    from parasal.client.cli import UsageError, _client

    ns = argparse.Namespace(
        target=target, token_file=args.token_file, tls=args.tls, ca_file=args.ca_file, timeout=args.timeout
    )
    try:
        return _client(ns)
    except (UsageError, OSError) as exc:  # an empty or unreadable token file
        raise _UsageError(str(exc)) from exc


def _server_message(exc: ParasalError, args) -> str:
    where = args.server or "the server started over the bundle"
    if exc.code.name == "UNAVAILABLE":
        return f"cannot reach the parasal server at {where}: {exc.details}"
    if exc.code.name == "UNAUTHENTICATED":
        return f"the server at {where} needs a valid token: pass --token-file FILE ({exc.details})"
    return exc.details or exc.code.name.lower()


def _fail(message: str, code: str, as_json: bool, status: int) -> int:
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}, allow_nan=False), file=sys.stderr)
    else:
        print(f"parasal report: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
