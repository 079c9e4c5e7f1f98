"""`parasal surprise` and `parasal suppress` (Hartley et al.), and the beta filters of `parasal similar`.

    parasal surprise --sample 7 --out surprise-7/
    parasal surprise --image shirt.png --label Shirt --json
    parasal suppress --sample 7
    parasal similar --sample 7 --beta-below 0 --only-with-surprise

`surprise --out DIR` writes each detailed filter's region (`surprise-1-f17-region.png`,
`expectation-2-f40-region.png`, enlarged to read), its exemplar strip (`...-exemplars.png`:
the reference images side by side, the activating part bright) and `surprise.json` (what
`--json` prints). Registered by `cli.build_parser` through :func:`add_surprise_commands`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from ._cli_options import _add_query_options, _comma_ints, _positive_int
from ._cli_output import _print_json, _terminal_width
from ._images import enlarge_png, png_size, readable_scale
from .types import FilterDeviation, Surprise

EXIT_OK = 0


def add_surprise_commands(sub, command) -> None:
    """`surprise`, `suppress`; and `similar`'s --beta-below / --beta-above / --only-with-surprise."""
    p = command("surprise", cmd_surprise, "surprise and expectation filters of a sample or an image (Hartley et al.)")
    _add_query_options(p)
    p.add_argument("--high", type=float, help="surprise percentile P(high) (default: the server's, 99.9)")
    p.add_argument("--low", type=float, help="expectation percentile P(low) (default: the server's, 0.1)")
    p.add_argument("--max-filters", type=_positive_int, metavar="N", help="at most N filters per list (default: all)")
    p.add_argument(
        "--detailed",
        type=_positive_int,
        metavar="N",
        help="filters of each list with a region and exemplars (default: the server's, 3; at most 16)",
    )
    p.add_argument(
        "--exemplars", type=_positive_int, metavar="N", help="exemplars per detailed filter (default: the server's, 6)"
    )
    p.add_argument("--any-class", action="store_true", help="exemplars from every class (default: the sample's class)")
    p.add_argument(
        "--segments", type=_positive_int, metavar="N", help="SLIC superpixels for regions (default: the server's, 50)"
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write region PNGs, exemplar strips and surprise.json into DIR (created if missing)",
    )
    p.add_argument("--scale", type=_positive_int, metavar="N", help="enlarge written PNGs N times (default: readable)")

    p = command("suppress", cmd_suppress, "blank what drives a sample's most surprising filter (long-running)")
    _add_query_options(p)
    p.add_argument(
        "--segments", type=_comma_ints, metavar="25,50,100", help="SLIC superpixel counts (default: the server's)"
    )
    p.add_argument(
        "--blank-counts", type=_comma_ints, metavar="1,2,3,5", help="superpixels blanked (default: the server's)"
    )
    p.add_argument("--no-wait", action="store_true", help="print the operation id and return")

    similar = sub.choices.get("similar")
    if similar is not None:
        similar.add_argument("--beta-below", type=float, metavar="X", help="only neighbours with beta below X")
        similar.add_argument("--beta-above", type=float, metavar="X", help="only neighbours with beta above X")
        similar.add_argument(
            "--only-with-surprise", action="store_true", help="only neighbours with at least one surprise filter"
        )


def similar_kwargs(args) -> dict:
    """What `cmd_similar` passes on from the options above (absent when not registered)."""
    return {
        "beta_below": getattr(args, "beta_below", None),
        "beta_above": getattr(args, "beta_above", None),
        "only_with_surprise": getattr(args, "only_with_surprise", False),
    }


def cmd_surprise(args) -> int:
    from .cli import _client, _query_kwargs

    with _client(args) as client:
        result = client.surprise(
            **_query_kwargs(args, client),
            high=args.high,
            low=args.low,
            max_filters=args.max_filters,
            detailed=args.detailed,
            exemplars=args.exemplars,
            exemplars_any_class=args.any_class,
            segments=args.segments,
            include_alpha=True,
            include_exemplar_images=args.out is not None,
            bundle=args.bundle,
        )
    written = _write_out(result, args.out, args.scale) if args.out is not None else []
    document = {"surprise": result.to_dict(), "out": str(args.out) if args.out is not None else None}
    if args.out is not None:
        document["files"] = [str(p) for p in written]
        (args.out / "surprise.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    if args.json:
        return _print_json(document)
    _print_surprise(result, args)
    if args.out is not None:
        print(f"\n{len(written)} files and surprise.json written to {args.out}")
    return EXIT_OK


def _print_surprise(s: Surprise, args) -> None:
    who = f"sample {s.sample_id}" if s.sample_id is not None else f"image {args.image}"
    print(
        f"{who}: label {s.label}, predicted {s.predicted} ({'correct' if s.correct else 'wrong'}); "
        f"true confidence {s.true_confidence:.4f}"
    )
    print(f"  beta {s.beta:.6g}  ({s.method} on {s.layer}; surprise > P{s.high_percentile:g}, ", end="")
    print(f"expectation < P{s.low_percentile:g})")
    width = _terminal_width()
    for which in ("surprise", "expectation"):
        filters = getattr(s, which)
        print(f"\n{which} filters ({len(filters)}):")
        print(s.table(which, width=width) if filters else "  (none)")


def _write_out(s: Surprise, out: Path, scale: int | None) -> list[Path]:
    """Region PNG and exemplar strip of every detailed filter; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for which in ("surprise", "expectation"):
        for rank, d in enumerate(getattr(s, which), 1):
            stem = out / f"{which}-{rank}-f{d.filter}"
            if d.region_png is not None:
                written.append(_write(stem.with_name(stem.name + "-region.png"), d.region_png, scale))
            strip = _strip(d)
            if strip is not None:
                written.append(_write(stem.with_name(stem.name + "-exemplars.png"), strip, scale))
    return written


def _write(path: Path, png: bytes, scale: int | None) -> Path:
    path.write_bytes(enlarge_png(png, scale or readable_scale(png_size(png))))
    return path


def _strip(d: FilterDeviation) -> bytes | None:
    """The exemplar images side by side (2 px gaps), as one PNG; None without images."""
    from PIL import Image

    images = []
    for e in d.exemplars:
        if e.image_png:
            with Image.open(io.BytesIO(e.image_png)) as img:
                images.append(img.convert("RGB"))
    if not images:
        return None
    gap = 2
    height = max(im.height for im in images)
    strip = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1), height))
    x = 0
    for im in images:
        strip.paste(im, (x, 0))
        x += im.width + gap
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    return buffer.getvalue()


def cmd_suppress(args) -> int:
    from .cli import _client, _query_kwargs, _wait_and_print

    with _client(args) as client:
        handle = client.start_suppression(
            **_query_kwargs(args, client), segments=args.segments, blank_counts=args.blank_counts, bundle=args.bundle
        )
        if args.no_wait:
            if args.json:
                return _print_json({"operation": handle.operation})
            print(f"started suppression {handle.id} (parasal ops watch {handle.id})")
            return EXIT_OK
        return _wait_and_print(handle, args)


__all__ = ["add_surprise_commands", "similar_kwargs", "cmd_surprise", "cmd_suppress"]
