"""Matplotlib (Agg) figures of experiment points: curves with CI bands, and bar charts."""

from __future__ import annotations

import io
from collections.abc import Sequence

from ._common import Point

__all__ = ["curves_png", "bars_png"]

_COLORS = {"most": "tab:red", "random": "tab:blue", "least": "tab:green", "whole_network": "black"}
#: For the other selections (methods, cascade stages), in order of appearance.
_PALETTE = ("tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray", "gold")


def _figure(panels: int, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    cols = min(panels, 3)
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(4.2 * cols, 7.5), height * rows * (1.4 if panels == 1 else 1)), squeeze=False
    )
    for ax in axes.flat[panels:]:
        ax.axis("off")
    return plt, fig, list(axes.flat[:panels])


def _png(plt, fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def curves_png(
    points: Sequence[Point],
    metrics: Sequence[str],
    *,
    title: str,
    xlabel: str = "filters (count)",
    logx: bool = False,
    hlines: dict[str, str] | None = None,
    titles: dict[str, str] | None = None,
) -> bytes:
    """One panel per metric: mean vs count per selection, the 95 % CI as a band.
    ``hlines``: selection -> line style for selections drawn as horizontal lines (the
    whole-network baseline)."""
    plt, fig, axes = _figure(len(metrics))
    hlines = hlines or {}
    for ax, metric in zip(axes, metrics):
        mine = [p for p in points if p.metric == metric and p.mean is not None]
        others = [s for s in dict.fromkeys(p.selection for p in mine) if s not in _COLORS]
        for selection in dict.fromkeys(p.selection for p in mine):
            rows = sorted((p for p in mine if p.selection == selection), key=lambda p: p.count)
            color = _COLORS.get(selection) or _PALETTE[others.index(selection) % len(_PALETTE)]
            if selection in hlines:
                ax.axhline(rows[0].mean, color=color or "gray", linestyle=hlines[selection], label=selection)
                continue
            xs = [p.count for p in rows]
            ax.plot(xs, [p.mean for p in rows], marker="o", ms=3, color=color, label=selection)
            lo = [p.ci_low if p.ci_low is not None else p.mean for p in rows]
            hi = [p.ci_high if p.ci_high is not None else p.mean for p in rows]
            ax.fill_between(xs, lo, hi, alpha=0.2, color=color)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title((titles or {}).get(metric, metric), fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _png(plt, fig)


def bars_png(
    points: Sequence[Point], metrics: Sequence[str], *, title: str, titles: dict[str, str] | None = None
) -> bytes:
    """One panel per metric: a bar per selection with its CI as an error bar."""
    plt, fig, axes = _figure(len(metrics))
    for ax, metric in zip(axes, metrics):
        mine = [p for p in points if p.metric == metric and p.mean is not None]
        labels = [p.selection if len({q.count for q in mine}) == 1 else f"{p.selection}/{p.count}" for p in mine]
        means = [p.mean for p in mine]
        low = [p.mean - (p.ci_low if p.ci_low is not None else p.mean) for p in mine]
        high = [(p.ci_high if p.ci_high is not None else p.mean) - p.mean for p in mine]
        ax.bar(range(len(mine)), means, yerr=[low, high], capsize=3, color="tab:gray")
        ax.set_xticks(range(len(mine)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title((titles or {}).get(metric, metric), fontsize=9)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10)
    return _png(plt, fig)
