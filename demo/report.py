"""The demo's static HTML report: `demo-report/index.html` with PNGs beside it.

Everything shown is passed in (computed by the demo from the service's answers); this
module only lays it out. Plots use matplotlib's Agg backend; the page needs no server.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
.muted{color:#666} table{border-collapse:collapse;margin:.6rem 0} td,th{border:1px solid #ccc;padding:.25rem .55rem;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.row{display:flex;gap:1.2rem;align-items:flex-start;flex-wrap:wrap}
.pix{image-rendering:pixelated;width:140px;height:140px;border:1px solid #bbb}
.grid{display:grid;grid-template-columns:repeat(5,120px);gap:.6rem}
.grid figure{margin:0;font-size:.78rem} .grid img{image-rendering:pixelated;width:112px;height:112px;border:1px solid #bbb}
.bad{color:#b00020} .ok{color:#0a7a2a} figure{margin:0}
"""


@dataclass
class NeighborView:
    id: int
    similarity: float
    label: int
    predicted: int
    image_png: bytes


@dataclass
class QueryView:
    """One investigated sample: what the demo asked the service and what it answered."""

    id: int
    label: int
    predicted: int
    true_confidence: float
    predicted_confidence: float
    image_png: bytes
    overlay_png: bytes
    profile: np.ndarray  # (F,) standardized
    top_filters: list[tuple[str, int, float]]  # (layer, filter, z)
    neighbors: list[NeighborView]
    confusions: list[tuple[int, int, int]]  # (true, predicted, count) among neighbors
    finetune_rows: list[dict] = field(default_factory=list)
    pruning_rows: list[dict] = field(default_factory=list)


