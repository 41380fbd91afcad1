"""Evaluation metrics, threshold tuning, the quality gate and plot data.

Pure functions over numpy arrays: ``y_true`` is a 0/1 int array ``[n, 18]`` and ``probs`` a float
array ``[n, 18]``, both in ``LABELS`` order. Nothing here loads a model or knows about stages,
so every figure that decides a promotion can be checked on small hand-built arrays.
The metrics themselves come from scikit-learn; this module only chooses what to compute on.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from components.core.contract import Record, atomic_write, write_json
from components.core.params import EvaluateParams
from components.core.taxonomy import LABELS

log = logging.getLogger(__name__)

# Slack for ">=" against a configured limit: 0.9 - 0.01 is not exactly 0.89 in floating point,
# and a gate must not fail on the last bit of a float.
_EPS = 1e-9
_GRID_DECIMALS = 6
_MAX_PR_POINTS = 200


# ---------------------------------------------------------------------------------------------
# input checks


def _check_arrays(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Coerce and validate the two arrays, so a shape slip fails here and not as a wrong number."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=float)
    k = len(LABELS)
    if y.ndim != 2 or y.shape[1] != k:
        raise ValueError(f"y_true must have shape [n, {k}] (one column per category in LABELS order), got {y.shape}")
    if p.shape != y.shape:
        raise ValueError(f"probs shape {p.shape} does not match y_true shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or infinite values")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"probs must lie in [0, 1], got range [{p.min():.4g}, {p.max():.4g}]")
    return y.astype(int), p


def _threshold_vector(thresholds: Mapping[str, float]) -> np.ndarray:
    missing = [c for c in LABELS if c not in thresholds]
    if missing:
        raise ValueError(f"thresholds missing for {missing}; tune_thresholds gives one per category")
    return np.array([float(thresholds[c]) for c in LABELS])


def _decisions(probs: np.ndarray, thresholds: Mapping[str, float]) -> np.ndarray:
    """Flag = probability at or above the category's threshold (the serving rule)."""
    return (probs >= _threshold_vector(thresholds)[None, :]).astype(int)


def _f(x: Any) -> float:
    return float(x)


# ---------------------------------------------------------------------------------------------
# thresholds


def threshold_grid(params: EvaluateParams) -> np.ndarray:
    """The candidate thresholds, min..max inclusive; rounded so 0.7 on the grid is the float 0.7."""
    steps = int(math.floor((params.threshold_max - params.threshold_min) / params.threshold_step + 1e-6))
    grid = np.round(params.threshold_min + params.threshold_step * np.arange(steps + 1), _GRID_DECIMALS)
    return grid[grid <= params.threshold_max + _EPS]


