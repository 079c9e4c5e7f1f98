"""`parasal export`: a bundle as one Parquet file, one row per sample.

    parasal export --bundle bundles/fashion --out fashion.parquet

Columns (the proto's names): ``id``, ``uri``, ``label``, ``label_name``, ``predicted``,
``predicted_name``, ``true_confidence``, ``predicted_confidence``, ``loss``, ``correct``,
``beta``, ``num_surprise``, ``num_expectation`` (null without reference data),
``failure_mode`` (null for correct samples; the modes the server's ListFailureModes
reports, same method and seed), ``top_filters`` (list of struct ``index, layer, filter,
z``, highest z first, as GetSample gives them) and ``profile`` (fixed-size list of float32:
the standardized profile, one value per filter in layout order).

The file is written in row groups of ``--row-group-size`` rows, each built from numpy
arrays of that block (the profile column straight from the block's (rows, F) matrix), so
memory stays bounded by a block whatever the bundle's size; it is written to a temporary
name and renamed when complete. The schema metadata (key ``parasal``) records the bundle,
its generation, the model and its fingerprint, the class names, the filter layout and how
the failure modes were found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import IndexerError

__all__ = ["export_parquet", "parquet_schema", "main", "DEFAULT_ROW_GROUP"]

PROG = "parasal export"
DEFAULT_ROW_GROUP = 16_384


def parquet_schema(num_filters: int, metadata: dict | None = None):
    import pyarrow as pa

    filter_score = pa.struct(
        [("index", pa.int32()), ("layer", pa.string()), ("filter", pa.int32()), ("z", pa.float32())]
    )
    fields = [
        ("id", pa.int64()),
        ("uri", pa.string()),
        ("label", pa.int32()),
        ("label_name", pa.string()),
        ("predicted", pa.int32()),
        ("predicted_name", pa.string()),
        ("true_confidence", pa.float32()),
        ("predicted_confidence", pa.float32()),
        ("loss", pa.float32()),
        ("correct", pa.bool_()),
        ("beta", pa.float32()),
        ("num_surprise", pa.int32()),
        ("num_expectation", pa.int32()),
        ("failure_mode", pa.int32()),
        ("top_filters", pa.list_(filter_score)),
        ("profile", pa.list_(pa.float32(), num_filters)),
    ]
    meta = {"parasal": json.dumps(metadata, sort_keys=True)} if metadata is not None else None
    return pa.schema(fields, metadata=meta)


def export_parquet(
    bundle,
    out: str | os.PathLike,
    *,
    row_group_size: int = DEFAULT_ROW_GROUP,
    modes: bool = True,
    profile: bool = True,
    progress: bool = False,
) -> int:
    """Write an open bundle to ``out`` (Parquet); returns the number of rows written.

    ``modes``: compute the failure modes for the ``failure_mode`` column (else null);
    ``profile``: include the ``profile`` column."""
    import pyarrow.parquet as pq

    from .columns import sample_columns
    from .durable import fsync_dir, temp_name
    from .failure_modes import MIN_FAILURES, bundle_failure_modes

    if row_group_size < 1:
        raise ValueError("row_group_size must be >= 1")
    columns = sample_columns(bundle)
    found = None
    if modes and int((~columns.correct).sum()) >= MIN_FAILURES:
        found = bundle_failure_modes(bundle, shared=False, with_map=False)
    schema = parquet_schema(bundle.num_filters, _metadata(bundle, found))
    if not profile:
        schema = schema.remove(schema.get_field_index("profile"))
    out = Path(out)
    tmp = temp_name(out)
    n = len(columns)
    bar = _progress(n, progress)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for a in range(0, n, row_group_size):
                rows = np.arange(a, min(n, a + row_group_size))
                writer.write_table(_block(bundle, columns, rows, found, schema, profile), row_group_size=len(rows))
                if bar is not None:
                    bar.update(len(rows))
            if n == 0:
                writer.write_table(schema.empty_table())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        if bar is not None:
            bar.close()
        if tmp.exists():
            tmp.unlink()
    return n


def _block(bundle, columns, rows: np.ndarray, found, schema, profile: bool):
    """One row group: (m,) slices of the table, the block's metadata records and profiles."""
    import pyarrow as pa

    ids = columns.ids[rows]
    metas = bundle.metas(ids.tolist())  # uri and top filters live in the metadata records
    names = bundle.classes or []
    label, predicted = columns.label[rows], columns.predicted[rows]
    arrays = {
        "id": pa.array(ids, pa.int64()),
        "uri": pa.array([m.uri for m in metas], pa.string()),
        "label": pa.array(label.astype(np.int32)),
        "label_name": _names(label, names),
        "predicted": pa.array(predicted.astype(np.int32)),
        "predicted_name": _names(predicted, names),
        "true_confidence": pa.array(columns.true_confidence[rows].astype(np.float32)),
        "predicted_confidence": pa.array(columns.predicted_confidence[rows].astype(np.float32)),
        "loss": pa.array(columns.loss[rows].astype(np.float32)),
        "correct": pa.array(columns.correct[rows]),
        "beta": _nullable(columns.beta, rows, np.float32),
        "num_surprise": _nullable(columns.num_surprise, rows, np.int32),
        "num_expectation": _nullable(columns.num_expectation, rows, np.int32),
        "failure_mode": _modes(found, ids),
        "top_filters": _top_filters(bundle, metas, schema.field("top_filters").type),
    }
    if profile:
        values = bundle.profiles(ids)  # (m, F) float32
        arrays["profile"] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), bundle.num_filters)
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)


