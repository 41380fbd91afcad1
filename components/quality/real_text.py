"""Figures on held-out real text (the ``real_test`` split), per evaluation group and category.

Real text is what nobody here wrote: the public labelled sets (``metadata.source`` =
``external:<key>``). Each record is judged in its evaluation group (``metadata.eval_group``,
default the source key), so a set with positives only (phishing mail) is judged against the real
negatives of its group (business mail). Per (group, category): precision, recall and F1 at the
tuned threshold, PR-AUC (average precision), ROC-AUC and support; ``gated`` says whether the
(group, category) has enough positives and negatives (``min_support`` each) for the gate's
real-text tier to judge it. Macro figures average the categories with real support only.

Shapes: ``y_true`` 0/1 ``[n, 18]`` and ``probs`` ``[n, 18]`` in ``LABELS`` order, one row per
record, as in :mod:`components.quality.metrics`. Metrics come from scikit-learn.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from components.core.contract import Record
from components.core.taxonomy import LABELS
from components.external import SOURCE_PREFIX, eval_group, is_real
from components.quality.metrics import check_arrays
from components.model.scoring import flags


def _block(records: Sequence[Record], y: np.ndarray, p: np.ndarray, pred: np.ndarray,
           thresholds: Mapping[str, float], min_support: int) -> dict[str, Any]:
    support = y.sum(axis=0)
    negatives = len(y) - support
    per: dict[str, dict[str, Any]] = {}
    cols = [j for j in range(len(LABELS)) if support[j] > 0]
    if cols:
        prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=cols, average=None, zero_division=0)
    for k, j in enumerate(cols):
        both = negatives[j] > 0
        per[LABELS[j]] = {
            "precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]),
            "pr_auc": float(average_precision_score(y[:, j], p[:, j])),
            "roc_auc": float(roc_auc_score(y[:, j], p[:, j])) if both else None,
            "support": int(support[j]), "negatives": int(negatives[j]),
            "threshold": float(thresholds[LABELS[j]]),
            "gated": bool(support[j] >= min_support and negatives[j] >= min_support),
        }
    clean = y.sum(axis=1) == 0

    def macro(key: str) -> float | None:
        vals = [v[key] for v in per.values() if v[key] is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "n": int(len(y)),
        "n_no_label": int(clean.sum()),
        "no_label_false_positive_rate": float(pred[clean].any(axis=1).mean()) if clean.any() else None,
        "sources": sorted({r.source[len(SOURCE_PREFIX):] for r in records}),
        "per_category": per,
        "macro_f1": macro("f1"), "macro_pr_auc": macro("pr_auc"), "macro_roc_auc": macro("roc_auc"),
    }


def real_text_metrics(records: Sequence[Record], y_true: Any, probs: Any, thresholds: Mapping[str, float],
                      min_support: int) -> dict:
    """Per evaluation group and over all real records: ``{"groups": {group: block}, "overall": block,
    "min_support": int, "categories_without_real_support": [..]}``.

    A block is ``{"n", "n_no_label", "no_label_false_positive_rate", "sources", "per_category": {cat:
    {precision, recall, f1, pr_auc, roc_auc, support, negatives, threshold, gated}}, "macro_f1",
    "macro_pr_auc", "macro_roc_auc"}``; ``roc_auc`` is None when a group has no negatives for the
    category. Records that are not real text are ignored. Raises ValueError when ``records`` and
    the arrays do not line up.
    """
    y, p = check_arrays(y_true, probs)
    if len(records) != len(y):
        raise ValueError(f"{len(records)} records but {len(y)} rows of labels; they must line up row for row")
    pred = flags(p, thresholds).astype(int)
    rows: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if is_real(r):
            rows[eval_group(r)].append(i)
    groups = {}
    for name in sorted(rows):
        idx = np.array(rows[name])
        groups[name] = _block([records[i] for i in idx], y[idx], p[idx], pred[idx], thresholds, min_support)
    every = np.array(sorted(i for idx in rows.values() for i in idx), dtype=int)
    overall = (_block([records[i] for i in every], y[every], p[every], pred[every], thresholds, min_support)
               if len(every) else None)
    covered = set(overall["per_category"]) if overall else set()
    return {
        "min_support": int(min_support),
        "groups": groups,
        "overall": overall,
        "categories_without_real_support": [c for c in LABELS if c not in covered],
    }
