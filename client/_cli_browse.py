"""`parasal samples`, `parasal confusions` and `parasal modes`: browsing a bundle.

    parasal samples --misclassified --order-by loss --desc --limit 20
    parasal samples --true-labels Shirt --predicted-labels T-shirt/top --mode 0
    parasal confusions
    parasal modes --members --json

Registered by `cli.build_parser` through :func:`add_browse_commands`.
"""

from __future__ import annotations

import sys

from ._cli_options import _comma_names, _positive_int
from ._cli_output import _class, _print_json, _table, _terminal_width
from .types import SAMPLE_ORDERS

EXIT_OK = 0
#: Rows `parasal samples` prints unless --limit or --all says otherwise.
DEFAULT_LIMIT = 50


def _order(text: str) -> str:
    """An order name; hyphens as in option names are accepted (true-confidence)."""
    import argparse

    name = text.strip().replace("-", "_")
    if name not in SAMPLE_ORDERS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(SAMPLE_ORDERS)}, got {text!r}")
    return name


def add_browse_commands(sub, command) -> None:
    """`samples`, `confusions`, `modes`."""
    p = command("samples", cmd_samples, "list indexed samples with filters, sorted (paged from the server)")
    p.add_argument(
        "--true-labels", type=_comma_names, metavar="C1,C2", help="true class among these (numbers or names)"
    )
    p.add_argument("--predicted-labels", type=_comma_names, metavar="C1,C2", help="predicted class among these")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--correct", dest="correct", action="store_const", const=True, help="only correct samples")
    which.add_argument(
        "--misclassified", dest="correct", action="store_const", const=False, help="only misclassified samples"
    )
    for name, help in (
        ("--min-true-confidence", "true-class confidence at least this"),
        ("--max-true-confidence", "true-class confidence at most this"),
        ("--min-loss", "loss at least this"),
        ("--max-loss", "loss at most this"),
        ("--beta-below", "beta strictly below this (bundles with reference data)"),
        ("--beta-above", "beta strictly above this (bundles with reference data)"),
    ):
        p.add_argument(name, type=float, metavar="X", help=help)
    p.add_argument("--only-with-surprise", action="store_true", help="only samples with a surprise filter")
    p.add_argument("--only-with-expectation", action="store_true", help="only samples with an expectation filter")
    p.add_argument("--mode", dest="failure_mode", type=int, metavar="N", help="only members of failure mode N")
    p.add_argument(
        "--order-by",
        type=_order,
        default="id",
        metavar="KEY",
        help=f"sort key: {', '.join(SAMPLE_ORDERS)} (default id)",
    )
    p.add_argument("--desc", action="store_true", help="largest first")
    count = p.add_mutually_exclusive_group()
    count.add_argument(
        "--limit", type=_positive_int, metavar="N", help=f"print at most N samples (default {DEFAULT_LIMIT})"
    )
    count.add_argument("--all", action="store_true", help="print every matching sample")
    p.add_argument("--top-filters", action="store_true", help="also fetch each sample's most salient filters")

    command("confusions", cmd_confusions, "the confusion matrix and per-class accuracy of a bundle")

    p = command("modes", cmd_modes, "the bundle's failure modes (misclassified samples grouped by their profiles)")
    p.add_argument(
        "--medoids", type=_positive_int, metavar="N", help="medoid samples per mode (default: the server's, 5)"
    )
    p.add_argument(
        "--top-filters", type=_positive_int, metavar="N", help="top filters per mode (default: the server's, 10)"
    )
    p.add_argument("--members", action="store_true", help="also list every mode's member ids")
    p.add_argument("--map", action="store_true", help="also fetch the 2-D failure map (--json)")


