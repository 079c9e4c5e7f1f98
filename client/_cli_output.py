"""What the `parasal` command prints: tables for people (rich, folded to the terminal)
and strict JSON for scripts (null where a value was not measured, never NaN)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np

from .types import BundleInfo, Operation, Sample, _format_table

EXIT_OK = 0


def _top_filter(filters) -> str:
    return f"{filters[0].layer}[{filters[0].filter}] z={filters[0].z:.2f}" if filters else ""


def _class(index: int, name: str) -> str:
    return f"{index} ({name})" if name else str(index)


def _time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _filters_table(filters) -> str:
    if not filters:
        return "  (none)"
    return _table(["index", "layer", "filter", "z"], [[f.index, f.layer, f.filter, f.z] for f in filters])


def _print_bundle(b: BundleInfo, default: bool) -> None:
    print(f"bundle {b.name}{' (default)' if default else ''}")
    fields = [
        ("model", f"{b.model}  {b.model_fingerprint[:16]}"),
        ("dataset", b.dataset),
        ("samples", f"{b.num_samples} ({b.num_misclassified} misclassified)"),
        ("filters", f"{b.num_filters} in {len(b.layers)} layers"),
        ("index", b.index_type),
        ("input", "x".join(str(s) for s in b.input_shape) or "-"),
        ("classes", ", ".join(f"{i}:{n}" for i, n in enumerate(b.class_names)) or "-"),
        ("created", _time(b.created_at)),
    ]
    for key, value in fields:
        print(f"  {key:<8} {value}")
    if b.layers:
        print(
            _table(
                ["layer", "kind", "filters", "offset"],
                [[layer.name, layer.kind, layer.filters, layer.offset] for layer in b.layers],
            )
        )


def _print_sample(s: Sample) -> None:
    print(f"sample {s.id}  {s.uri}")
    print(f"  label      {_class(s.label, s.label_name)}")
    print(f"  predicted  {_class(s.predicted, s.predicted_name)}  ({'correct' if s.correct else 'wrong'})")
    print(f"  confidence true {s.true_confidence:.4f}, predicted {s.predicted_confidence:.4f}; loss {s.loss:.4f}")
    print("top filters:")
    print(_filters_table(s.top_filters))


def _print_operation(op: Operation) -> None:
    print(f"operation {op.id} ({op.kind}, bundle {op.bundle or '-'}): {op.state}, {op.progress:.0%}")
    print(f"  created {_time(op.created_at)}, updated {_time(op.updated_at)}")
    if op.message:
        print(f"  {op.message}")
    if op.error is not None:
        print(f"  error: {op.error.message} ({op.error.code.name})")
    if op.result is not None and hasattr(op.result, "summary"):  # results that print themselves (suppression)
        print(op.result.summary(width=_terminal_width()))
    elif op.result is not None:
        ref = op.result.reference
        who = f"sample {ref.sample_id}" if ref.sample_id is not None else "uploaded image"
        print(
            f"reference {who}: label {ref.label}, predicted {ref.predicted}, true confidence "
            f"{ref.true_confidence:.4f}; {len(op.result.neighbor_ids)} neighbours"
        )
        print(op.result.table(width=_terminal_width()))


def _terminal_width() -> int | None:
    """Columns of the terminal stdout writes to; None (no folding) when it is not one."""
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else None
    except (OSError, ValueError, AttributeError):
        return None


def _table(headers: list[str], rows: list[list]) -> str:
    """A table for people: long cells (paths) fold to fit the terminal."""
    return _format_table(headers, rows, width=_terminal_width())


def _jsonable(value):
    """SDK values as JSON-ready data: arrays as lists, times as ISO 8601, bytes left out,
    NaN and infinities as null ("not measured")."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not isinstance(getattr(value, f.name), (bytes, bytearray))
        }
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist()) if value.dtype.kind in "fc" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, grpc.StatusCode):
        return value.name
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _print_json(document) -> int:
    json.dump(_jsonable(document), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")
    return EXIT_OK
