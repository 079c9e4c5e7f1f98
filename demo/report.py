"""The static HTML report: ``index.html`` with PNGs and ``metrics.json`` beside it.

Everything shown is passed in as a ``ReportContent`` (gathered through the SDK by
``parasal.demo.collect``); this module only lays it out. The page comes from Jinja2
templates in ``templates/`` with autoescaping on, so a class name such as ``<script>``
renders as text. Plots use matplotlib's Agg backend; the page needs no server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import SCORES

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass
class NeighborView:
    id: int
    similarity: float
    label: int
    predicted: int
    image_png: bytes


@dataclass
class ExemplarView:
    """A reference image a filter responds to (``id`` is a reference-dataset id)."""

    id: int
    label: int
    activation: float
    image_png: bytes | None


@dataclass
class DeviationView:
    """One surprise or expectation filter of a query (the proto's FilterDeviation)."""

    layer: str
    filter: int
    alpha: float
    mean: float
    threshold: float
    deviation: float
    region_png: bytes | None = None
    exemplars: list[ExemplarView] = field(default_factory=list)


@dataclass
class SurpriseView:
    """Hartley et al. for one query: beta (eq. 2) and the filters off their class's range."""

    beta: float
    layer: str
    method: str
    high_percentile: float
    low_percentile: float
    surprise: list[DeviationView]
    expectation: list[DeviationView]


@dataclass
class QueryView:
    """One investigated sample: what the report asked the service and what it answered."""

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
    surprise: SurpriseView | None = None
    notes: list[str] = field(default_factory=list)  # sections left out for this query, and why


@dataclass
class ModeView:
    """One failure mode (Client.failure_modes): misclassified samples clustered by profile."""

    id: int
    size: int
    cohesion: float
    confusions: list[tuple[int, int, int]]  # (true, predicted, count), most frequent first
    top_filters: list[tuple[str, int, float]]  # (layer, filter, z) of the mode's mean profile
    medoids: list[tuple[int, bytes]]  # (sample id, image PNG), closest to the mode's centre first


@dataclass
class ModesView:
    method: str
    silhouette: float
    num_misclassified: int
    modes: list[ModeView]


@dataclass
class ReportContent:
    """What one report shows. ``None`` for a section means it is left out; ``notes[section]``
    says why in one line (the page shows it in the section's place)."""

    title: str
    summary: dict[str, Any]
    class_names: Sequence[str]
    layers: Sequence[tuple[str, int, int]]  # (name, filters, offset)
    queries: Sequence[QueryView]
    dataset_confusions: Sequence[tuple[int, int, int]]
    neighbors: dict[str, Any] | None  # {"saliency": ..., "penultimate": ... | None}, metrics.neighbor_agreement
    beta: dict[str, Any] | None  # metrics.beta_summary
    notes: dict[str, str] = field(default_factory=dict)
    k: int = 10
    modes: ModesView | None = None


def write_report(out_dir: Path, content: ReportContent) -> Path:
    """Writes index.html, metrics.json and the PNGs into ``out_dir``; returns the page path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = _namer(content.class_names)
    queries = [_query_assets(out_dir, q, content.layers, name) for q in content.queries]
    beta_plot = None
    if content.beta is not None:
        beta_plot = "beta-histogram.png"
        beta_histogram_png(out_dir / beta_plot, content.beta)
    modes = _mode_assets(out_dir, content.modes)
    template = _environment().get_template("report.html.j2")
    page_html = template.render(c=content, name=name, queries=queries, beta_plot=beta_plot, modes=modes)
    metrics = {**(content.neighbors or {}), "beta": content.beta, "failure_modes": _modes_json(content.modes)}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    page = out_dir / "index.html"
    page.write_text(page_html)
    return page


@cache
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every value is text unless a template says otherwise (none does)
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the render, not silently blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(scores=SCORES, pct=_pct, fmt=_fmt, num=_num, sig=_sig)  # the page's number formats
    return env


def _mode_assets(out_dir: Path, modes: ModesView | None) -> list[dict]:
    """Writes each mode's medoid images; returns the modes with the file names to link."""
    out = []
    for m in modes.modes if modes else []:
        files = [f"mode-{m.id}-medoid-{sid}.png" for sid, _ in m.medoids]
        for name, (_, png) in zip(files, m.medoids):
            (out_dir / name).write_bytes(png)
        out.append({"m": m, "medoids": files})
    return out


def _modes_json(modes: ModesView | None) -> dict | None:
    if modes is None:
        return None
    return {
        "method": modes.method,
        "silhouette": modes.silhouette,
        "num_misclassified": modes.num_misclassified,
        "modes": [
            {
                "id": m.id,
                "size": m.size,
                "cohesion": m.cohesion,
                "confusions": [list(c) for c in m.confusions],
                "medoid_ids": [sid for sid, _ in m.medoids],
            }
            for m in modes.modes
        ],
    }


def _query_assets(out_dir: Path, q: QueryView, layers, name) -> dict[str, Any]:
    """Writes one query's PNGs; returns the query with the file names the template links."""
    stem = f"sample-{q.id}"
    files: dict[str, Any] = {"image": f"{stem}.png", "heat": f"{stem}-heat.png", "profile": f"{stem}-profile.png"}
    (out_dir / files["image"]).write_bytes(q.image_png)
    (out_dir / files["heat"]).write_bytes(q.overlay_png)
    profile_plot_png(
        out_dir / files["profile"],
        q.profile,
        layers,
        f"sample {q.id}: {name(q.label)} predicted as {name(q.predicted)}",
    )
    files["neighbors"] = []
    for n in q.neighbors:
        files["neighbors"].append(f"{stem}-nn-{n.id}.png")
        (out_dir / files["neighbors"][-1]).write_bytes(n.image_png)
    files["surprise"] = _deviation_assets(out_dir, stem, "surprise", q.surprise.surprise if q.surprise else [])
    files["expectation"] = _deviation_assets(out_dir, stem, "expectation", q.surprise.expectation if q.surprise else [])
    return {"q": q, "files": files}


def _deviation_assets(out_dir: Path, stem: str, kind: str, rows: list[DeviationView]) -> list[dict]:
    """Per filter: its region PNG (None where the server sent none) and its exemplars' PNGs.
    Exemplar images show the part that activates *this* filter, so the name carries it."""
    out = []
    for d in rows:
        region = None
        if d.region_png:
            region = f"{stem}-{kind}-f{d.filter}-region.png"
            (out_dir / region).write_bytes(d.region_png)
        exemplars = []
        for e in d.exemplars:
            if e.image_png:
                exemplars.append(f"exemplar-f{d.filter}-{e.id}.png")
                (out_dir / exemplars[-1]).write_bytes(e.image_png)
            else:
                exemplars.append(None)
        out.append({"region": region, "exemplars": exemplars})
    return out


def profile_plot_png(path: Path, profile: np.ndarray, layers: Sequence[tuple[str, int, int]], title: str) -> None:
    """Standardized profile, layers left to right, filters sorted high->low within each layer
    (the presentation of the paper's Figs. 1-2)."""
    plt = _pyplot()
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


def beta_histogram_png(path: Path, beta: dict[str, Any]) -> None:
    """The beta distribution of correct vs misclassified samples, each normalised to its own
    count (there are far fewer failures), over the shared bin edges of ``beta_summary``."""
    plt = _pyplot()
    edges = np.asarray(beta["histogram"]["edges"])
    fig, ax = plt.subplots(figsize=(7, 2.8), dpi=100)
    for group, color in (("correct", "#0a7a2a"), ("misclassified", "#b00020")):
        counts = np.asarray(beta["histogram"][group], dtype=np.float64)
        if counts.sum() == 0:
            continue
        share = counts / counts.sum()
        ax.stairs(share, edges, color=color, linewidth=1.4, label=f"{group} ({int(counts.sum())})")
    ax.axvline(0, color="#444", linewidth=0.8, linestyle="--")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))  # importance scores are often ~1e-5
    ax.set_xlabel("β = mean over filters of (α − µ of the true class)")
    ax.set_ylabel("share of the group")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _namer(class_names: Sequence[str]):
    return lambda c: class_names[c] if 0 <= c < len(class_names) else str(c)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _sig(x: float | None) -> str:
    """Three significant digits, signed: importance scores (alpha, beta) are often ~1e-5."""
    return "–" if x is None else f"{x:+.3g}"


def _fmt(v: Any) -> str:
    """An evaluation table cell."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:+.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)
