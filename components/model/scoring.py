"""How texts are scored and scores meet the labels: length-sorted batches, the truth as a 0/1
matrix, and the flagging rule.

Numpy only, so training, evaluation, the report, serving and the CLI all apply the same rule:
a text is flagged for a category when its score is at or above the category's threshold.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from components.core.taxonomy import LABELS

if TYPE_CHECKING:
    from components.core.contract import Record


def label_matrix(records: Sequence["Record"]) -> np.ndarray:
    """The records' labels as float32 0/1, shape ``[len(records), 18]`` in ``LABELS`` order."""
    return np.array([r.label_vector() for r in records], dtype=np.float32).reshape(-1, len(LABELS))


def threshold_vector(thresholds: Mapping[str, float] | Sequence[float] | np.ndarray | float) -> np.ndarray:
    """Thresholds as a float array in ``LABELS`` order, shape ``[18]`` (or ``[]`` for one number).

    A mapping must name every category (``tune_thresholds`` gives one per category); a sequence
    must have 18 entries. Raises ValueError otherwise.
    """
    if isinstance(thresholds, Mapping):
        missing = [c for c in LABELS if c not in thresholds]
        if missing:
            raise ValueError(f"thresholds missing for {missing}; tune_thresholds gives one per category")
        return np.array([float(thresholds[c]) for c in LABELS])
    th = np.asarray(thresholds, dtype=float)
    if th.ndim > 1 or (th.ndim == 1 and th.shape[0] != len(LABELS)):
        raise ValueError(f"thresholds must be one number or {len(LABELS)} (LABELS order), got shape {th.shape}")
    return th


def flags(probs: np.ndarray, thresholds: Mapping[str, float] | Sequence[float] | np.ndarray | float) -> np.ndarray:
    """The flagging rule: ``probs >= threshold`` per category, a bool array of ``probs``' shape.

    ``probs``: scores in [0, 1], shape ``[n, 18]`` (or ``[18]`` for one text), ``LABELS`` order;
    ``thresholds``: one per category (a mapping by name or 18 numbers) or one number for all.
    Thresholds are compared in the scores' float type, so a float32 score equal to its float32
    threshold (as the ONNX model and ``thresholds.json`` give them when served) is flagged.
    """
    p = np.asarray(probs)
    th = threshold_vector(thresholds)
    if np.issubdtype(p.dtype, np.floating):
        th = th.astype(p.dtype)
    return p >= th


def max_over_windows(window_probs: np.ndarray, owners: np.ndarray, n_texts: int) -> np.ndarray:
    """A text's score per category: the highest over its windows.

    ``window_probs``: ``[n_windows, 18]`` scores in [0, 1]; ``owners``: the text index of each window
    (``TextWindows.expand``); returns ``[n_texts, 18]`` in the scores' dtype.
    """
    out = np.zeros((n_texts, window_probs.shape[1]), dtype=window_probs.dtype)
    np.maximum.at(out, owners, window_probs)
    return out


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Indices in batches of similar length: padding (and so compute) stays small.

    ``lengths``: one number per text; yields int index arrays of at most ``batch_size`` entries,
    covering every index once.
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
