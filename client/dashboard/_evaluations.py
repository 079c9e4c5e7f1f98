"""Evaluations in the dashboard: the start forms' values -> SDK calls, an operation's result
-> tables and plots, and the WatchOperation stream -> Server-Sent Events for the browser."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator

from . import _svg
from ._backend import Backend
from ._errors import FormError
from ._views import EXPERIMENTS

SELECTIONS = ("most", "random", "least")
# An operation page follows its operation at most this long per connection; the browser's
# EventSource then reconnects by itself and the watch goes on.
EVENTS_S = 600.0


# ---------------------------------------------------------------------------------------
# Form values (strings from the browser) -> SDK arguments. Empty means "the server's
# default" (the SDK sends 0 / empty), as in the CLI.


def ints(text: str | None, name: str) -> list[int] | None:
    if not text or not text.strip():
        return None
    try:
        return [int(t) for t in text.replace(" ", ",").split(",") if t.strip()]
    except ValueError:
        raise FormError(f"{name}: expected comma-separated whole numbers, got {text!r}") from None


def one_int(text: str | None, name: str) -> int | None:
    values = ints(text, name)
    if values is None:
        return None
    if len(values) != 1:
        raise FormError(f"{name}: expected one whole number, got {text!r}")
    return values[0]


def one_float(text: str | None, name: str) -> float | None:
    if not text or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise FormError(f"{name}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise FormError(f"{name}: expected a finite number, got {text!r}")
    return value


def options(text: str | None) -> dict[str, str]:
    """ "k=v, k2=v2" -> {"k": "v", "k2": "v2"} (experiment options)."""
    result = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FormError(f"options: expected key=value pairs separated by commas, got {item.strip()!r}")
        result[key.strip()] = value.strip()
    return result


def start(backend: Backend, kind: str, form: dict[str, str], selections: list[str], uploads=None):
    """Starts a `kind` evaluation ("finetune" | "pruning" | "experiment") from form values;
    returns the SDK's OperationHandle. The reference is `sample_id`, an `upload` token of
    ``uploads`` (the image and its label), or (fine-tuning) a `failure_mode`."""
    seed = one_int(form.get("seed"), "seed") or 0
    if kind == "experiment":
        name = (form.get("name") or "").strip()
        if name not in EXPERIMENTS:
            raise FormError(f"name: choose one of {', '.join(EXPERIMENTS)}")
        if not backend.offers("start_experiment"):
            raise FormError("experiments are not available with this version of parasal.client")
        kwargs = {"references": one_int(form.get("references"), "references"), "seed": seed}
        if opts := options(form.get("options")):
            kwargs["options"] = opts
        return backend.call("start_experiment", name, **kwargs)
    if kind not in ("finetune", "pruning"):
        raise FormError(f"unknown evaluation {kind!r}")
    bad = [s for s in selections if s not in SELECTIONS]
    if bad:
        raise FormError(f"selections: unknown {', '.join(bad)}; choose from {', '.join(SELECTIONS)}")
    kwargs = {
        "counts": ints(form.get("counts"), "counts"),
        "selections": selections or None,
        "num_neighbors": one_int(form.get("num_neighbors"), "num_neighbors"),
        "seed": seed,
    }
    method = "start_finetune_evaluation" if kind == "finetune" else "start_pruning_evaluation"
    # Newer options go out only when given, so an SDK without them still starts the rest.
    newer = {
        "random_draws": one_int(form.get("random_draws"), "random_draws"),
        "num_collateral": one_int(form.get("num_collateral"), "num_collateral"),
        "failure_mode": one_int(form.get("failure_mode"), "failure_mode"),
    }
    sample_id = one_int(form.get("sample_id"), "sample_id")
    token = (form.get("upload") or "").strip()
    if sum(x is not None and x != "" for x in (sample_id, token, newer["failure_mode"])) > 1:
        raise FormError("give one of sample_id, an uploaded image or failure_mode")
    if newer["failure_mode"] is not None:
        if kind != "finetune":
            raise FormError("failure_mode: only fine-tuning evaluations can target a failure mode")
    elif token:
        if uploads is None:
            raise FormError("upload: no uploaded images here")
        upload = uploads.get(token)  # NotFound once forgotten
        kwargs["image"], kwargs["label"] = upload.data, upload.label
    elif sample_id is None:
        raise FormError("sample_id: give the sample to evaluate (or a failure mode for fine-tuning)")
    for name, value in newer.items():
        if value is not None:
            if not _accepts(getattr(backend.client, method), name):
                raise FormError(f"{name}: not available with this version of parasal.client")
            kwargs[name] = value
    if sample_id is not None:
        kwargs["sample_id"] = sample_id
    if kind == "finetune":
        kwargs["step_size"] = one_float(form.get("step_size"), "step_size")
    return backend.call(method, **kwargs)


def _accepts(fn, name: str) -> bool:
    """Whether the SDK method takes keyword ``name`` (or any keyword)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


