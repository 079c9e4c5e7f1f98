"""`parasal eval`'s options for random draws, count fractions and collateral, and
`parasal eval export`: one finished evaluation row's edited model written to a file.

    parasal eval pruning --sample 7 --count-fractions 0.001,0.01 --random-draws 10
    parasal eval finetune --sample 7 --collateral 200
    parasal eval finetune --failure-mode 2
    parasal eval export OP_ID --selection most --count 5 --out edited.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._cli_options import _positive_int
from ._cli_output import _print_json

EXPORT_SELECTIONS = ("most", "random", "least", "whole_network")


def _comma_fractions(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise argparse.ArgumentTypeError(f"fractions must be in (0, 1], got {bad[0]!r}")
    return values


def add_eval_options(e: argparse.ArgumentParser) -> None:
    """The options both `eval finetune` and `eval pruning` take beyond the counts (unset: the server's default)."""
    e.add_argument(
        "--count-fractions",
        type=_comma_fractions,
        metavar="0.001,0.01",
        help="counts as fractions of the network's filters, each in (0, 1], rounded up (added to --counts)",
    )
    e.add_argument(
        "--random-draws",
        type=_positive_int,
        metavar="N",
        help="random draws averaged per random row, each seeded per reference (default: the server's, 5)",
    )
    e.add_argument(
        "--collateral",
        dest="num_collateral",
        type=_positive_int,
        metavar="N",
        help="correctly classified samples every row is also measured on (default: the server's, 500)",
    )
    e.add_argument("--no-collateral", action="store_true", help="skip the collateral measurement")


def add_finetune_query_options(e: argparse.ArgumentParser) -> None:
    """--sample / --image (+ --label) as every query command has them, or --failure-mode."""
    group = e.add_mutually_exclusive_group(required=True)
    group.add_argument("--sample", type=int, metavar="ID", help="an indexed sample id")
    group.add_argument("--image", type=Path, metavar="PATH", help="an image file (PNG, JPEG, ...); needs --label")
    group.add_argument(
        "--failure-mode",
        type=int,
        metavar="MODE",
        help="a failure mode (parasal modes): the step on its medoid, measured on its other members",
    )
    e.add_argument("--label", metavar="CLASS", help="true class of --image: a number or a class name")


def eval_kwargs(args) -> dict:
    """The SDK keywords of the options above."""
    kwargs = dict(
        count_fractions=args.count_fractions,
        random_draws=args.random_draws,
        num_collateral=args.num_collateral,
        skip_collateral=args.no_collateral,
    )
    if getattr(args, "failure_mode", None) is not None:
        kwargs["failure_mode"] = args.failure_mode
    return kwargs


def add_export_command(eval_sub, command) -> None:
    e = command(
        "export",
        cmd_eval_export,
        "write the edited model of one row of a finished evaluation (a torch state dict)",
        parent=eval_sub,
    )
    e.add_argument("id", metavar="OP_ID", help="a finished fine-tuning or pruning evaluation")
    e.add_argument("--selection", required=True, choices=EXPORT_SELECTIONS, help="the row's selection")
    e.add_argument(
        "--count", type=int, required=True, metavar="N", help="the row's count (0 for the whole-network row)"
    )
    e.add_argument("--draw", type=int, default=0, metavar="D", help="a random row's draw, 0..random_draws-1")
    e.add_argument("--out", type=Path, required=True, metavar="PT", help="the file to write")


def cmd_eval_export(args) -> int:
    from .cli import _client

    with _client(args) as client:
        edit = client.export_edited_model(
            args.id, selection=args.selection, count=args.count, draw=args.draw, out=args.out
        )
    if args.json:
        return _print_json({"export": edit})
    shown = ",".join(str(f) for f in edit.filters) or "every parameter"
    step = f"step size {edit.step_size:g}, " if edit.step_size else ""
    print(f"wrote {edit.path} ({edit.total_bytes:,} bytes): {args.selection} {args.count}, {step}seed {edit.seed}")
    print(f"filters: {shown}")
    print("load it with: model.load_state_dict(torch.load(PATH, weights_only=True))")
    return 0
