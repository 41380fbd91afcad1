"""Evaluation metrics and threshold tuning (the gate is :mod:`components.quality.gate`, plots
:mod:`components.quality.plots`).

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
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_recall_fscore_support,
)

from components.core.contract import Record
from components.core.params import EvaluateParams
from components.core.taxonomy import LABELS
from components.model.scoring import flags

log = logging.getLogger(__name__)

# Slack for ">=" against a configured limit: 0.9 - 0.01 is not exactly 0.89 in floating point,
# and a gate must not fail on the last bit of a float.
EPS = 1e-9
_GRID_DECIMALS = 6


# ---------------------------------------------------------------------------------------------
# input checks


def check_arrays(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Coerce and validate ``y_true`` (0/1 ``[n, 18]``) and ``probs`` (in [0, 1], same shape).

    Returns them as int and float arrays; raises ValueError naming what is wrong, so a shape
    slip fails here and not as a wrong number.
    """
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


def _decisions(probs: np.ndarray, thresholds: Mapping[str, float]) -> np.ndarray:
    """0/1 decisions by the serving rule (:func:`components.model.scoring.flags`)."""
    return flags(probs, thresholds).astype(int)


def _f(x: Any) -> float:
    return float(x)


# ---------------------------------------------------------------------------------------------
# thresholds


def threshold_grid(params: EvaluateParams) -> np.ndarray:
    """The candidate thresholds, min..max inclusive; rounded so 0.7 on the grid is the float 0.7."""
    steps = int(math.floor((params.threshold_max - params.threshold_min) / params.threshold_step + 1e-6))
    grid = np.round(params.threshold_min + params.threshold_step * np.arange(steps + 1), _GRID_DECIMALS)
    return grid[grid <= params.threshold_max + EPS]


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


def threshold_sweep(y_col: np.ndarray, p_col: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of one category at every threshold of ``grid`` (arrays ``[len(grid)]``),
    flagging by the serving rule (score >= threshold)."""
    # One column per grid point: sklearn scores all thresholds in one multilabel call.
    preds = (np.asarray(p_col)[:, None] >= grid[None, :]).astype(int)
    truth = np.broadcast_to(np.asarray(y_col)[:, None], preds.shape)
    prec, rec, f1, _ = precision_recall_fscore_support(truth, preds, average=None, zero_division=0)
    return prec, rec, f1


def tune_thresholds(y_true: Any, probs: Any, params: EvaluateParams) -> dict[str, float]:
    """Per category, the grid threshold with the best validation F1 (middle of a tied plateau).

    A category with no validation positives has no F1 to maximise and gets the default.
    """
    y, p = check_arrays(y_true, probs)
    grid = threshold_grid(params)
    out: dict[str, float] = {}
    no_positives = []
    for j, cat in enumerate(LABELS):
        if y[:, j].sum() == 0:
            out[cat] = float(params.default_threshold)
            no_positives.append(cat)
            continue
        _, _, f1 = threshold_sweep(y[:, j], p[:, j], grid)
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
    y, p = check_arrays(y_true, probs)
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
    y, p = check_arrays(y_true, probs)
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


def robustness(records: Sequence[Record], y_true: Any, probs: Any, thresholds: Mapping[str, float],
               unnormalised: Any = None) -> dict:
    """How much adversarial perturbation hurts: clean parents vs their perturbed variants.

    Only variants whose parent is in the same split count, and each pair contributes one
    parent row and one variant row, so both sides are scored on the same examples.
    Macro F1 covers the categories with support among the parents.

    ``unnormalised``: optional scores ``[n, 18]`` of the same records with the text
    normalisation skipped (only the perturbed rows are read): the figures "before
    normalisation" (``perturbed_unnormalised``, and per kind ``flip_rate_unnormalised``)
    beside those as served, so the report shows what the normalisation is worth per kind.
    """
    y, p = check_arrays(y_true, probs)
    _check_records(records, y)
    pred = _decisions(p, thresholds)
    raw = None if unnormalised is None else _decisions(check_arrays(y_true, unnormalised)[1], thresholds)
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
    raw_flips = None if raw is None else raw[vi] != pred[pi]
    by_kind: dict[str, dict[str, Any]] = {}
    grouped: dict[str, list[int]] = defaultdict(list)
    for k, kind in enumerate(kinds):
        grouped[kind].append(k)
    for kind in sorted(grouped):
        rows = grouped[kind]
        by_kind[kind] = {"n": len(rows), "flip_rate": _f(flips[rows].mean())}
        if raw_flips is not None:
            by_kind[kind]["flip_rate_unnormalised"] = _f(raw_flips[rows].mean())
    drop = {
        key: (None if clean[key] is None or perturbed[key] is None else _f(clean[key] - perturbed[key]))
        for key in ("macro_f1", "exact_match")
    }
    out = {
        "n_pairs": len(parents),
        "categories": [LABELS[j] for j in cols],
        "clean": clean,
        "perturbed": perturbed,
        "drop": drop,
        "flip_rate": _f(flips.mean()),
        "by_kind": by_kind,
    }
    if raw is not None:
        out["perturbed_unnormalised"] = {"macro_f1": _macro_f1_over(y[vi], raw[vi], cols),
                                         "exact_match": _f(accuracy_score(y[vi], raw[vi]))}
        out["flip_rate_unnormalised"] = _f(raw_flips.mean())
    return out


def cooccurrence(y_true: Any, probs: Any, thresholds: Mapping[str, float]) -> dict:
    """Label co-occurrence counts, true and predicted: ``{"labels": LABELS, "true": [[int]*18]*18,
    "predicted": [[int]*18]*18}``; cell (i, j) counts texts carrying both i and j (the diagonal: i alone
    or with others), so a reviewer sees which categories the model confuses or merges."""
    y, p = check_arrays(y_true, probs)
    pred = _decisions(p, thresholds)
    return {"labels": list(LABELS), "true": (y.T @ y).astype(int).tolist(), "predicted": (pred.T @ pred).astype(int).tolist()}