# ---------------------------------------------------------------------------------------
# An operation's page


def operation_view(op) -> dict:
    result = op.result
    view = {"op": op, "summary": [], "tables": [], "charts": [], "plot_url": ""}
    if result is None:
        return view
    scalars, nested = _fields(result)
    view["summary"] = [(k, _shown(v)) for k, v in scalars]
    for key, value in nested:
        view["summary"] += [(f"{key}.{k}", _shown(v)) for k, v in _fields(value)[0]]
    rows = getattr(result, "rows", None)
    if rows:
        view["tables"].append(_table("Rows", rows))
        view["charts"] = _charts(op.kind, rows)
    points = getattr(result, "points", None)
    if points:
        view["tables"].append(_table("Points (mean with its 95% bootstrap interval)", points))
    if getattr(result, "plot_png", None):
        view["plot_url"] = f"/img/operations/{op.id}/plot.png"
    return view


def _fields(value) -> tuple[list, list]:
    """(scalar fields, nested dataclass fields) of a dataclass, skipping arrays and lists."""
    scalars, nested = [], []
    if not dataclasses.is_dataclass(value):
        return scalars, nested
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        if dataclasses.is_dataclass(v):
            nested.append((f.name, v))
        elif v is None or isinstance(v, (bool, int, float, str)):
            if f.name not in ("json", "plot_png"):
                scalars.append((f.name, v))
    return scalars, nested


def _table(title: str, rows) -> dict:
    """Columns: each row's scalar fields, then its nested dataclasses' (collateral.flips)."""
    first_scalars, first_nested = _fields(rows[0])
    columns = [k for k, _ in first_scalars] + [f"{k}.{n}" for k, v in first_nested for n, _ in _fields(v)[0]]
    body = []
    for row in rows:
        scalars, nested = _fields(row)
        values = dict(scalars)
        for k, v in nested:
            values.update({f"{k}.{n}": x for n, x in _fields(v)[0]})
        body.append([_shown(values.get(c)) for c in columns])
    return {"title": title, "columns": columns, "rows": body}


def _charts(kind: str, rows) -> list:
    """Per selection, the neighbours' corrected share and the reference's true-confidence
    change against the number of filters (the paper's figures 3 and 5)."""
    charts = []
    delta = "reference_true_confidence_delta" if kind == "finetune" else "true_confidence_delta"
    for metric, label in (("neighbors_corrected_fraction", "neighbours corrected"), (delta, "true-class confidence Δ")):
        series: dict[str, list] = {}
        baselines: dict[str, float] = {}
        for r in rows:
            value = getattr(r, metric, None)
            if value is None or not math.isfinite(value):
                continue
            if r.count > 0:
                series.setdefault(r.selection, []).append((r.count, float(value)))
            else:  # the whole-network step: one value, drawn across as a reference line
                baselines[r.selection.replace("_", " ")] = float(value)
        if series:
            charts.append(
                {"title": label, "svg": _svg.lines_svg(series, "filters changed", label, baselines=baselines)}
            )
    return charts


def _shown(value) -> str:
    if value is None:
        return "–"  # not measured
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


# ---------------------------------------------------------------------------------------
# Live progress


def operation_json(op) -> dict:
    """The snapshot the browser's progress bar reads (strict JSON)."""
    progress = op.progress if math.isfinite(op.progress) else 0.0
    return {"id": op.id, "state": op.state, "progress": progress, "message": op.message, "done": op.done}


def events(backend: Backend, op_id: str) -> Iterator[str]:
    """Server-Sent Events for one operation: `progress` on every snapshot WatchOperation
    sends, then `done`; `failure` (with the status) if the watch itself fails."""
    from ..errors import OperationTimeout, ParasalError

    handle = backend.client.operation_handle(op_id)
    yield "retry: 2000\n\n"  # the browser reconnects after 2 s if the stream drops
    try:
        for op in handle.watch(timeout=EVENTS_S):
            data = json.dumps(operation_json(op), allow_nan=False)
            yield f"event: progress\ndata: {data}\n\n"
            if op.done:
                yield f"event: done\ndata: {data}\n\n"
                return
    except OperationTimeout:
        return  # the browser reconnects and watches again
    except ParasalError as exc:
        data = json.dumps({"code": exc.code.name, "message": exc.details}, allow_nan=False)
        yield f"event: failure\ndata: {data}\n\n"
