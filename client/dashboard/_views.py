"""Page data: SDK answers turned into what the templates show. No HTTP here, no HTML beyond
the SVG plots (`_svg`): each function takes the `Backend` and returns a dict for a template.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from . import _svg
from ._backend import Backend, Section

NEIGHBOURS_SHOWN = 12  # the nearest failures grid: two rows of six at 1280 px
TOP_FILTERS_SHOWN = 10
SAMPLES_PAGE_SIZE = 48
# Beyond these, the overview lists the largest confusions instead of drawing the matrix
# (ImageNet's 1000 x 1000 cells are no table), and thins the map's points.
MAX_MATRIX_CLASSES = 30
TOP_CONFUSIONS = 40
MAX_MAP_POINTS = 5000
SAMPLE_ORDERS = ("id", "loss", "true_confidence", "predicted_confidence", "beta")
EXPERIMENTS = ("pruning", "finetune", "neighbors", "masking", "sanity", "ranking", "beta", "suppression")

# The sample page's three independent calls go out together (sample, profile, neighbours);
# a small pool shared by all requests, so a page costs the slowest call, not the sum.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="parasal-dashboard")


def _parallel(*calls):
    futures = [_POOL.submit(fn, *args, **kwargs) for fn, args, kwargs in calls]
    return [f.result() for f in futures]


def png_data_uri(data: bytes | None) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii") if data else ""


def pixelated(info) -> bool:
    """Small images (Fashion-MNIST's 28x28) are shown enlarged with sharp pixels."""
    shape = tuple(getattr(info, "input_shape", ()) or ())
    return bool(shape) and max(shape[-2:]) <= 64


# ---------------------------------------------------------------------------------------
# Overview


def overview(backend: Backend) -> dict:
    info = backend.info()
    names = backend.class_names()
    confusion, modes = _parallel(
        (backend.optional, ("confusion_matrix",), {"what": "confusion matrix"}),
        (backend.optional, ("failure_modes",), {"what": "failure modes", "include_map": True}),
    )
    return {
        "info": info,
        "confusion": Section(confusion_view(confusion.value, names)) if confusion.shown else confusion,
        "modes": Section(modes_view(modes.value, names)) if modes.shown else modes,
        "map_svg": _svg.failure_map_svg(map_points(modes.value), names) if modes.shown else "",
        "map_total": len(_seq(getattr(modes.value, "map", None))) if modes.shown else 0,
        "map_shown": MAX_MAP_POINTS,
        "pixelated": pixelated(info),
    }


def map_points(fm) -> list:
    """The failure map's points, thinned to MAX_MAP_POINTS by an even stride (every k-th in
    the server's order) so a browser stays responsive on bundles with very many failures."""
    points = _seq(getattr(fm, "map", None))
    if len(points) <= MAX_MAP_POINTS:
        return points
    keep = np.linspace(0, len(points) - 1, MAX_MAP_POINTS).round().astype(np.int64)
    return [points[i] for i in keep]


def confusion_view(cm, names: Sequence[str]) -> dict:
    """Rows of cells with counts, a shade and the link to those samples."""
    counts = np.asarray(cm.counts, dtype=np.int64)  # (C, C): [true, predicted]
    cm_names = _seq(getattr(cm, "class_names", None)) or list(names)
    if len(cm_names) < counts.shape[0]:
        cm_names += [str(i) for i in range(len(cm_names), counts.shape[0])]
    off = counts.copy()
    np.fill_diagonal(off, 0)
    max_off = max(int(off.max()), 1) if off.size else 1
    summary = {
        "names": cm_names,
        "accuracy": _finite(getattr(cm, "accuracy", None)),
        "num_samples": int(getattr(cm, "num_samples", counts.sum())),
        "rows": [],
        "top": [],
    }
    if counts.shape[0] > MAX_MATRIX_CLASSES:
        order = np.argsort(-off, axis=None, kind="stable")[:TOP_CONFUSIONS]  # largest first, ties by cell
        summary["top"] = [
            {
                "true": cm_names[t],
                "predicted": cm_names[p],
                "count": int(off[t, p]),
                "href": f"/samples?true_labels={t}&predicted_labels={p}",
            }
            for t, p in zip(*np.unravel_index(order, off.shape))
            if off[t, p] > 0
        ]
        return summary
    row_totals = counts.sum(axis=1)
    per_class = _seq(getattr(cm, "per_class_accuracy", None))
    rows = []
    for t in range(counts.shape[0]):
        cells = []
        for p in range(counts.shape[1]):
            n = int(counts[t, p])
            if t == p:
                alpha = n / row_totals[t] if row_totals[t] else 0.0
                style = f"background: rgba(0, 114, 178, {0.15 + 0.6 * alpha:.2f})"
            else:
                style = f"background: rgba(213, 94, 0, {0.85 * n / max_off:.2f})" if n else ""
            cells.append(
                {
                    "count": n,
                    "style": style,
                    "diagonal": t == p,
                    "href": f"/samples?true_labels={t}&predicted_labels={p}",
                    "title": f"true {cm_names[t]}, predicted {cm_names[p]}: {n}",
                }
            )
        acc = per_class[t] if t < len(per_class) else None
        rows.append({"label": t, "name": cm_names[t], "cells": cells, "accuracy": _finite(acc)})
    summary["rows"] = rows
    return summary


def modes_view(fm, names: Sequence[str]) -> dict:
    def name(label: int) -> str:
        return names[label] if 0 <= label < len(names) else str(label)

    modes = []
    for m in fm.modes:
        modes.append(
            {
                "id": m.id,
                "size": m.size,
                "colour": _svg.colour(m.id),
                "confusions": [(name(c.label), name(c.predicted), c.count) for c in m.confusions[:4]],
                "more_confusions": max(0, len(m.confusions) - 4),
                "top_filters": list(m.top_filters[:5]),
                "medoid_ids": list(m.medoid_ids[:5]),
                "cohesion": _finite(getattr(m, "cohesion", None)),
                "shared_surprise": _seq(getattr(m, "shared_surprise", None))[:3],
                "shared_expectation": _seq(getattr(m, "shared_expectation", None))[:3],
            }
        )
    pairs = sorted({(p.label, p.predicted) for p in _seq(getattr(fm, "map", None))})
    return {
        "modes": modes,
        "method": getattr(fm, "method", ""),
        "silhouette": _finite(getattr(fm, "silhouette", None)),
        "num_misclassified": getattr(fm, "num_misclassified", None),
        "num_unassigned": getattr(fm, "num_unassigned", None),
        "map_method": getattr(fm, "map_method", ""),
        # pair -> colour for the map's "colour by confusion pair" toggle (the script reads it)
        "pair_colours": {f"{t}-{p}": _svg.colour(i) for i, (t, p) in enumerate(pairs)},
        "pair_names": {f"{t}-{p}": f"{name(t)} → {name(p)}" for t, p in pairs},
    }


# ---------------------------------------------------------------------------------------
# Samples list


@dataclass
class SampleFilters:
    """The samples page's filters, in the proto's vocabulary (ListSamplesRequest)."""

    true_labels: list[int] = field(default_factory=list)
    predicted_labels: list[int] = field(default_factory=list)
    correctness: str = ""  # "", "correct", "misclassified"
    failure_mode: int | None = None
    min_loss: float | None = None
    max_loss: float | None = None
    only_with_surprise: bool = False  # these two need a bundle with reference data
    only_with_expectation: bool = False
    order_by: str = "id"
    descending: bool = False

    def sdk_kwargs(self) -> dict:
        kwargs: dict = {"order_by": self.order_by, "descending": self.descending}
        if self.true_labels:
            kwargs["true_labels"] = self.true_labels
        if self.predicted_labels:
            kwargs["predicted_labels"] = self.predicted_labels
        if self.correctness:
            kwargs["correct"] = self.correctness == "correct"
        for name in ("failure_mode", "min_loss", "max_loss"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        for name in ("only_with_surprise", "only_with_expectation"):
            if getattr(self, name):
                kwargs[name] = True
        return kwargs

    def query(self, **changes) -> str:
        """The query string of these filters (with ``changes``), for paging links."""
        from urllib.parse import urlencode

        values = dataclasses.asdict(self) | changes
        pairs = [("true_labels", v) for v in values.pop("true_labels")]
        pairs += [("predicted_labels", v) for v in values.pop("predicted_labels")]
        # (0 is a value here: failure mode 0, a loss bound of 0)
        pairs += [
            (k, "1" if v is True else v) for k, v in values.items() if v is not None and v != "" and v is not False
        ]
        return urlencode(pairs)


def samples_page(backend: Backend, filters: SampleFilters, page: int, page_size: int = SAMPLES_PAGE_SIZE) -> dict:
    """One page of the filtered samples (page 1 first). The SDK iterates the server's pages;
    the dashboard takes the slice it shows and one more to know if a next page exists."""
    info = backend.info()
    offset = (page - 1) * page_size
    wanted = offset + page_size + 1
    section = backend.optional(
        "samples", what="listing samples", limit=wanted, page_size=min(1000, wanted), **filters.sdk_kwargs()
    )
    rows, total = [], None
    if section.shown:
        rows = list(islice(section.value, offset, wanted))
        total = getattr(section.value, "total_size", None)
    return {
        "info": info,
        "names": backend.class_names(),
        "filters": filters,
        "note": section.note,
        "samples": [sample_row(s) for s in rows[:page_size]],
        "page": page,
        "has_next": len(rows) > page_size,
        "total": total,
        "orders": SAMPLE_ORDERS,
        "has_reference": getattr(info, "reference", None) is not None,
        "pixelated": pixelated(info),
    }


def sample_row(s) -> dict:
    return {
        "id": s.id,
        "label_name": s.label_name or str(s.label),
        "predicted_name": s.predicted_name or str(s.predicted),
        "correct": s.correct,
        "true_confidence": s.true_confidence,
        "predicted_confidence": s.predicted_confidence,
        "loss": s.loss,
        "beta": _finite(getattr(s, "beta", None)),
        "failure_mode": getattr(s, "failure_mode", None),
    }


# ---------------------------------------------------------------------------------------
# One sample (indexed or uploaded)


def sample_page(backend: Backend, sample_id: int) -> dict:
    info = backend.info()
    sample, profile, neighbours = _parallel(
        (backend.call, ("sample", sample_id), {}),
        (backend.call, ("profile",), {"sample_id": sample_id, "full": True, "top_k": TOP_FILTERS_SHOWN}),
        (
            backend.call,
            ("find_similar_failures",),
            {"sample_id": sample_id, "k": NEIGHBOURS_SHOWN, "only_misclassified": True},
        ),
    )
    view = _explained(info, profile, neighbours)
    view.update(
        kind="sample",
        token=None,
        title=f"Sample {sample.id}",
        id=sample.id,
        uri=sample.uri,
        label_name=sample.label_name or backend.class_name(sample.label),
        predicted_name=sample.predicted_name or backend.class_name(sample.predicted),
        beta=_finite(getattr(sample, "beta", None)),
        num_surprise=getattr(sample, "num_surprise", None),
        num_expectation=getattr(sample, "num_expectation", None),
        failure_mode=getattr(sample, "failure_mode", None),
        image_url=f"/img/samples/{sample.id}.png",
        overlay_url=f"/img/samples/{sample.id}/overlay.png",
        surprise_url=f"/samples/{sample.id}/surprise",
    )
    return view


def upload_page(backend: Backend, token: str, upload) -> dict:
    info = backend.info()
    profile, neighbours = _parallel(
        (
            backend.call,
            ("profile",),
            {"image": upload.data, "label": upload.label, "full": True, "top_k": TOP_FILTERS_SHOWN},
        ),
        (
            backend.call,
            ("find_similar_failures",),
            {"image": upload.data, "label": upload.label, "k": NEIGHBOURS_SHOWN, "only_misclassified": True},
        ),
    )
    view = _explained(info, profile, neighbours)
    view.update(
        kind="upload",
        token=token,
        title=f"Uploaded image {upload.name}",
        id=None,
        uri=upload.name,
        label_name=backend.class_name(profile.label),
        predicted_name=backend.class_name(profile.predicted),
        beta=None,
        num_surprise=None,
        num_expectation=None,
        failure_mode=None,
        image_url=f"/img/uploads/{token}.png",
        overlay_url=f"/img/uploads/{token}/overlay.png",
        surprise_url=f"/uploads/{token}/surprise",
    )
    return view


def _explained(info, profile, neighbours) -> dict:
    """What the sample and upload pages share: confidences, profile plot, top filters and
    the nearest failures."""
    vector = profile.vector if profile.vector is not None else np.zeros(0, np.float32)
    return {
        "info": info,
        "correct": profile.label == profile.predicted,
        "pair_href": f"/samples?true_labels={profile.label}&predicted_labels={profile.predicted}",
        "true_confidence": profile.true_confidence,
        "predicted_confidence": profile.predicted_confidence,
        "loss": profile.loss,
        "top_filters": list(profile.top_filters),
        "profile_svg": _svg.profile_svg(vector, info.layers, profile.top_filters),
        "neighbours": [
            {
                "id": n.id,
                "similarity": n.similarity,
                "label_name": n.sample.label_name or str(n.sample.label),
                "predicted_name": n.sample.predicted_name or str(n.sample.predicted),
            }
            for n in neighbours
        ],
        "pixelated": pixelated(info),
    }


def surprise_view(backend: Backend, **query) -> dict:
    """The surprise/expectation fragment: a note when the bundle has no reference data."""
    info = backend.info()
    if hasattr(info, "reference") and info.reference is None:
        return {"note": "This bundle was indexed without reference data, so it has no surprise or expectation."}
    section = backend.optional(
        "surprise", what="surprise and expectation", include_exemplar_images=True, include_alpha=False, **query
    )
    if not section.shown:
        return {"note": section.note}
    s = section.value
    return {
        "note": "",
        "beta": _finite(getattr(s, "beta", None)),
        "layer": getattr(s, "layer", ""),
        "method": getattr(s, "method", ""),
        "surprise": [_deviation(d) for d in s.surprise],
        "expectation": [_deviation(d) for d in s.expectation],
        "pixelated": pixelated(info),
    }


def _deviation(d) -> dict:
    region = png_data_uri(getattr(d, "region_png", None))
    exemplars = [
        {
            "id": e.id,
            "label_name": e.label_name or str(e.label),
            "activation": e.activation,
            "image": png_data_uri(getattr(e, "image_png", None)),
        }
        for e in _seq(getattr(d, "exemplars", None))
    ]
    return {
        "layer": d.layer,
        "filter": d.filter,
        "alpha": d.alpha,
        "mean": d.mean,
        "deviation": d.deviation,
        "region": region,
        "exemplars": exemplars,
        # the server details the first few of each list (region, exemplars); the rest are a table
        "detailed": bool(region or exemplars),
    }


def _seq(value) -> list:
    """A list of a field that may be missing (None), a list or a numpy array."""
    return [] if value is None else list(value)


def _finite(value) -> float | None:
    """None for missing or NaN values (shown as "–", not measured)."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
