"""Charts for the run report (``reports/report.html``), as inline SVG.

Each function takes plain figures (what ``reports/metrics.json`` and ``reports/plots/*.json`` hold)
and returns one ``<svg>`` element as text, ready to be placed in an HTML page: no XML prolog, text
kept as ``<text>`` (searchable, small), ids prefixed so several charts can share a page, and no
date in the metadata, so the same figures give the same SVG.

matplotlib's object API only (``Figure`` on an SVG canvas), never pyplot: no display and no
global figure state.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_COLOURS = {"precision": "#4c72b0", "recall": "#dd8452", "f1": "#55a868"}
_ID = re.compile(r'(\bid="|url\(#|href="#)')
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasSVG(fig)
    return fig


def svg(fig: Any, name: str) -> str:
    """The figure as an inline ``<svg>`` element; ids are prefixed with ``name`` (unique on the page)."""
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name, "font.size": 8}):
        fig.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    text = out.getvalue()
    text = _METADATA.sub("", text[text.index("<svg"):])  # the RDF block names namespaces by URL: not needed inline
    return _ID.sub(lambda m: f"{m.group(1)}{name}-", text)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _grid(n: int, ncols: int = 6) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def _small_multiples(categories: Sequence[str], width_each: float = 2.6, height_each: float = 2.1):
    nrows, ncols = _grid(len(categories))
    height = height_each * nrows + 0.6
    fig = _figure(width_each * ncols, height, layout=None)  # a fixed grid: constrained layout costs seconds here
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.45 / height, top=1 - 0.5 / height, wspace=0.25, hspace=0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(categories):]:
        ax.set_visible(False)
    for ax, cat in zip(axes, categories):
        ax.set_title(cat, fontsize=8)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "", "0.5", "", "1"])
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1], ["0", "", "0.5", "", "1"])
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3, lw=0.5)
    return fig, axes


def _by_category(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        cat = row.get("category")
        if not isinstance(cat, str) or not all(_finite(row.get(k)) for k in keys):
            continue
        series = out.setdefault(cat, {k: [] for k in keys})
        for k in keys:
            series[k].append(float(row[k]))
    return out


def _ordered(found: Mapping[str, Any], order: Sequence[str]) -> list[str]:
    return [c for c in order if c in found] + sorted(c for c in found if c not in order)


def pr_curves(rows: Sequence[Mapping[str, Any]], points: Mapping[str, Mapping[str, Any]],
              order: Sequence[str] = ()) -> str | None:
    """Precision against recall per category (``pr_curves.json``'s ``pr`` rows), with the operating point
    at the tuned threshold (``points[category]`` = ``{"precision", "recall", "threshold"}``) marked.
    None when there is no curve."""
    curves = _by_category(rows, ("precision", "recall"))
    if not curves:
        return None
    cats = _ordered(curves, order)
    fig, axes = _small_multiples(cats)
    for ax, cat in zip(axes, cats):
        c = curves[cat]
        ax.plot(c["recall"], c["precision"], lw=1.1, color=_COLOURS["precision"])
        p = points.get(cat) or {}
        if _finite(p.get("precision")) and _finite(p.get("recall")):
            x, y = float(p["recall"]), float(p["precision"])
            ax.plot([x], [y], "o", color="crimson", ms=4)
            if _finite(p.get("threshold")):
                ax.annotate(f"t={float(p['threshold']):.2f}", (x, y), xytext=(-6, -4), textcoords="offset points",
                            ha="right", va="top", fontsize=6, color="crimson")
    fig.supxlabel("recall", fontsize=8)
    fig.supylabel("precision", fontsize=8)
    return svg(fig, "pr")


def threshold_curves(rows: Sequence[Mapping[str, Any]], tuned: Mapping[str, Any],
                     order: Sequence[str] = ()) -> str | None:
    """Precision, recall and F1 against the threshold per category (``threshold_curves.json``), the tuned
    threshold drawn as a vertical line. None when there is no curve."""
    curves = _by_category(rows, ("threshold", "precision", "recall", "f1"))
    if not curves:
        return None
    cats = _ordered(curves, order)
    fig, axes = _small_multiples(cats)
    for ax, cat in zip(axes, cats):
        c = curves[cat]
        for key in ("precision", "recall", "f1"):
            ax.plot(c["threshold"], c[key], lw=1.0, color=_COLOURS[key], label=key)
        if _finite(tuned.get(cat)):
            t = float(tuned[cat])
            ax.axvline(t, color="black", ls="--", lw=0.8, label="tuned threshold")
            ax.text(t, 0.03, f" {t:.2f}", fontsize=6, ha="left", va="bottom")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncols=len(labels), fontsize=7, frameon=False)
    fig.supxlabel("threshold (validation split)", fontsize=8)
    return svg(fig, "thr")


def reliability(bins: Sequence[Mapping[str, Any]]) -> str | None:
    """A reliability diagram from ``calibration.reliability`` (``[{"bin_low", "bin_high", "count",
    "mean_prob", "frac_pos"}]``): observed frequency against mean predicted probability per bin, with the
    diagonal of perfect calibration, and the count per bin (log scale) below. None without a filled bin."""
    filled = [b for b in bins if isinstance(b, Mapping) and _finite(b.get("mean_prob")) and _finite(b.get("frac_pos"))]
    if not filled:
        return None
    fig = _figure(6.4, 3.0)
    ax, hist = fig.subplots(1, 2, width_ratios=[1.2, 1])
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="perfectly calibrated")
    ax.plot([b["mean_prob"] for b in filled], [b["frac_pos"] for b in filled], "o-", color=_COLOURS["precision"],
            ms=3.5, lw=1.1, label="model")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction positive")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.grid(alpha=0.3, lw=0.5)
    with_edges = [b for b in bins
                  if isinstance(b, Mapping) and _finite(b.get("bin_low")) and _finite(b.get("bin_high"))]
    if with_edges:
        lows = [float(b["bin_low"]) for b in with_edges]
        widths = [float(b["bin_high"]) - float(b["bin_low"]) for b in with_edges]
        counts = [max(int(b.get("count") or 0), 0) for b in with_edges]
        hist.bar(lows, [max(c, 0.9) for c in counts], width=widths, align="edge", color="#8c8c8c", edgecolor="white")
        hist.set_yscale("log")
        hist.set_xlim(0, 1)
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("(text, category) pairs")
    return svg(fig, "rel")


def cooccurrence(labels: Sequence[str], true: Sequence[Sequence[Any]],
                 predicted: Sequence[Sequence[Any]]) -> str | None:
    """Two heatmaps of label co-occurrence counts (true labels, predicted labels), log-scaled colour and the
    count in each cell. None when the matrices do not match the labels."""
    import numpy as np
    from matplotlib.colors import LogNorm

    n = len(labels)
    try:
        mats = [np.asarray(true, dtype=float), np.asarray(predicted, dtype=float)]
    except (TypeError, ValueError):
        return None
    if n == 0 or any(m.shape != (n, n) for m in mats):
        return None
    top = max(float(max(m.max() for m in mats)), 1.0)
    fig = _figure(13.0, 6.4)
    axes = fig.subplots(1, 2)
    for ax, m, title in zip(axes, mats, ("true labels", "predicted labels")):
        image = ax.imshow(np.maximum(m, 0.5), cmap="Blues", norm=LogNorm(vmin=0.5, vmax=top))
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(n), labels, rotation=70, ha="right", fontsize=6)
        ax.set_yticks(range(n), labels, fontsize=6)
        for i in range(n):
            for j in range(n):
                if m[i, j] > 0:
                    dark = m[i, j] > math.sqrt(top)
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=5.5,
                            color="white" if dark else "black")
    fig.colorbar(image, ax=axes, shrink=0.7, label="texts with both labels (test split)")
    return svg(fig, "cooc")
