"""Plot data and charts for the evaluate step: PR curves, threshold curves and per-category F1 (DVC plots and PNGs)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve

from components.core.contract import atomic_write, write_json
from components.core.taxonomy import LABELS
from components.core.params import EvaluateParams
from components.quality.metrics import EPS as _EPS, check_arrays, threshold_grid, threshold_sweep

log = logging.getLogger(__name__)

_MAX_PR_POINTS = 200


def _f(x: Any) -> float:
    return float(x)


def _subsample(n: int, k: int = _MAX_PR_POINTS) -> np.ndarray:
    """At most k evenly spaced indices, always keeping both ends of the curve."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))


def _save_png(fig: Any, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")


def write_plots(
    y_true: Any,
    probs: Any,
    thresholds: Mapping[str, float],
    metrics: Mapping[str, Any],
    out_dir: Path,
) -> dict[str, Path]:
    """Write DVC plot data (JSON) and PNG charts for the PR curves and per-category F1.

    Uses matplotlib's object API on an Agg canvas, never pyplot, so no display or global
    figure state is involved. Every file is written to a temp file and renamed into place.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y, p = check_arrays(y_true, probs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per = metrics.get("per_category", {})

    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for j, cat in enumerate(LABELS):
        if y[:, j].sum() == 0:
            continue
        prec, rec, _ = precision_recall_curve(y[:, j], p[:, j])
        keep = _subsample(len(prec))
        prec, rec = prec[keep], rec[keep]
        curves[cat] = (prec, rec)
        rows.extend({"category": cat, "precision": _f(a), "recall": _f(b)} for a, b in zip(prec, rec))
    paths = {
        "pr_curves.json": out_dir / "pr_curves.json",
        "per_category_f1.json": out_dir / "per_category_f1.json",
        "pr_curves.png": out_dir / "pr_curves.png",
        "per_category_f1.png": out_dir / "per_category_f1.png",
    }
    write_json(paths["pr_curves.json"], {"pr": rows})
    f1_rows = [
        {"category": cat, "f1": _f(per.get(cat, {}).get("f1", 0.0)), "threshold": float(thresholds[cat])}
        for cat in LABELS
    ]
    write_json(paths["per_category_f1.json"], f1_rows)

    # Small multiples: one PR curve per category with the tuned operating point marked.
    ncols = 6
    nrows = math.ceil(len(LABELS) / ncols)
    fig = Figure(figsize=(3.0 * ncols, 2.6 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, cat in zip(axes.ravel(), LABELS):
        ax.set_title(cat, fontsize=9)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        if cat not in curves:
            ax.text(0.5, 0.5, "no positives", ha="center", va="center", fontsize=8, color="grey")
            continue
        prec, rec = curves[cat]
        ax.plot(rec, prec, lw=1.2)
        m = per.get(cat, {})
        if "precision" in m and "recall" in m:
            ax.plot([m["recall"]], [m["precision"]], "o", color="crimson", ms=4)
    for ax in axes.ravel()[len(LABELS):]:
        ax.set_visible(False)
    fig.supxlabel("recall")
    fig.supylabel("precision")
    _save_png(fig, paths["pr_curves.png"])

    floor = metrics.get("f1_floor")
    fig = Figure(figsize=(7, 0.32 * len(LABELS) + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    names = [r["category"] for r in f1_rows][::-1]
    values = [r["f1"] for r in f1_rows][::-1]
    colors = ["crimson" if floor is not None and v + _EPS < floor else "steelblue" for v in values]
    ax.barh(names, values, color=colors)
    thresholds_shown = [r["threshold"] for r in f1_rows][::-1]
    for k, (v, t) in enumerate(zip(values, thresholds_shown)):
        ax.text(min(v + 0.01, 0.8), k, f"{v:.3f} @ {t:.2f}", va="center", fontsize=7)
    if floor is not None:
        ax.axvline(float(floor), color="black", ls="--", lw=1, label=f"F1 floor {float(floor):.2f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 at tuned threshold")
    ax.tick_params(labelsize=8)
    _save_png(fig, paths["per_category_f1.png"])

    log.info("wrote plots to %s", out_dir)
    return paths


def write_threshold_curves(y_true: Any, probs: Any, thresholds: Mapping[str, float], params: EvaluateParams,
                           out_dir: Path) -> Path:
    """Precision, recall and F1 against the threshold per category (the validation split the thresholds
    were tuned on), over the tuning grid: ``threshold_curves.json`` = ``{"threshold_curves": [{"category",
    "threshold", "precision", "recall", "f1"}], "tuned": {category: threshold}}``."""
    y, p = check_arrays(y_true, probs)
    grid = threshold_grid(params)
    rows = []
    for j, cat in enumerate(LABELS):
        if y[:, j].sum() == 0:
            continue
        prec, rec, f1 = threshold_sweep(y[:, j], p[:, j], grid)
        rows.extend({"category": cat, "threshold": _f(t), "precision": _f(a), "recall": _f(b), "f1": _f(c)}
                    for t, a, b, c in zip(grid, prec, rec, f1))
    path = Path(out_dir) / "threshold_curves.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"threshold_curves": rows, "tuned": {c: float(thresholds[c]) for c in LABELS}})
    return path
