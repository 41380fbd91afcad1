"""The gate module decides every check, tier by tier: generated-text F1 floors, real-text ROC-AUC
floors and PR-AUC regression, behavioural pass rates and regression, parity, no regression against
the champion, and which variant ships; plus parity and the flagging rule it rests on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from components.core.params import EvaluateParams
from components.core.taxonomy import LABELS
from components.model.scoring import flags
from components.quality.gate import (
    GateVerdict,
    behaviour_checks,
    f1_floor_checks,
    no_regression_check,
    parity_check,
    quality_gate as _quality_gate,
    real_checks,
    select_served_variant,
)
from components.quality.parity import parity

K = len(LABELS)
PARAMS = EvaluateParams()  # f1_floor 0.85, parity_tolerance 0.01, regression_tolerance 0.01


def _metrics(f1: float = 0.9, macro: float | None = 0.9, **override) -> dict:
    per = {c: {"f1": f1} for c in LABELS}
    for cat, value in override.items():
        per[cat] = {"f1": value}
    return {"per_category": per, "macro_f1": macro}


def _real(auc: float = 0.95, pr: float = 0.8, support: int = 40, group: str = "threatgram",
          cat: str = "threats") -> dict:
    m = {"roc_auc": auc, "pr_auc": pr, "support": support, "gated": support >= PARAMS.real_min_support}
    return {"groups": {group: {"per_category": {cat: m}}}}


def _behaviour(rate: float = 1.0, gating: bool = True, name: str = "threat_negation") -> dict:
    return {"functionalities": {name: {"gating": gating, "pass_rate": rate, "passed": int(rate * 30), "n": 30}}}


REAL_OK, BEHAVIOUR_OK = _real(), _behaviour()


def quality_gate(metrics, parity, params, champion=None, real=REAL_OK, behaviour=BEHAVIOUR_OK):
    return _quality_gate(metrics, parity, params, champion, real=real, behaviour=behaviour)


TIER_CHECKS = ["real:roc_auc:threatgram:threats", "real:pr_auc_regression:threatgram:threats",
               "behaviour:pass_rate:threat_negation", "behaviour:regression:threat_negation"]


# --- the verdict as a whole ----------------------------------------------------------------


def test_gate_all_pass_lists_every_check_without_champion():
    v = quality_gate(_metrics(), {"decision_diff_rate": 0.001}, PARAMS, champion=None)
    assert isinstance(v, GateVerdict) and v.passed and v.failing() == []
    assert [c.name for c in v.checks] == ([f"generated:f1_floor:{c}" for c in LABELS] + TIER_CHECKS
                                          + ["parity", "no_regression"])
    assert v.checks[-1].detail == "no champion yet"
    d = v.to_dict()
    assert d["passed"] is True and d["failing"] == [] and len(d["checks"]) == K + 6
    assert d["champion"] is None and d["regression_tolerance"] == PARAMS.regression_tolerance
    assert set(d["checks"][0]) == {"name", "passed", "detail", "tier"}
    assert d["tiers"] == {"generated": {"passed": True, "checks": K, "failing": 0},
                          "real": {"passed": True, "checks": 2, "failing": 0},
                          "behaviour": {"passed": True, "checks": 2, "failing": 0},
                          "release": {"passed": True, "checks": 2, "failing": 0}}


def test_gate_records_the_champion_it_judged_against():
    v = quality_gate(_metrics(macro=0.93), {"decision_diff_rate": 0.0}, PARAMS,
                     champion={"version": 3, "macro_f1": 0.91, "promoted_at": "x"})
    assert v.passed
    assert v.to_dict()["champion"] == {"version": "3", "macro_f1": 0.91, "promoted_at": "x"}
    assert v.checks[-1].detail == "macro f1 0.9300 >= champion version 3 0.9100 - 0.0100"


def test_every_failing_check_is_named_at_once():
    v = quality_gate(_metrics(macro=0.5, **{LABELS[0]: 0.1, LABELS[5]: 0.2}), {"decision_diff_rate": 0.2}, PARAMS,
                     champion={"version": "7", "macro_f1": 0.9})
    assert not v.passed
    assert v.to_dict()["failing"] == [f"generated:f1_floor:{LABELS[0]}", f"generated:f1_floor:{LABELS[5]}",
                                      "parity", "no_regression"]


# --- f1_floor --------------------------------------------------------------------------------


def test_f1_floor_names_the_category_below_the_floor():
    cat = LABELS[4]
    checks = f1_floor_checks(_metrics(**{cat: 0.812}), 0.85)
    failing = [c for c in checks if not c.passed]
    assert [c.name for c in failing] == [f"generated:f1_floor:{cat}"] and failing[0].detail == "f1 0.812 < 0.85"


def test_f1_floor_at_the_floor_passes_despite_float_error():
    assert all(c.passed for c in f1_floor_checks(_metrics(f1=0.9 - 0.05), 0.85))
    assert quality_gate(_metrics(f1=0.85), {"decision_diff_rate": 0.01}, PARAMS).passed


@pytest.mark.parametrize("value", [None, math.nan])
def test_f1_floor_unmeasured_category_fails(value):
    cat = LABELS[2]
    metrics = _metrics()
    metrics["per_category"][cat] = {"f1": value}
    failing = [c for c in f1_floor_checks(metrics, 0.85) if not c.passed]
    assert [(c.name, c.detail) for c in failing] == [(f"generated:f1_floor:{cat}", "f1 not measured")]
    del metrics["per_category"][cat]
    assert [c.name for c in f1_floor_checks(metrics, 0.85) if not c.passed] == [f"generated:f1_floor:{cat}"]


# --- parity ----------------------------------------------------------------------------------


def test_parity_check_within_beyond_and_unmeasured():
    assert parity_check({"decision_diff_rate": 0.01}, 0.01).passed  # at the tolerance
    beyond = parity_check({"decision_diff_rate": 0.05}, 0.01)
    assert not beyond.passed and beyond.detail == "decision diff rate 0.0500 > 0.0100"
    for unmeasured in (None, {}, {"decision_diff_rate": None}, {"decision_diff_rate": math.nan}):
        check = parity_check(unmeasured, 0.01)
        assert not check.passed and "not measured" in check.detail
    v = quality_gate(_metrics(), None, PARAMS)
    assert [c.name for c in v.failing()] == ["parity"]


def test_parity_measures_decisions_at_one_or_tuned_thresholds():
    rng = np.random.default_rng(0)
    reference = rng.random((50, K)).astype(np.float32)
    same = parity(reference, reference.copy())
    assert same == {"max_abs_diff": 0.0, "mean_abs_diff": 0.0, "decision_diff_rate": 0.0, "samples": 50,
                    "threshold": 0.5}
    moved = reference.copy()
    moved[0, 0], reference[0, 0] = 0.49, 0.51  # one decision crosses 0.5
    moved[1, 1], reference[1, 1] = 0.69, 0.71  # crosses only a 0.7 threshold
    at_half = parity(reference, moved)
    assert at_half["decision_diff_rate"] == pytest.approx(1 / (50 * K))
    assert at_half["max_abs_diff"] == pytest.approx(0.02, abs=1e-6)
    tuned = {c: 0.5 for c in LABELS} | {LABELS[1]: 0.7}
    at_tuned = parity(reference, moved, tuned)
    assert at_tuned["decision_diff_rate"] == pytest.approx(2 / (50 * K)) and at_tuned["at"] == "tuned thresholds"
    assert parity(np.zeros((0, K)), np.zeros((0, K)))["decision_diff_rate"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        parity(reference, moved[:10])


def test_flags_is_score_at_or_above_threshold():
    probs = np.array([[0.5] * K, [0.4999] * K])
    assert flags(probs, 0.5).tolist() == [[True] * K, [False] * K]
    per = {c: (0.4 if i == 3 else 0.6) for i, c in enumerate(LABELS)}
    got = flags(probs, per)
    assert got[0].tolist() == [i == 3 for i in range(K)] and got[1, 3] and got[1].sum() == 1
    assert (flags(probs, np.array(list(per.values()))) == got).all()
    served = np.full((1, K), 0.58, dtype=np.float32)  # a float32 score at its float32 threshold is flagged
    assert flags(served, {c: 0.58 for c in LABELS}).all()
    assert flags(served, np.full(K, 0.58, dtype=np.float32)).all()
    with pytest.raises(ValueError, match="missing"):
        flags(probs, {LABELS[0]: 0.5})
    with pytest.raises(ValueError, match="18"):
        flags(probs, [0.5, 0.5])


# --- no_regression -----------------------------------------------------------------------------


def test_no_regression_without_a_champion_passes():
    check = no_regression_check(0.4, None, 0.01)
    assert check.passed and check.detail == "no champion yet"


def test_no_regression_beyond_tolerance_fails_within_and_at_the_edge_pass():
    champ = {"version": "2", "macro_f1": 0.90}
    beyond = no_regression_check(0.87, champ, 0.01)
    assert not beyond.passed and beyond.detail == "macro f1 0.8700 < champion version 2 0.9000 - 0.0100"
    assert no_regression_check(0.895, champ, 0.01).passed
    assert no_regression_check(0.89, champ, 0.01).passed  # 0.90 - 0.01 in floating point
    v = quality_gate(_metrics(macro=0.87), {"decision_diff_rate": 0.0}, PARAMS, champion=champ)
    assert [c.name for c in v.failing()] == ["no_regression"]


def test_no_regression_unmeasured_macro_fails_unrecorded_champion_figure_passes():
    champ = {"version": "2", "macro_f1": 0.90}
    for macro in (None, math.nan, math.inf):
        check = no_regression_check(macro, champ, 0.01)
        assert not check.passed and check.detail == "macro f1 not measured"
    unknown = no_regression_check(0.5, {"version": "4", "macro_f1": None}, 0.01)
    assert unknown.passed and "champion version 4 has no recorded macro f1" in unknown.detail


# --- served variant -----------------------------------------------------------------------------


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
    assert select_served_variant({}, 0.01) is None
    no_fp32 = {k: v for k, v in _variants(0.915).items() if k != "fp32"}
    assert select_served_variant(no_fp32, 0.001) == "fp16"  # the best present is the reference


def test_no_regression_with_an_unreachable_store_fails_and_says_rerun_evaluate():
    champ = {"version": None, "macro_f1": None, "unavailable": "MLflow tracking store http://127.0.0.1:9 unavailable"}
    v = quality_gate(_metrics(), {"decision_diff_rate": 0.0}, PARAMS, champion=champ)
    # every check that compares with the champion fails: an unknown champion is not "no champion"
    assert [c.name for c in v.failing()] == ["real:pr_auc_regression:threatgram:threats",
                                             "behaviour:regression:threat_negation", "no_regression"]
    detail = v.failing()[-1].detail
    assert "champion unknown (MLflow tracking store http://127.0.0.1:9 unavailable)" in detail
    assert "content-moderation run --from evaluate" in detail
    assert v.to_dict()["champion"] == {"version": None, "macro_f1": None, "unavailable": champ["unavailable"]}


# --- the real-text tier -------------------------------------------------------------------------


def test_real_tier_judges_roc_auc_floor_only_where_support_allows():
    low = real_checks(_real(auc=0.70), PARAMS)
    assert [(c.name, c.passed, c.tier) for c in low] == [
        ("real:roc_auc:threatgram:threats", False, "real"),
        ("real:pr_auc_regression:threatgram:threats", True, "real")]
    assert low[0].detail == "roc_auc 0.700 < 0.85 (40 positives)" and low[1].detail == "no champion yet"
    thin = real_checks(_real(auc=0.1, support=PARAMS.real_min_support - 1), PARAMS)
    assert [(c.name, c.passed) for c in thin] == [("real:measured", False)]
    assert "25 positives and negatives" in thin[0].detail
    assert real_checks(None, PARAMS)[0].detail == "no held-out real text"
    at_floor = real_checks(_real(auc=0.9 - 0.05), PARAMS)  # 0.85 in floating point
    assert all(c.passed for c in at_floor)


def test_real_tier_pr_auc_regression_against_the_champion():
    champ = {"version": "5", "macro_f1": 0.9, "real_pr_auc": {"threatgram": {"threats": 0.85}}}
    worse = real_checks(_real(pr=0.80), PARAMS, champ)[1]
    assert not worse.passed and worse.detail == "pr_auc 0.8000 < champion version 5 0.8500 - 0.0200"
    assert real_checks(_real(pr=0.83), PARAMS, champ)[1].passed
    other = real_checks(_real(pr=0.10, group="email", cat="scam_patterns"), PARAMS, champ)[1]
    assert other.passed and "has no recorded pr_auc" in other.detail


# --- the behaviour tier -------------------------------------------------------------------------


def test_behaviour_tier_floor_regression_and_known_limits():
    checks = behaviour_checks(_behaviour(rate=0.8), PARAMS)
    assert [(c.name, c.passed, c.tier) for c in checks] == [
        ("behaviour:pass_rate:threat_negation", False, "behaviour"),
        ("behaviour:regression:threat_negation", True, "behaviour")]
    assert checks[0].detail == "pass rate 0.800 (24/30) < 0.90"
    champ = {"version": "5", "macro_f1": 0.9, "behaviour_pass_rate": {"threat_negation": 1.0}}
    regressed = behaviour_checks(_behaviour(rate=29 / 30), PARAMS, champ)
    assert [c.passed for c in regressed] == [True, False]
    assert not behaviour_checks(_behaviour(gating=False), PARAMS)[0].passed  # nothing gating: not measured
    assert behaviour_checks(None, PARAMS)[0].name == "behaviour:measured"


def test_gate_fails_when_any_tier_fails_and_names_every_failing_check():
    v = quality_gate(_metrics(), {"decision_diff_rate": 0.0}, PARAMS, real=_real(auc=0.6), behaviour=_behaviour(0.5))
    assert not v.passed
    assert v.to_dict()["failing"] == ["real:roc_auc:threatgram:threats", "behaviour:pass_rate:threat_negation"]
    assert v.tiers()["generated"]["passed"] and not v.tiers()["real"]["passed"]
    assert not quality_gate(_metrics(), {"decision_diff_rate": 0.0}, PARAMS, real=None).passed
