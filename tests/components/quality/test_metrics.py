"""metrics: figures agree with scikit-learn computed independently, thresholds maximise F1,
calibration, robustness and per-source scores on hand-built data, and the gate's verdicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, precision_score, recall_score

from components.core.contract import Record, make_labels
from components.quality.metrics import (
    GateVerdict,
    calibration,
    category_metrics,
    per_source,
    quality_gate,
    robustness,
    select_served_variant,
    threshold_grid,
    tune_thresholds,
    write_plots,
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


def test_robustness_without_pairs():
    records = [_rec("x", [LABELS[0]])]
    y = np.array([records[0].label_vector()])
    assert robustness(records, y, y * 0.9, {c: 0.5 for c in LABELS}) == {"n_pairs": 0}


def test_per_source():
    a = LABELS[0]
    records = [
        _rec("d1", [a], source="external:davidson"),
        _rec("d2", [a], source="external:davidson"),
        _rec("d3", source="external:davidson"),
        _rec("d4", source="external:davidson"),
        _rec("o1", [a]),
    ]
    y = np.array([r.label_vector() for r in records])
    probs = np.full(y.shape, 0.1)
    probs[0, 0] = 0.9  # d1 caught, d2 missed
    probs[2, 3] = 0.8  # d3 flagged with no label
    out = per_source(records, y, probs, {c: 0.5 for c in LABELS})
    assert list(out) == ["external:davidson"]
    s = out["external:davidson"]
    assert s["n"] == 4
    assert s["per_category"] == {a: {"f1": pytest.approx(2 / 3), "precision": 1.0, "recall": 0.5, "support": 2}}
    assert s["macro_f1"] == pytest.approx(2 / 3)
    assert s["no_label_false_positive_rate"] == 0.5


# --- quality gate --------------------------------------------------------------------------


def _metrics(f1: float = 0.9, macro: float = 0.9, **override) -> dict:
    per = {c: {"f1": f1} for c in LABELS}
    for cat, value in override.items():
        per[cat] = {"f1": value}
    return {"per_category": per, "macro_f1": macro}


def test_gate_all_pass():
    v = quality_gate(_metrics(), {"decision_diff_rate": 0.001}, PARAMS, champion_macro_f1=None)
    assert v.passed and v.failing() == []
    assert len(v.checks) == K + 2
    assert next(c for c in v.checks if c.name == "no_regression").detail == "no champion yet"
    d = v.to_dict()
    assert d["passed"] is True and d["failing"] == [] and len(d["checks"]) == K + 2


def test_gate_names_the_category_below_floor():
    cat = LABELS[4]
    v = quality_gate(_metrics(**{cat: 0.812}), {"decision_diff_rate": 0.0}, PARAMS)
    assert isinstance(v, GateVerdict) and not v.passed
    assert [c.name for c in v.failing()] == [f"f1_floor:{cat}"]
    assert v.failing()[0].detail == "f1 0.812 < 0.85"


def test_gate_at_floor_passes():
    v = quality_gate(_metrics(f1=0.85), {"decision_diff_rate": 0.01}, PARAMS)
    assert v.passed


def test_gate_parity_too_high_or_missing():
    v = quality_gate(_metrics(), {"decision_diff_rate": 0.05}, PARAMS)
    assert [c.name for c in v.failing()] == ["parity"]
    v = quality_gate(_metrics(), None, PARAMS)
    assert [c.name for c in v.failing()] == ["parity"]
    assert "not measured" in v.failing()[0].detail


def test_gate_regression_against_champion():
    parity = {"decision_diff_rate": 0.0}
    beyond = quality_gate(_metrics(macro=0.87), parity, PARAMS, champion_macro_f1=0.90)
    assert [c.name for c in beyond.failing()] == ["no_regression"]
    within = quality_gate(_metrics(macro=0.895), parity, PARAMS, champion_macro_f1=0.90)
    assert within.passed
    edge = quality_gate(_metrics(macro=0.89), parity, PARAMS, champion_macro_f1=0.90)
    assert edge.passed


# --- served variant ------------------------------------------------------------------------


def _variants(int8_f1: float, int8_ok: bool = True, fp16_ok: bool = True, fp32_ok: bool = True) -> dict:
    return {
        "fp32": {"macro_f1": 0.92, "size_bytes": 400, "gate_passed": fp32_ok},
        "fp16": {"macro_f1": 0.918, "size_bytes": 200, "gate_passed": fp16_ok},
        "int8": {"macro_f1": int8_f1, "size_bytes": 100, "gate_passed": int8_ok},
    }


def test_select_served_variant():
    assert select_served_variant(_variants(0.915), 0.01) == "int8"
    assert select_served_variant(_variants(0.80), 0.01) == "fp16"
    assert select_served_variant(_variants(0.915, int8_ok=False, fp16_ok=False), 0.01) == "fp32"
    assert select_served_variant(_variants(0.915, False, False, False), 0.01) is None


# --- plots ---------------------------------------------------------------------------------


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
