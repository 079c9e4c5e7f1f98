"""Plots as inline SVG, drawn here in a few lines each: no plotting library in the browser,
no image round trip, and every mark can be a link (a map point opens its sample).

All functions return `markupsafe.Markup`; every piece of text put into the SVG is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from markupsafe import Markup, escape

# A colour-blind-safe qualitative palette (Okabe-Ito, then Tableau's 10 for more modes).
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
    "#4E79A7",
    "#F28E2B",
    "#59A14F",
    "#B07AA1",
    "#9C755F",
    "#76B7B2",
    "#EDC948",
    "#FF9DA7",
)
UNASSIGNED = "#B0B0B0"  # failure-map points in no mode

# The profile plot draws at most this many points: wide models (ResNet-50: 26,560 filters)
# are reduced per pixel column to the value of largest magnitude, so peaks stay visible.
MAX_PROFILE_POINTS = 2000


def colour(index: int) -> str:
    return UNASSIGNED if index < 0 else PALETTE[index % len(PALETTE)]


def _f(x: float) -> str:
    return f"{x:.1f}"


def reduce_peaks(values: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, values): ``values`` (F,) cut into ``buckets`` runs, each represented by
    its entry of largest |value| (so a single salient filter survives the reduction)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n <= buckets:
        return np.arange(n), values
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    positions = np.empty(buckets, dtype=np.int64)
    for b in range(buckets):  # buckets <= MAX_PROFILE_POINTS: a short loop
        lo, hi = edges[b], max(edges[b + 1], edges[b] + 1)
        positions[b] = lo + int(np.argmax(np.abs(values[lo:hi])))
    return positions, values[positions]


def profile_svg(
    vector: np.ndarray,
    layers: Sequence,
    top_filters: Sequence = (),
    width: int = 1160,
    height: int = 240,
) -> Markup:
    """The standardized profile (F,) as a line over filters, layers as shaded bands with
    their names, the top filters marked with their layer and index."""
    vector = np.asarray(vector, dtype=np.float64)
    n = vector.size
    if n == 0:
        return Markup('<p class="note">No profile values.</p>')
    left, right, top, bottom = 44, 8, 10, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    finite = vector[np.isfinite(vector)]
    lo = min(0.0, float(finite.min()) if finite.size else 0.0)
    hi = max(1.0, float(finite.max()) if finite.size else 1.0)

    def x(i: float) -> float:
        return left + plot_w * (i + 0.5) / n

    def y(v: float) -> float:
        return top + plot_h * (hi - v) / (hi - lo)

    parts = [
        f'<svg class="plot profile" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="saliency profile over {n} filters">'
    ]
    for i, layer in enumerate(layers):  # layer bands and names
        x0, x1 = left + plot_w * layer.offset / n, left + plot_w * (layer.offset + layer.filters) / n
        fill = "#f1f4f8" if i % 2 == 0 else "#e4e9f0"
        name = escape(layer.name)
        parts.append(
            f'<rect x="{_f(x0)}" y="{top}" width="{_f(max(x1 - x0, 0.5))}" height="{plot_h}" fill="{fill}">'
            f"<title>{name}: filters {layer.offset}..{layer.offset + layer.filters - 1}</title></rect>"
        )
        if x1 - x0 >= 28:  # names that fit under their band
            label = name if len(layer.name) * 6.5 < x1 - x0 else escape(layer.name[: max(3, int((x1 - x0) / 6.5))])
            parts.append(
                f'<text x="{_f((x0 + x1) / 2)}" y="{height - 28}" class="axis" text-anchor="middle">{label}</text>'
            )
    for tick in _ticks(lo, hi):  # the z axis
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{_f(y(tick))}" y2="{_f(y(tick))}" class="grid"/>'
            f'<text x="{left - 4}" y="{_f(y(tick) + 4)}" class="axis" text-anchor="end">{tick:g}</text>'
        )
    positions, values = reduce_peaks(vector, min(MAX_PROFILE_POINTS, plot_w * 2))
    points = " ".join(f"{_f(x(p))},{_f(y(v if math.isfinite(v) else 0.0))}" for p, v in zip(positions, values))
    parts.append(f'<polyline points="{points}" class="line"/>')
    for f in top_filters:
        if 0 <= f.index < n:
            parts.append(
                f'<circle cx="{_f(x(f.index))}" cy="{_f(y(f.z))}" r="4" class="mark">'
                f"<title>{escape(f.layer)} filter {f.filter} (profile index {f.index}): z = {f.z:.2f}</title>"
                "</circle>"
            )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" class="axis" text-anchor="middle">'
        f"filters in layout order ({n}); standardized saliency z</text></svg>"
    )
    return Markup("".join(parts))


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo
    if not span > 0:
        return [lo]
    step = 10 ** math.floor(math.log10(span / count))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= count:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step) + 1)]


def failure_map_svg(points: Sequence, class_names: Sequence[str], width: int = 640, height: int = 480) -> Markup:
    """The failure map: one dot per misclassified sample at its 2-D projection, coloured by
    failure mode (the page's script can recolour by confusion pair from the data attributes),
    each a link to its sample page."""
    if not points:
        return Markup('<p class="note">No misclassified samples to map.</p>')
    xs = np.array([p.x for p in points], dtype=np.float64)
    ys = np.array([p.y for p in points], dtype=np.float64)
    pad = 12
    x_lo, x_hi = float(np.nanmin(xs)), float(np.nanmax(xs))
    y_lo, y_hi = float(np.nanmin(ys)), float(np.nanmax(ys))
    sx = (width - 2 * pad) / (x_hi - x_lo) if x_hi > x_lo else 0.0
    sy = (height - 2 * pad) / (y_hi - y_lo) if y_hi > y_lo else 0.0

    def name(label: int) -> str:
        return class_names[label] if 0 <= label < len(class_names) else str(label)

    parts = [
        f'<svg id="failure-map" class="plot map" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="failure map of {len(points)} misclassified samples">'
    ]
    for p, px, py in zip(points, xs, ys):
        cx = pad + (px - x_lo) * sx if sx else width / 2
        cy = height - pad - (py - y_lo) * sy if sy else height / 2
        pair = f"{name(p.label)} → {name(p.predicted)}"
        mode = "no mode" if p.failure_mode < 0 else f"mode {p.failure_mode}"
        parts.append(
            f'<a href="/samples/{int(p.id)}"><circle cx="{_f(cx)}" cy="{_f(cy)}" r="4" '
            f'fill="{colour(p.failure_mode)}" data-mode="{int(p.failure_mode)}" '
            f'data-pair="{int(p.label)}-{int(p.predicted)}"><title>#{int(p.id)} {escape(pair)}, {mode}</title>'
            "</circle></a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def lines_svg(
    series: dict[str, list[tuple[float, float]]],
    x_label: str,
    y_label: str,
    width: int = 560,
    height: int = 260,
    baselines: dict[str, float] | None = None,
) -> Markup:
    """A small line chart: ``series`` name -> (x, y) points, x on a log scale when it spans
    more than a factor of 10 (filter counts 1, 5, 25, 75); ``baselines`` name -> y are dashed
    horizontal lines (the whole-network step). Non-finite values are left out."""
    baselines = {k: v for k, v in (baselines or {}).items() if math.isfinite(v)}
    pts = [(x, y) for s in series.values() for x, y in s if math.isfinite(y)]
    if not pts:
        return Markup('<p class="note">Nothing measured to plot.</p>')
    left, right, top, bottom = 52, 130, 12, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    x_vals = [x for x, _ in pts]
    log = min(x_vals) > 0 and max(x_vals) / min(x_vals) > 10

    def tx(v: float) -> float:
        return math.log10(v) if log else v

    x_lo, x_hi = tx(min(x_vals)), tx(max(x_vals))
    ys = [y for _, y in pts] + list(baselines.values())
    y_lo, y_hi = min(0.0, min(ys)), max(0.0, max(ys))
    if y_hi == y_lo:
        y_hi = y_lo + 1.0

    def px(v: float) -> float:
        return left + (plot_w * (tx(v) - x_lo) / (x_hi - x_lo) if x_hi > x_lo else plot_w / 2)

    def py(v: float) -> float:
        return top + plot_h * (y_hi - v) / (y_hi - y_lo)

    parts = [f'<svg class="plot lines" viewBox="0 0 {width} {height}" width="{width}" role="img">']
    for tick in _ticks(y_lo, y_hi):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{_f(py(tick))}" y2="{_f(py(tick))}" class="grid"/>'
            f'<text x="{left - 4}" y="{_f(py(tick) + 4)}" class="axis" text-anchor="end">{tick:g}</text>'
        )
    for x in sorted(set(x_vals)):
        parts.append(f'<text x="{_f(px(x))}" y="{top + plot_h + 16}" class="axis" text-anchor="middle">{x:g}</text>')
    for i, (name, s) in enumerate(series.items()):
        s = sorted((x, y) for x, y in s if math.isfinite(y))
        if not s:
            continue
        c = colour(i)
        path = " ".join(f"{_f(px(x))},{_f(py(y))}" for x, y in s)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in s:
            parts.append(
                f'<circle cx="{_f(px(x))}" cy="{_f(py(y))}" r="3.5" fill="{c}">'
                f"<title>{escape(name)}: {x:g} → {y:.4g}</title></circle>"
            )
        ly = top + 14 + 18 * i
        parts.append(
            f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="12" height="12" fill="{c}"/>'
            f'<text x="{left + plot_w + 30}" y="{ly + 1}" class="axis">{escape(name)}</text>'
        )
    for j, (name, y) in enumerate(baselines.items()):
        ly = top + 14 + 18 * (len(series) + j)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{_f(py(y))}" y2="{_f(py(y))}" class="baseline">'
            f"<title>{escape(name)}: {y:.4g}</title></line>"
            f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 24}" y1="{ly - 3}" y2="{ly - 3}" class="baseline"/>'
            f'<text x="{left + plot_w + 30}" y="{ly + 1}" class="axis">{escape(name)}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 4}" class="axis" text-anchor="middle">'
        f"{escape(x_label)}{' (log scale)' if log else ''}</text>"
        f'<text x="12" y="{top + plot_h / 2}" class="axis" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2})">{escape(y_label)}</text></svg>'
    )
    return Markup("".join(parts))