def _names(labels: np.ndarray, names: Sequence[str]):
    """Class names as a dictionary array (null where the bundle has no names)."""
    import pyarrow as pa

    if not names:
        return pa.nulls(len(labels), pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(labels.astype(np.int32)), pa.array(list(names))).cast(pa.string())


def _nullable(column: np.ndarray | None, rows: np.ndarray, dtype):
    """A column of the reference data: null without it, and null where a float is NaN."""
    import pyarrow as pa

    if column is None:
        return pa.nulls(len(rows), pa.from_numpy_dtype(np.dtype(dtype)))
    values = np.asarray(column[rows]).astype(dtype)
    mask = np.isnan(values) if values.dtype.kind == "f" else None
    return pa.array(values, mask=mask)


def _modes(found, ids: np.ndarray):
    import pyarrow as pa

    if found is None:
        return pa.nulls(len(ids), pa.int32())
    modes = found.mode_of(ids)
    return pa.array(modes, mask=modes < 0)


def _top_filters(bundle, metas, list_type):
    """list<struct<index, layer, filter, z>> from each record's (index, z) pairs (flat arrays + offsets)."""
    import pyarrow as pa

    counts = np.array([len(m.top_filters) for m in metas], np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    flat = [pair for m in metas for pair in m.top_filters]
    index = np.array([i for i, _ in flat], np.int64)
    z = np.array([v for _, v in flat], np.float32)
    layers, within = bundle.layout.locate_many(index) if len(index) else ([], np.zeros(0, np.int64))
    children = [
        pa.array(index.astype(np.int32)),
        pa.array(layers, pa.string()),
        pa.array(within.astype(np.int32)),
        pa.array(z),
    ]
    struct = pa.StructArray.from_arrays(children, fields=list(list_type.value_type))
    return pa.ListArray.from_arrays(pa.array(offsets), struct, type=list_type)


def _metadata(bundle, found) -> dict:
    m = bundle.manifest
    return {
        "bundle": str(bundle.name),
        "generation": int(bundle.generation),
        "model": m.model.name,
        "model_fingerprint": bundle.fingerprint,
        "dataset": ", ".join(m.dataset_specs),
        "class_names": list(bundle.classes or []),
        "layers": [{"name": s.name, "kind": s.kind, "filters": s.filters, "offset": s.offset} for s in bundle.layout],
        "failure_modes": None
        if found is None
        else {"method": found.method, "silhouette": found.silhouette, "k": found.k},
    }


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="exporting", unit="rows", file=sys.stderr, disable=None)


# ---------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Write a bundle as a Parquet file, one row per sample.")
    p.add_argument("--bundle", required=True, type=Path, metavar="DIR", help="the bundle directory")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the Parquet file to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--row-group-size", type=int, default=DEFAULT_ROW_GROUP, metavar="N", help="rows per row group (%(default)s)"
    )
    p.add_argument("--no-modes", action="store_true", help="skip the failure modes (failure_mode stays null)")
    p.add_argument("--no-profile", action="store_true", help="leave the profile column out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--verify",
        choices=["sha256", "size", "none"],
        default="size",
        help="check the bundle's files when opening it (default: sizes)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `parasal export`; returns the exit status (2 for an unusable request)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.row_group_size < 1:
        print(f"{PROG}: error: --row-group-size must be >= 1", file=sys.stderr)
        return 2
    if args.out.exists() and not args.force:
        print(f"{PROG}: error: {args.out} exists (--force replaces it)", file=sys.stderr)
        return 2
    if not args.out.parent.is_dir():
        print(f"{PROG}: error: directory {args.out.parent} does not exist", file=sys.stderr)
        return 2
    from .bundle import open_bundle

    verify = {"sha256": True, "size": "size", "none": False}[args.verify]
    try:
        with open_bundle(args.bundle, verify=verify, gpu=False) as bundle:
            n = export_parquet(
                bundle,
                args.out,
                row_group_size=args.row_group_size,
                modes=not args.no_modes,
                profile=not args.no_profile,
                progress=not args.no_progress,
            )
    except IndexerError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; {args.out} was not written", file=sys.stderr)
        return 130
    print(f"exported {n} samples to {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