def _middle_of_widest_run(mask: np.ndarray) -> int:
    """Index at the middle of the longest run of True (the first such run on a tie).

    A plateau of equally good thresholds is common on small validation sets; its middle keeps
    the most margin on both sides, where the first point sits on the edge of a cliff.
    """
    idx = np.flatnonzero(mask)
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(idx) - 1]))
    widest = int(np.argmax(ends - starts))
    lo, hi = idx[starts[widest]], idx[ends[widest]]
    return int(lo + (hi - lo) // 2)


def tune_thresholds(y_true: Any, probs: Any, params: EvaluateParams) -> dict[str, float]:
    """Per category, the grid threshold with the best validation F1 (middle of a tied plateau).

    A category with no validation positives has no F1 to maximise and gets the default.
    """
    y, p = _check_arrays(y_true, probs)
    grid = threshold_grid(params)
    out: dict[str, float] = {}
    no_positives = []
    for j, cat in enumerate(LABELS):
        if y[:, j].sum() == 0:
            out[cat] = float(params.default_threshold)
            no_positives.append(cat)
            continue
        # One column per grid point: sklearn scores all thresholds in one multilabel call.
        preds = (p[:, j, None] >= grid[None, :]).astype(int)
        truth = np.broadcast_to(y[:, j, None], preds.shape)
        _, _, f1, _ = precision_recall_fscore_support(truth, preds, average=None, zero_division=0)
        best = np.isclose(f1, f1.max(), rtol=0, atol=1e-12)
        out[cat] = float(grid[_middle_of_widest_run(best)])
    if no_positives:
        log.warning("no validation positives for %s: using default threshold %.2f",
                    ", ".join(no_positives), params.default_threshold)
    log.info("tuned thresholds: %s", ", ".join(f"{c}={t:.2f}" for c, t in out.items()))
    return out


# ---------------------------------------------------------------------------------------------
# metrics


def category_metrics(y_true: Any, probs: Any, thresholds: Mapping[str, float]) -> dict:
    """Precision, recall, F1 and PR AUC per category at the given thresholds, plus macro/micro.

    Macro figures average all 18 categories (a category nobody caught counts as 0), so a
    category that silently collapses pulls the headline number down. Macro PR AUC averages
    only categories with positives, since average precision is undefined without them.
    """
    y, p = _check_arrays(y_true, probs)
    pred = _decisions(p, thresholds)
    labels = list(range(len(LABELS)))
    prec, rec, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=0
    )
    per: dict[str, dict[str, Any]] = {}
    aucs = []
    for j, cat in enumerate(LABELS):
        auc = None
        if support[j] > 0:
            auc = _f(average_precision_score(y[:, j], p[:, j]))
            aucs.append(auc)
        per[cat] = {
            "precision": _f(prec[j]),
            "recall": _f(rec[j]),
            "f1": _f(f1[j]),
            "pr_auc": auc,
            "support": int(support[j]),
            "threshold": float(thresholds[cat]),
            "predicted": int(pred[:, j].sum()),
        }
    return {
        "per_category": per,
        "macro_f1": _f(np.mean(f1)),
        "micro_f1": _f(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_precision": _f(np.mean(prec)),
        "macro_recall": _f(np.mean(rec)),
        "macro_pr_auc": _f(np.mean(aucs)) if aucs else None,
        "samples": int(y.shape[0]),
    }


def calibration(y_true: Any, probs: Any, bins: int) -> dict:
    """Brier score per category and ECE with a reliability table over all (label, prob) pairs.

    Thresholds only rank; calibration says whether a 0.8 really means "80% of these are bad",
    which matters to anyone reading raw scores downstream.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    y, p = _check_arrays(y_true, probs)
    if y.shape[0] == 0:
        raise ValueError("calibration needs at least one example")
    per_brier = {
        cat: _f(brier_score_loss(y[:, j], p[:, j], pos_label=1)) for j, cat in enumerate(LABELS)
    }
    flat_y = y.ravel().astype(float)
    flat_p = p.ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds [edge_i, edge_i+1); probability 1.0 goes in the last bin.
    which = np.clip(np.floor(flat_p * bins).astype(int), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    sum_p = np.bincount(which, weights=flat_p, minlength=bins)
    sum_y = np.bincount(which, weights=flat_y, minlength=bins)
    reliability = []
    ece = 0.0
    total = flat_p.size
    for i in range(bins):
        n_i = int(counts[i])
        mean_p = sum_p[i] / n_i if n_i else None
        frac = sum_y[i] / n_i if n_i else None
        if n_i:
            ece += n_i / total * abs(mean_p - frac)
        reliability.append({
            "bin_low": _f(edges[i]),
            "bin_high": _f(edges[i + 1]),
            "count": n_i,
            "mean_prob": None if mean_p is None else _f(mean_p),
            "frac_pos": None if frac is None else _f(frac),
        })
    return {
        "brier": _f(np.mean(list(per_brier.values()))),
        "ece": _f(ece),
        "per_category_brier": per_brier,
        "reliability": reliability,
    }


def _macro_f1_over(y: np.ndarray, pred: np.ndarray, cols: Sequence[int]) -> float | None:
    if not len(cols):
        return None
    return _f(f1_score(y, pred, labels=list(cols), average="macro", zero_division=0))


def _check_records(records: Sequence[Record], y: np.ndarray) -> None:
    if len(records) != y.shape[0]:
        raise ValueError(f"{len(records)} records but {y.shape[0]} rows of labels; they must line up row for row")


def robustness(records: Sequence[Record], y_true: Any, probs: Any, thresholds: Mapping[str, float]) -> dict:
    """How much adversarial perturbation hurts: clean parents vs their perturbed variants.

    Only variants whose parent is in the same split count, and each pair contributes one
    parent row and one variant row, so both sides are scored on the same examples.
    Macro F1 covers the categories with support among the parents.
    """
    y, p = _check_arrays(y_true, probs)
    _check_records(records, y)
    pred = _decisions(p, thresholds)
    index = {r.id: i for i, r in enumerate(records)}
    parents, variants, kinds = [], [], []
    for i, r in enumerate(records):
        if r.source != "perturbation":
            continue
        parent = r.metadata.get("parent_id")
        if parent in index:
            parents.append(index[parent])
            variants.append(i)
            kinds.append(str(r.metadata.get("perturbation") or "unknown"))
    if not parents:
        return {"n_pairs": 0}
    pi, vi = np.array(parents), np.array(variants)
    cols = [j for j in range(len(LABELS)) if y[pi, j].sum() > 0]

    def side(rows: np.ndarray) -> dict:
        return {
            "macro_f1": _macro_f1_over(y[rows], pred[rows], cols),
            "exact_match": _f(accuracy_score(y[rows], pred[rows])),
        }

    clean, perturbed = side(pi), side(vi)
    flips = pred[vi] != pred[pi]
    by_kind: dict[str, dict[str, Any]] = {}
    grouped: dict[str, list[int]] = defaultdict(list)
    for k, kind in enumerate(kinds):
        grouped[kind].append(k)
    for kind in sorted(grouped):
        rows = grouped[kind]
        by_kind[kind] = {"n": len(rows), "flip_rate": _f(flips[rows].mean())}
    drop = {
        key: (None if clean[key] is None or perturbed[key] is None else _f(clean[key] - perturbed[key]))
        for key in ("macro_f1", "exact_match")
    }
    return {
        "n_pairs": len(parents),
        "categories": [LABELS[j] for j in cols],
        "clean": clean,
        "perturbed": perturbed,
        "drop": drop,
        "flip_rate": _f(flips.mean()),
        "by_kind": by_kind,
    }


def per_source(
    records: Sequence[Record],
    y_true: Any,
    probs: Any,
    thresholds: Mapping[str, float],
    prefix: str = "external:",
) -> dict:
    """Scores on each public data set, where our synthetic labels meet someone else's.

    The false-positive rate on label-free examples shows over-flagging of ordinary text
    from a source the model never saw generated.
    """
    y, p = _check_arrays(y_true, probs)
    _check_records(records, y)
    pred = _decisions(p, thresholds)
    rows_by_source: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.source.startswith(prefix):
            rows_by_source[r.source].append(i)
    out: dict[str, dict[str, Any]] = {}
    for source in sorted(rows_by_source):
        rows = np.array(rows_by_source[source])
        ys, ps = y[rows], pred[rows]
        support = ys.sum(axis=0)
        cols = [j for j in range(len(LABELS)) if support[j] > 0]
        per: dict[str, dict[str, Any]] = {}
        if cols:
            prec, rec, f1, sup = precision_recall_fscore_support(
                ys, ps, labels=cols, average=None, zero_division=0
            )
            for k, j in enumerate(cols):
                per[LABELS[j]] = {"f1": _f(f1[k]), "precision": _f(prec[k]), "recall": _f(rec[k]),
                                  "support": int(sup[k])}
        clean = ys.sum(axis=1) == 0
        n_clean = int(clean.sum())
        out[source] = {
            "n": int(len(rows)),
            "macro_f1": _f(np.mean([v["f1"] for v in per.values()])) if per else None,
            "per_category": per,
            "n_no_label": n_clean,
            "no_label_false_positive_rate": _f(ps[clean].any(axis=1).mean()) if n_clean else None,
        }
    return out


# ---------------------------------------------------------------------------------------------
# quality gate


@dataclass
class GateCheck:
    name: str
    passed: bool
    detail: str


@dataclass
class GateVerdict:
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)

    def failing(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "failing": [c.name for c in self.failing()],
        }


def quality_gate(
    metrics: Mapping[str, Any],
    parity: Mapping[str, Any] | None,
    params: EvaluateParams,
    champion_macro_f1: float | None = None,
) -> GateVerdict:
    """Decide promotion: every category's F1 at the floor, ONNX parity, no macro F1 regression.

    Every check is always listed, so a failed gate says everything that is wrong at once.
    A check that could not be measured fails: an unmeasured model is not a safe one.
    """
    checks: list[GateCheck] = []
    per = metrics.get("per_category", {})
    floor = params.f1_floor
    for cat in LABELS:
        f1 = per.get(cat, {}).get("f1")
        if f1 is None:
            checks.append(GateCheck(f"f1_floor:{cat}", False, "f1 not measured"))
        elif f1 + _EPS >= floor:
            checks.append(GateCheck(f"f1_floor:{cat}", True, f"f1 {f1:.3f} >= {floor:.2f}"))
        else:
            checks.append(GateCheck(f"f1_floor:{cat}", False, f"f1 {f1:.3f} < {floor:.2f}"))

    tol = params.parity_tolerance
    rate = None if parity is None else parity.get("decision_diff_rate")
    if rate is None:
        checks.append(GateCheck("parity", False, "parity not measured: no ONNX vs PyTorch comparison was run"))
    elif rate <= tol + _EPS:
        checks.append(GateCheck("parity", True, f"decision diff rate {rate:.4f} <= {tol:.4f}"))
    else:
        checks.append(GateCheck("parity", False, f"decision diff rate {rate:.4f} > {tol:.4f}"))

    macro = metrics.get("macro_f1")
    if champion_macro_f1 is None:
        checks.append(GateCheck("no_regression", True, "no champion yet"))
    elif macro is None:
        checks.append(GateCheck("no_regression", False, "macro f1 not measured"))
    else:
        need = champion_macro_f1 - params.regression_tolerance
        ok = macro + _EPS >= need
        rel = ">=" if ok else "<"
        checks.append(GateCheck(
            "no_regression", ok,
            f"macro f1 {macro:.4f} {rel} champion {champion_macro_f1:.4f} - {params.regression_tolerance:.4f}",
        ))

    verdict = GateVerdict(passed=all(c.passed for c in checks), checks=checks)
    if verdict.passed:
        log.info("quality gate passed (%d checks)", len(checks))
    else:
        log.warning("quality gate failed: %s", "; ".join(f"{c.name}: {c.detail}" for c in verdict.failing()))
    return verdict


def select_served_variant(results: Mapping[str, Mapping[str, Any]], tolerance: float) -> str | None:
    """The smallest exported variant that passed the gate and is within tolerance of fp32.

    fp32 is the reference because it is the exact export of the trained model; when it is
    absent the best macro F1 present stands in. Returns None when no variant qualifies.
    """
    if not results:
        return None
    if "fp32" in results:
        ref = float(results["fp32"]["macro_f1"])
    else:
        ref = max(float(r["macro_f1"]) for r in results.values())
        log.warning("no fp32 result to compare with; using the best macro f1 present (%.4f)", ref)
    ok = [
        (int(r["size_bytes"]), -float(r["macro_f1"]), name)
        for name, r in results.items()
        if r.get("gate_passed") and float(r["macro_f1"]) + _EPS >= ref - tolerance
    ]
    if not ok:
        log.warning("no exported variant passed the gate within %.4f of the reference", tolerance)
        return None
    return min(ok)[2]


# ---------------------------------------------------------------------------------------------
# plots


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

    y, p = _check_arrays(y_true, probs)
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