def cmd_samples(args) -> int:
    from .cli import _client, _labels

    limit = None if args.all else (args.limit or DEFAULT_LIMIT)
    with _client(args) as client:
        found = client.samples(
            bundle=args.bundle,
            true_labels=_labels(client, args, args.true_labels, "--true-labels"),
            predicted_labels=_labels(client, args, args.predicted_labels, "--predicted-labels"),
            correct=args.correct,
            min_true_confidence=args.min_true_confidence,
            max_true_confidence=args.max_true_confidence,
            min_loss=args.min_loss,
            max_loss=args.max_loss,
            beta_below=args.beta_below,
            beta_above=args.beta_above,
            only_with_surprise=args.only_with_surprise,
            only_with_expectation=args.only_with_expectation,
            failure_mode=args.failure_mode,
            order_by=args.order_by,
            descending=args.desc,
            include_top_filters=args.top_filters,
            page_size=None if limit is None else min(limit, 1000),
            limit=limit,
        )
        samples = _fetch_with_progress(found, limit)
        total = found.total_size
    if args.json:
        return _print_json({"samples": samples, "total_size": total})
    if not samples:
        print("no samples matched")
        return EXIT_OK
    with_beta = any(s.beta is not None for s in samples)
    header = ["id", "label", "predicted", "correct", "true_conf", "pred_conf", "loss"]
    header += ["beta"] * with_beta + ["mode", "uri"] + ["top filter"] * args.top_filters
    rows = [
        [
            s.id,
            _class(s.label, s.label_name),
            _class(s.predicted, s.predicted_name),
            s.correct,
            s.true_confidence,
            s.predicted_confidence,
            s.loss,
        ]
        + [s.beta] * with_beta
        + [s.failure_mode, s.uri]
        + [_first_filter(s)] * args.top_filters
        for s in samples
    ]
    print(_table(header, rows))
    more = "" if len(samples) == total else " (--limit N or --all for more)"
    print(f"{len(samples)} of {total} matching samples{more}")
    return EXIT_OK


def _first_filter(sample) -> str:
    f = sample.top_filters[0] if sample.top_filters else None
    return f"{f.layer}[{f.filter}] z={f.z:.2f}" if f else ""


def _fetch_with_progress(found, limit: int | None) -> list:
    """Every sample of the iterator, with a progress bar on stderr when there are many pages."""
    from tqdm import tqdm

    total = found.total_size if limit is None else min(found.total_size, limit)
    out = []
    with tqdm(total=total, desc="samples", file=sys.stderr, disable=None if total > 1000 else True) as bar:
        for sample in found:
            out.append(sample)
            bar.update(1)
    return out


def cmd_confusions(args) -> int:
    from .cli import _client

    with _client(args) as client:
        matrix = client.confusion_matrix(args.bundle)
    if args.json:
        return _print_json({"confusion_matrix": matrix})
    print(matrix.table(width=_terminal_width()))
    print(f"accuracy {matrix.accuracy:.4f} over {matrix.num_samples} samples")
    return EXIT_OK


def cmd_modes(args) -> int:
    from .cli import _client

    with _client(args) as client:
        modes = client.failure_modes(
            args.bundle,
            medoids=args.medoids,
            top_filters=args.top_filters,
            include_map=args.map,
            include_members=args.members,
        )
        names = client.index_info(bundle=args.bundle)[0].class_names if not args.json else []
    if args.json:
        return _print_json({"failure_modes": modes})
    print(
        f"{len(modes)} failure modes of {modes.num_misclassified} misclassified samples "
        f"({modes.num_unassigned} in none); silhouette {modes.silhouette:.3f}"
    )
    print(f"  {modes.method}")
    print(modes.table(names, width=_terminal_width()))
    if args.members:
        for m in modes:
            print(f"\nmode {m.id} ({m.size} members): {' '.join(str(i) for i in m.member_ids.tolist())}")
    for m in modes:
        shared = m.shared_surprise[:3]
        if shared:
            text = ", ".join(f"{f.layer}[{f.filter}] x{f.count}" for f in shared)
            print(f"mode {m.id}: shared surprise filters {text}")
    return EXIT_OK
