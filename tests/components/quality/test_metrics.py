"""metrics: figures agree with scikit-learn computed independently, thresholds maximise F1,
calibration, robustness and per-source scores on hand-built data (the gate: test_gate.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, precision_score, recall_score

from components.core.contract import Record, make_labels
from components.quality.real_text import real_text_metrics
from components.quality.metrics import (
    calibration,
    category_metrics,
    cooccurrence,
    robustness,
    threshold_grid,
    tune_thresholds,
)
from components.core.params import EvaluateParams
from components.core.taxonomy import LABELS

K = len(LABELS)
PARAMS = EvaluateParams()


def _random(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy but informative scores; the last category has no positives at all."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, K)) < 0.25).astype(int)
    y[:, -1] = 0
    probs = np.clip(0.35 * y + rng.random((n, K)) * 0.65, 0, 1)
    return y, probs


# --- thresholds ---------------------------------------------------------------------------


def test_grid_is_inclusive_and_rounded():
    grid = threshold_grid(PARAMS)
    assert grid[0] == 0.05 and grid[-1] == 0.95 and len(grid) == 91
    assert 0.7 in grid.tolist()


def test_tune_thresholds_maximises_f1_by_brute_force():
    y, probs = _random()
    thresholds = tune_thresholds(y, probs, PARAMS)
    grid = threshold_grid(PARAMS)
    assert list(thresholds) == list(LABELS)
    for j, cat in list(enumerate(LABELS))[:6]:  # a few categories keep the brute force quick
        scores = [f1_score(y[:, j], (probs[:, j] >= t).astype(int), zero_division=0) for t in grid]
        chosen = f1_score(y[:, j], (probs[:, j] >= thresholds[cat]).astype(int), zero_division=0)
        assert thresholds[cat] in grid.tolist()
        assert chosen == pytest.approx(max(scores)), cat


def test_tune_thresholds_picks_middle_of_plateau_and_default_without_positives():
    n = 40
    y = np.zeros((n, K), dtype=int)
    probs = np.zeros((n, K))
    y[:20, 0] = 1
    probs[:20, 0] = np.linspace(0.7, 0.9, 20)  # positives
    probs[20:, 0] = np.linspace(0.1, 0.4, 20)  # negatives
    thresholds = tune_thresholds(y, probs, EvaluateParams(default_threshold=0.42))
    # Every threshold in (0.4, 0.7] separates perfectly: 0.41..0.70, middle 0.55.
    assert thresholds[LABELS[0]] == pytest.approx(0.55)
    assert all(thresholds[c] == 0.42 for c in LABELS[1:])


# --- category metrics ----------------------------------------------------------------------


def test_category_metrics_agree_with_sklearn():
    y, probs = _random(seed=3)
    rng = np.random.default_rng(1)
    thresholds = {c: float(t) for c, t in zip(LABELS, rng.uniform(0.3, 0.7, K))}
    m = category_metrics(y, probs, thresholds)
    pred = (probs >= np.array([thresholds[c] for c in LABELS])).astype(int)
    f1s, precs, recs, aucs = [], [], [], []
    for j, cat in enumerate(LABELS):
        row = m["per_category"][cat]
        f1 = f1_score(y[:, j], pred[:, j], zero_division=0)
        p = precision_score(y[:, j], pred[:, j], zero_division=0)
        r = recall_score(y[:, j], pred[:, j], zero_division=0)
        assert row["f1"] == pytest.approx(f1)
        assert row["precision"] == pytest.approx(p)
        assert row["recall"] == pytest.approx(r)
        assert row["support"] == y[:, j].sum()
        assert row["predicted"] == pred[:, j].sum()
        assert row["threshold"] == thresholds[cat]
        if y[:, j].any():
            auc = average_precision_score(y[:, j], probs[:, j])
            assert row["pr_auc"] == pytest.approx(auc)
            aucs.append(auc)
        else:
            assert row["pr_auc"] is None
        f1s.append(f1), precs.append(p), recs.append(r)
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    assert m["macro_precision"] == pytest.approx(np.mean(precs))
    assert m["macro_recall"] == pytest.approx(np.mean(recs))
    assert m["macro_pr_auc"] == pytest.approx(np.mean(aucs))
    assert m["micro_f1"] == pytest.approx(f1_score(y.ravel(), pred.ravel()))
    assert m["samples"] == len(y)
    json.dumps(m)  # plain Python types only


def test_bad_shapes_and_missing_thresholds_are_explained():
    y, probs = _random(10)
    with pytest.raises(ValueError, match="shape"):
        category_metrics(y[:, :5], probs[:, :5], {c: 0.5 for c in LABELS})
    with pytest.raises(ValueError, match="thresholds missing"):
        category_metrics(y, probs, {LABELS[0]: 0.5})


# --- calibration ---------------------------------------------------------------------------


def test_calibration_perfect_and_confidently_wrong():
    # Each bin's probability equals its fraction of positives exactly.
    n = 100
    probs = np.tile(np.repeat([0.1, 0.3, 0.5, 0.7, 0.9], 20)[:, None], (1, K))
    y = np.zeros((n, K), dtype=int)
    for b, p in enumerate([0.1, 0.3, 0.5, 0.7, 0.9]):
        y[b * 20 : b * 20 + int(round(p * 20)), :] = 1
    cal = calibration(y, probs, bins=10)
    assert cal["ece"] == pytest.approx(0.0, abs=1e-12)
    assert sum(b["count"] for b in cal["reliability"]) == n * K
    assert len(cal["reliability"]) == 10 and cal["reliability"][0]["count"] == 0
    assert cal["reliability"][0]["mean_prob"] is None

    wrong = calibration(1 - (probs > 0.5).astype(int), np.where(probs > 0.5, 0.95, 0.05), bins=10)
    assert wrong["ece"] > 0.9


def test_brier_matches_sklearn():
    y, probs = _random(seed=5)
    cal = calibration(y, probs, PARAMS.calibration_bins)
    expected = [brier_score_loss(y[:, j], probs[:, j]) for j in range(K)]
    for j, cat in enumerate(LABELS):
        assert cal["per_category_brier"][cat] == pytest.approx(expected[j])
    assert cal["brier"] == pytest.approx(np.mean(expected))


# --- robustness and per-source -------------------------------------------------------------


def _rec(rid, labels=(), **meta) -> Record:
    return Record(rid, "some text", make_labels(labels), {"source": "offline", "group": rid, **meta})


def test_robustness_counts_a_flip():
    a, b = LABELS[0], LABELS[1]
    records = [
        _rec("p1", [a]),
        _rec("p2", [b]),
        _rec("v1", [a], source="perturbation", parent_id="p1", perturbation="leetspeak"),
        _rec("v2", [b], source="perturbation", parent_id="p2", perturbation="typo"),
        _rec("orphan", [a], source="perturbation", parent_id="gone", perturbation="typo"),
        _rec("other"),
    ]
    y = np.array([r.label_vector() for r in records])
    probs = y * 0.9 + 0.05
    probs[2, 0] = 0.2  # the leetspeak variant evades the filter
    thresholds = {c: 0.5 for c in LABELS}
    out = robustness(records, y, probs, thresholds)
    assert out["n_pairs"] == 2
    assert out["clean"] == {"macro_f1": 1.0, "exact_match": 1.0}
    assert out["perturbed"]["exact_match"] == 0.5
    assert out["perturbed"]["macro_f1"] == pytest.approx(np.mean([0.0, 1.0]))
    assert out["drop"]["exact_match"] == 0.5
    assert out["by_kind"]["leetspeak"] == {"n": 1, "flip_rate": pytest.approx(1 / K)}
    assert out["by_kind"]["typo"] == {"n": 1, "flip_rate": 0.0}
    assert out["categories"] == [a, b]


def test_robustness_shows_each_kind_before_and_after_normalisation():
    a = LABELS[0]
    records = [_rec("p1", [a]), _rec("p2", [a]),
               _rec("v1", [a], source="perturbation", parent_id="p1", perturbation="homoglyph"),
               _rec("v2", [a], source="perturbation", parent_id="p2", perturbation="typo")]
    y = np.array([r.label_vector() for r in records])
    served = y * 0.9 + 0.05                  # as served: both variants caught
    before = served.copy()
    before[2, 0] = 0.1                       # without normalisation the homoglyph variant evades
    out = robustness(records, y, served, {c: 0.5 for c in LABELS}, unnormalised=before)
    assert out["by_kind"]["homoglyph"]["flip_rate"] == 0.0
    assert out["by_kind"]["homoglyph"]["flip_rate_unnormalised"] == pytest.approx(1 / K)
    assert out["by_kind"]["typo"]["flip_rate_unnormalised"] == 0.0
    assert out["perturbed"]["exact_match"] == 1.0 and out["perturbed_unnormalised"]["exact_match"] == 0.5
    assert "flip_rate_unnormalised" not in robustness(records, y, served, {c: 0.5 for c in LABELS})


def test_robustness_without_pairs():
    records = [_rec("x", [LABELS[0]])]
    y = np.array([records[0].label_vector()])
    assert robustness(records, y, y * 0.9, {c: 0.5 for c in LABELS}) == {"n_pairs": 0}


def test_real_text_metrics_per_eval_group():
    a, b = LABELS[0], LABELS[3]
    records = [
        _rec("d1", [a], source="external:davidson"),
        _rec("d2", [a], source="external:davidson"),
        _rec("d3", source="external:davidson"),
        _rec("d4", source="external:davidson"),
        _rec("p1", [b], source="external:phishing"),
        _rec("e1", source="external:enron"),
        _rec("o1", [a]),
    ]
    records[4].metadata["eval_group"] = records[5].metadata["eval_group"] = "email"
    y = np.array([r.label_vector() for r in records])
    probs = np.full(y.shape, 0.1)
    probs[0, 0] = 0.9  # d1 caught, d2 missed
    probs[1, 0] = 0.3  # d2 ranked above both negatives: ROC-AUC 1.0
    probs[2, 3] = 0.8  # d3 flagged with no label
    probs[4, 3] = 0.7  # the phishing mail caught, ranked above the enron mail
    out = real_text_metrics(records, y, probs, {c: 0.5 for c in LABELS}, min_support=2)
    assert list(out["groups"]) == ["davidson", "email"]
    d = out["groups"]["davidson"]
    assert d["n"] == 4 and d["sources"] == ["davidson"] and list(d["per_category"]) == [a]
    m = d["per_category"][a]
    assert (m["f1"], m["precision"], m["recall"], m["support"], m["negatives"]) == (
        pytest.approx(2 / 3), 1.0, 0.5, 2, 2)
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0 and m["gated"] is True
    assert d["no_label_false_positive_rate"] == 0.5 and d["macro_f1"] == pytest.approx(2 / 3)
    e = out["groups"]["email"]
    assert e["sources"] == ["enron", "phishing"] and e["per_category"][b]["roc_auc"] == 1.0
    assert e["per_category"][b]["gated"] is False  # one positive, one negative: below min_support
    assert out["overall"]["n"] == 6  # o1 is generated text, not judged here
    assert set(out["categories_without_real_support"]) == set(LABELS) - {a, b}
    with pytest.raises(ValueError, match="line up"):
        real_text_metrics(records[:2], y, probs, {c: 0.5 for c in LABELS}, min_support=2)


def test_cooccurrence_counts_true_and_predicted_pairs():
    y = np.zeros((3, K), dtype=int)
    y[0, [0, 1]] = 1
    y[1, 0] = 1
    probs = y * 0.9 + 0.05
    probs[2, 2] = 0.99
    out = cooccurrence(y, probs, {c: 0.5 for c in LABELS})
    assert out["labels"] == list(LABELS)
    assert out["true"][0][0] == 2 and out["true"][0][1] == out["true"][1][0] == 1 and out["true"][2][2] == 0
    assert out["predicted"][2][2] == 1 and out["predicted"][0][1] == 1
