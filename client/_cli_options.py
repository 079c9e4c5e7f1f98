"""Argument types and the option groups the `parasal` subcommands share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import _config

TARGET_ENV = "PARASAL_TARGET"
TOKEN_ENV = "PARASAL_TOKEN"  # the token itself
TOKEN_FILE_ENV = "PARASAL_TOKEN_FILE"  # or a file holding it


def _comma_ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _comma_names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _add_connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every subcommand takes, before or after its name."""

    def d(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--target",
        default=d(os.environ.get(TARGET_ENV) or _config.DEFAULT_TARGET),
        help=f"server address host:port (${TARGET_ENV}; default {_config.DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=d(None),
        help=f"file holding the bearer token (else ${TOKEN_ENV} or ${TOKEN_FILE_ENV})",
    )
    parser.add_argument("--tls", action="store_true", default=d(False), help="connect with TLS")
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=d(None),
        help="PEM root certificates for TLS (implies --tls; default: the system's)",
    )
    parser.add_argument("--bundle", default=d(""), help="bundle name (default: the server's first)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=d(_config.DEFAULT_TIMEOUT),
        help="seconds per call (default %(default)s)" if defaults else "seconds per call",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=d(False),
        help="print one JSON document on stdout (errors: one JSON document on stderr)",
    )


def _add_query_options(parser: argparse.ArgumentParser, vector: bool = False) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--sample", type=int, metavar="ID", help="an indexed sample id")
    group.add_argument("--image", type=Path, metavar="PATH", help="an image file (PNG, JPEG, ...); needs --label")
    if vector:
        group.add_argument("--vector-file", type=Path, metavar="NPY", help="a standardized profile saved with numpy")
    parser.add_argument("--label", metavar="CLASS", help="true class of --image: a number or a class name")


def _add_top_option(parser: argparse.ArgumentParser, help: str) -> None:
    # --top in every command that picks the most salient filters; -k is the neighbour
    # count of `similar` (kept here, hidden, for command lines written before --top).
    parser.add_argument("--top", "--top-k", dest="top_k", type=_positive_int, metavar="N", help=help)
    parser.add_argument("-k", dest="top_k", type=_positive_int, help=argparse.SUPPRESS)
