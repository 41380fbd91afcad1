"""plots: DVC plot data and PNG charts from hand-built scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.core.params import EvaluateParams
from components.core.taxonomy import LABELS
from components.quality.metrics import category_metrics, tune_thresholds
from components.quality.plots import write_plots

K = len(LABELS)
PARAMS = EvaluateParams()


def _random(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy but informative scores; the last category has no positives at all."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, K)) < 0.25).astype(int)
    y[:, -1] = 0
    return y, np.clip(0.35 * y + rng.random((n, K)) * 0.65, 0, 1)


def test_write_plots(tmp_path):
    y, probs = _random(n=400, seed=7)
    thresholds = tune_thresholds(y, probs, PARAMS)
    m = category_metrics(y, probs, thresholds)
    m["f1_floor"] = PARAMS.f1_floor
    paths = write_plots(y, probs, thresholds, m, tmp_path / "plots")
    assert set(paths) == {"pr_curves.json", "per_category_f1.json", "pr_curves.png", "per_category_f1.png"}
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    pr = json.loads(paths["pr_curves.json"].read_text())["pr"]
    cats = {r["category"] for r in pr}
    assert cats == set(LABELS[:-1])  # the category without positives has no curve
    for cat in cats:
        assert sum(r["category"] == cat for r in pr) <= 200
    f1 = json.loads(paths["per_category_f1.json"].read_text())
    assert [r["category"] for r in f1] == list(LABELS)
    assert f1[0] == {"category": LABELS[0], "f1": m["per_category"][LABELS[0]]["f1"],
                     "threshold": thresholds[LABELS[0]]}
    assert paths["pr_curves.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "plots").glob(".*.tmp"))


def test_write_plots_refuses_mismatched_arrays(tmp_path):
    y, probs = _random(n=20, seed=1)
    with pytest.raises(ValueError, match="does not match"):
        write_plots(y, probs[:10], {c: 0.5 for c in LABELS}, {}, tmp_path / "plots")
    assert not (tmp_path / "plots").exists()
