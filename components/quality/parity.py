"""Parity: how far a served variant's scores and decisions are from the PyTorch model's.

One function for both steps that measure it: the export step at one threshold (0.5, before any
tuning) and the evaluate step at the tuned thresholds, i.e. on the decisions that will be served.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from components.model.scoring import flags


def parity(reference: np.ndarray, probs: np.ndarray, thresholds: Mapping[str, float] | float = 0.5) -> dict[str, Any]:
    """Differences between ``probs`` and the PyTorch ``reference`` on the same texts.

    ``reference``, ``probs``: float arrays ``[n, 18]`` (``LABELS`` order), row for row the same texts.
    ``thresholds``: one number for every category, or one per category (a mapping by name).
    Returns ``max_abs_diff`` and ``mean_abs_diff`` (probability units), ``decision_diff_rate`` (the
    fraction of (text, category) decisions that differ under the flagging rule), ``samples`` (n),
    and ``threshold`` (the number) or ``at: "tuned thresholds"``. Empty arrays give zeros.
    Raises ValueError when the shapes differ.
    """
    reference, probs = np.asarray(reference), np.asarray(probs)
    if reference.shape != probs.shape:
        raise ValueError(f"reference shape {reference.shape} differs from probs shape {probs.shape}; "
                         "both must score the same texts (re-run the export step)")
    n = len(probs)
    diff = np.abs(reference - probs)
    out: dict[str, Any] = {
        "max_abs_diff": float(diff.max()) if n else 0.0,
        "mean_abs_diff": float(diff.mean()) if n else 0.0,
        "decision_diff_rate": float((flags(reference, thresholds) != flags(probs, thresholds)).mean()) if n else 0.0,
        "samples": int(n),
    }
    if isinstance(thresholds, Mapping):
        out["at"] = "tuned thresholds"
    else:
        out["threshold"] = float(thresholds)
    return out
