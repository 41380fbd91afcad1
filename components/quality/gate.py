"""The quality gate: one module decides every check that promotion depends on.

Checks (every one is always listed, so a failed gate says everything that is wrong at once; a
check that could not be measured fails, since an unmeasured model is not a safe one):

- ``f1_floor:<category>``: every category's test F1 at its tuned threshold >= ``evaluate.f1_floor``;
- ``parity``: the served variant's decisions at the tuned thresholds differ from PyTorch's on at
  most ``evaluate.parity_tolerance`` of (text, category) pairs;
- ``no_regression``: test macro F1 not below the champion's by more than
  ``evaluate.regression_tolerance`` (passes with "no champion yet" when there is none).

:func:`select_served_variant` then picks the variant that ships among those that passed. The
evaluate step records the verdict in ``reports/metrics.json``; the register step applies it
as written and decides nothing again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from components.core.params import EvaluateParams
from components.core.taxonomy import LABELS
from components.quality.metrics import EPS as _EPS

log = logging.getLogger(__name__)


@dataclass
class GateCheck:
    """One check of the gate: its name (``f1_floor:<category>``, ``parity``, ``no_regression``)."""

    name: str
    passed: bool
    detail: str


@dataclass
class GateVerdict:
    """Every check, whether all passed, and the champion the no-regression check compared with."""

    passed: bool
    checks: list[GateCheck] = field(default_factory=list)
    champion: dict[str, Any] | None = None  # {"version", "macro_f1"} judged against, or None
    regression_tolerance: float | None = None

    def failing(self) -> list[GateCheck]:
        """The checks that did not pass, in check order."""
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        """The ``gate`` object of ``reports/metrics.json``: passed, checks, failing, champion, tolerance."""
        return {
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "failing": [c.name for c in self.failing()],
            "champion": None if self.champion is None else dict(self.champion),
            "regression_tolerance": self.regression_tolerance,
        }


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def f1_floor_checks(metrics: Mapping[str, Any], floor: float) -> list[GateCheck]:
    """``f1_floor:<category>`` for every category in ``LABELS`` order: test F1 >= ``floor``."""
    checks = []
    per = metrics.get("per_category", {})
    for cat in LABELS:
        f1 = per.get(cat, {}).get("f1")
        if not _finite(f1):
            checks.append(GateCheck(f"f1_floor:{cat}", False, "f1 not measured"))
        elif f1 + _EPS >= floor:
            checks.append(GateCheck(f"f1_floor:{cat}", True, f"f1 {f1:.3f} >= {floor:.2f}"))
        else:
            checks.append(GateCheck(f"f1_floor:{cat}", False, f"f1 {f1:.3f} < {floor:.2f}"))
    return checks


def parity_check(parity: Mapping[str, Any] | None, tolerance: float) -> GateCheck:
    """``parity``: the decision diff rate (:func:`components.quality.parity.parity`) <= ``tolerance``."""
    rate = None if parity is None else parity.get("decision_diff_rate")
    if not _finite(rate):
        return GateCheck("parity", False, "parity not measured: no ONNX vs PyTorch comparison was run")
    if rate <= tolerance + _EPS:
        return GateCheck("parity", True, f"decision diff rate {rate:.4f} <= {tolerance:.4f}")
    return GateCheck("parity", False, f"decision diff rate {rate:.4f} > {tolerance:.4f}")


def no_regression_check(macro_f1: float | None, champion: Mapping[str, Any] | None, tolerance: float) -> GateCheck:
    """``no_regression``: macro F1 >= the champion's macro F1 - ``tolerance``.

    ``champion`` is ``{"version": str, "macro_f1": float | None}`` or None (no champion yet: passes).
    A champion without a recorded macro F1 has nothing to compare with and passes, saying so;
    an unmeasured macro F1 of the candidate fails, and so does a champion that could not be
    looked up (``{"unavailable": "<why>"}``: the tracking store did not answer).
    """
    if champion is None:
        return GateCheck("no_regression", True, "no champion yet")
    if champion.get("unavailable"):
        return GateCheck("no_regression", False, f"champion unknown ({champion['unavailable']}); rerun evaluate "
                         "once the tracking store answers: content-moderation run --from evaluate")
    name = f"champion version {champion.get('version')}"
    if not _finite(macro_f1):
        return GateCheck("no_regression", False, "macro f1 not measured")
    best = champion.get("macro_f1")
    if not _finite(best):
        return GateCheck("no_regression", True, f"{name} has no recorded macro f1; nothing to compare with")
    ok = macro_f1 + _EPS >= best - tolerance
    rel = ">=" if ok else "<"
    return GateCheck("no_regression", ok, f"macro f1 {macro_f1:.4f} {rel} {name} {best:.4f} - {tolerance:.4f}")


def quality_gate(
    metrics: Mapping[str, Any],
    parity: Mapping[str, Any] | None,
    params: EvaluateParams,
    champion: Mapping[str, Any] | None = None,
) -> GateVerdict:
    """Decide promotion: every category's F1 at the floor, ONNX parity, no macro F1 regression.

    ``metrics``: :func:`components.quality.metrics.category_metrics` on the test split;
    ``parity``: :func:`components.quality.parity.parity` at the tuned thresholds, or None when it
    was not measured (fails); ``champion``: ``{"version", "macro_f1"}`` of the registry's current
    champion, or None. Returns the verdict with every check.
    """
    checks = f1_floor_checks(metrics, params.f1_floor)
    checks.append(parity_check(parity, params.parity_tolerance))
    checks.append(no_regression_check(metrics.get("macro_f1"), champion, params.regression_tolerance))
    judged = None
    if champion is not None:
        version = champion.get("version")
        judged = {"version": None if version is None else str(version), "macro_f1": champion.get("macro_f1")}
        if champion.get("unavailable"):
            judged["unavailable"] = str(champion["unavailable"])
    verdict = GateVerdict(passed=all(c.passed for c in checks), checks=checks, champion=judged,
                          regression_tolerance=params.regression_tolerance)
    if verdict.passed:
        log.info("quality gate passed (%d checks)", len(checks))
    else:
        log.warning("quality gate failed: %s", "; ".join(f"{c.name}: {c.detail}" for c in verdict.failing()))
    return verdict


def select_served_variant(results: Mapping[str, Mapping[str, Any]], tolerance: float) -> str | None:
    """The smallest exported variant that passed the gate and is within tolerance of fp32.

    ``results``: ``{variant: {"macro_f1", "size_bytes", "gate_passed"}}``; ``tolerance``: macro F1
    (``evaluate.variant_tolerance``).
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