def write_report(
    out_dir: Path,
    *,
    title: str,
    summary: dict[str, Any],
    class_names: Sequence[str],
    layers: Sequence[tuple[str, int, int]],  # (name, filters, offset)
    queries: Sequence[QueryView],
    dataset_confusions: Sequence[tuple[int, int, int]],
    metrics: dict[str, Any],
) -> Path:
    """Writes index.html, metrics.json and the PNGs into ``out_dir``; returns the page path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = _namer(class_names)
    parts = [
        f"<!doctype html><meta charset=utf-8><title>{_e(title)}</title><style>{CSS}</style>",
        f"<h1>{_e(title)}</h1>",
        _summary_html(summary),
        "<h2>Dataset</h2>",
        _dataset_html(dataset_confusions, metrics, name),
    ]
    for q in queries:
        parts.append(_query_html(out_dir, q, layers, name))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    page = out_dir / "index.html"
    page.write_text("\n".join(parts) + "\n")
    return page


def profile_plot_png(path: Path, profile: np.ndarray, layers: Sequence[tuple[str, int, int]], title: str) -> None:
    """Standardized profile, layers left to right, filters sorted high->low within each layer
    (the presentation of the paper's Figs. 1-2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=100)
    x0 = 0
    for i, (_name, filters, offset) in enumerate(layers):
        values = np.sort(np.asarray(profile[offset : offset + filters]))[::-1]
        xs = np.arange(x0, x0 + filters)
        ax.bar(xs, values, width=1.0, color="#3b6fb6" if i % 2 == 0 else "#e07b39", linewidth=0)
        x0 += filters
    ax.axhline(0, color="#444", linewidth=0.6)
    ax.set_xlim(0, x0)
    ax.set_xlabel("filters (layers left to right, sorted within each layer)")
    ax.set_ylabel("z-score")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _namer(class_names: Sequence[str]):
    return lambda c: class_names[c] if 0 <= c < len(class_names) else str(c)


def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _summary_html(summary: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th class=l>{_e(k)}</th><td class=l>{_e(v)}</td></tr>" for k, v in summary.items())
    return f"<table>{rows}</table>"


def _dataset_html(confusions, metrics: dict[str, Any], name) -> str:
    pairs = "".join(
        f"<tr><td class=l>{_e(name(t))}</td><td class=l>{_e(name(p))}</td><td>{c}</td></tr>" for t, p, c in confusions
    )
    rows = []
    for space, label in (("saliency", "parameter saliency profiles"), ("penultimate", "penultimate-layer features")):
        m = metrics[space]
        rows.append(
            f"<tr><td class=l>{label}</td><td>{_pct(m['misclassified']['neighbors_misclassified'])}</td>"
            f"<td>{_pct(m['misclassified']['neighbors_same_confusion_pair'])}</td>"
            f"<td>{_pct(m['correct']['neighbors_correct'])}</td>"
            f"<td>{_pct(1 - m['misclassified']['neighbors_misclassified'])}</td></tr>"
        )
    k = metrics["saliency"]["k"]
    return (
        "<div class=row><div><h3>Most frequent confusions</h3><table><tr><th class=l>true</th>"
        f"<th class=l>predicted</th><th>count</th></tr>{pairs}</table></div>"
        f"<div><h3>Neighbor agreement ({k} nearest, excluding self)</h3><table><tr><th class=l>space</th>"
        "<th>misclassified:<br>neighbors misclassified</th><th>misclassified:<br>same confusion pair</th>"
        "<th>correct:<br>neighbors correct</th><th>misclassified:<br>neighbors correct</th></tr>"
        + "".join(rows)
        + "</table><p class=muted>The paper (A.2, ResNet-50 on ImageNet) reports 89.0% correct "
        "neighbors for correct samples vs 10.8% for misclassified ones. Counts: "
        f"{metrics['saliency']['misclassified']['count']} misclassified, "
        f"{metrics['saliency']['correct']['count']} correct.</p></div></div>"
    )


def _query_html(out_dir: Path, q: QueryView, layers, name) -> str:
    stem = f"sample-{q.id}"
    (out_dir / f"{stem}.png").write_bytes(q.image_png)
    (out_dir / f"{stem}-heat.png").write_bytes(q.overlay_png)
    profile_plot_png(
        out_dir / f"{stem}-profile.png",
        q.profile,
        layers,
        f"sample {q.id}: {name(q.label)} predicted as {name(q.predicted)}",
    )
    cells = []
    for n in q.neighbors:
        (out_dir / f"{stem}-nn-{n.id}.png").write_bytes(n.image_png)
        cls = "ok" if n.label == n.predicted else "bad"
        cells.append(
            f"<figure><img src='{stem}-nn-{n.id}.png' alt='sample {n.id}'><figcaption>#{n.id} · sim {n.similarity:.3f}"
            f"<br><span class={cls}>{_e(name(n.label))} → {_e(name(n.predicted))}</span></figcaption></figure>"
        )
    top = "".join(f"<tr><td class=l>{_e(layer)}</td><td>{f}</td><td>{z:.2f}</td></tr>" for layer, f, z in q.top_filters)
    conf = ", ".join(f"{_e(name(t))} → {_e(name(p))}: {c}" for t, p, c in q.confusions)
    return (
        f"<h2>Sample {q.id}: <span class=bad>{_e(name(q.label))} predicted as {_e(name(q.predicted))}</span></h2>"
        f"<div class=row><figure><img class=pix src='{stem}.png' alt='image'><figcaption>true {_e(name(q.label))} "
        f"({q.true_confidence:.2f})<br>predicted {_e(name(q.predicted))} ({q.predicted_confidence:.2f})</figcaption></figure>"
        f"<figure><img class=pix src='{stem}-heat.png' alt='input-space saliency'><figcaption>pixels driving the top filters"
        "</figcaption></figure>"
        f"<div><b>Top salient filters</b><table><tr><th class=l>layer</th><th>filter</th><th>z</th></tr>{top}</table></div></div>"
        f"<p><img src='{stem}-profile.png' alt='saliency profile' style='max-width:100%'></p>"
        f"<h3>10 nearest failures</h3><p class=muted>Confusions among them: {conf}</p><div class=grid>{''.join(cells)}</div>"
        + _rows_table("Fine-tuning evaluation (one normalised step on the reference)", q.finetune_rows)
        + _rows_table("Pruning evaluation", q.pruning_rows)
    )


def _rows_table(title: str, rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<h3>{_e(title)}</h3><table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:+.4f}" if abs(v) < 10 else f"{v:.1f}"
    return _e(v)
