"""Shared by the tracking and register tests: the retry policy, names, and a metrics.json-shaped report
whose ``gate`` is the real gate module's verdict (so the registry applies what evaluate would write)."""

from __future__ import annotations

from components.core.params import EvaluateParams
from components.core.taxonomy import LABELS
from components.quality.gate import quality_gate
from components.tracking import RetryPolicy

FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.02)
EXP = "content-moderation-test"
MODEL = "content-moderation"


def make_report(passed: bool = True, macro_f1: float = 0.9, weak: str | None = None,
                champion: dict | None = None) -> dict:
    """A small dict shaped like reports/metrics.json.

    ``weak`` fails that category's F1 floor; ``passed=False`` fails parity; ``champion``
    (``{"version", "macro_f1"}``) is what the gate judged no-regression against.
    """
    per = {}
    for i, cat in enumerate(LABELS):
        f1 = 0.7 if cat == weak else macro_f1
        per[cat] = {"precision": f1, "recall": f1, "f1": f1, "pr_auc": 0.95, "support": 100 + i,
                    "threshold": 0.5, "predicted": 100}
    test = {"per_category": per, "macro_f1": macro_f1, "micro_f1": macro_f1 - 0.01, "samples": 3701}
    real = {"groups": {"threatgram": {"n": 300, "macro_f1": 0.6, "per_category": {
        "threats": {"precision": 0.7, "recall": 0.6, "f1": 0.65, "pr_auc": 0.72, "roc_auc": 0.9, "support": 150,
                    "negatives": 150, "threshold": 0.5, "gated": True}}}}}
    behaviour = {"pass_rate": 0.95, "functionalities": {
        "threat_negation": {"gating": True, "n": 40, "passed": 38, "pass_rate": 0.95, "failures": []}}}
    gate = quality_gate(test, {"decision_diff_rate": 0.0 if passed else 0.5}, EvaluateParams(), champion,
                        real=real, behaviour=behaviour).to_dict()
    return {
        "stage": "metrics",
        "served_variant": "int8" if gate["passed"] else "fp32",
        "gate": gate,
        "test": test,
        "thresholds": {c: 0.5 for c in LABELS},
        "calibration": {"brier": 0.014, "ece": 0.012, "per_category_brier": {LABELS[0]: 0.02}},
        "robustness": {"flip_rate": 0.02, "clean": {"macro_f1": 0.88}, "by_kind": {"case": {"n": 48, "flip_rate": 0.0}}},
        "generated": test,
        "real": real,
        "behaviour": behaviour,
        "variants": {
            "fp32": {"file": "model.onnx", "size_bytes": 91_210_538, "texts_per_second": 204.6,
                     "macro_f1": macro_f1, "micro_f1": 0.8, "gate_passed": gate["passed"],
                     "parity": {"max_abs_diff": 4e-6, "decision_diff_rate": 0.0}},
            "int8": {"file": "model.int8.onnx", "size_bytes": 23_193_541, "texts_per_second": 430.6,
                     "macro_f1": macro_f1 - 0.005, "micro_f1": 0.79, "gate_passed": gate["passed"],
                     "parity": {"max_abs_diff": 0.73, "decision_diff_rate": 0.0047}},
        },
        "f1_floor": 0.85,
        "champion_macro_f1": None if champion is None else champion["macro_f1"],
        "seconds": 80.8,
    }
