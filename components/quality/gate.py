"""The quality gate: one module decides every check that promotion depends on.

Four tiers, each a set of named checks. Every check is always listed, so a failed gate says
everything that is wrong at once; a check that could not be measured fails, since an
unmeasured model is not a safe one.

1. ``generated`` (text the generators wrote, the test split): ``generated:f1_floor:<category>``,
   every category's F1 at its tuned threshold >= ``evaluate.f1_floor``.
2. ``real`` (held-out public real text, the ``real_test`` split, never trained or tuned on): for
   each (evaluation group, category) with ``evaluate.real_min_support`` positives and negatives,
   ``real:roc_auc:<group>:<category>`` >= ``evaluate.real_roc_auc_floor`` and
   ``real:pr_auc_regression:<group>:<category>``, PR-AUC not below the champion's by more than
   ``evaluate.real_pr_auc_tolerance``. ``real:measured`` fails when nothing could be judged.
3. ``behaviour`` (the behavioural suite, :mod:`components.quality.behaviour`): for each gating
   functionality, ``behaviour:pass_rate:<functionality>`` >= ``evaluate.behaviour_floor`` and
   ``behaviour:regression:<functionality>`` not below the champion's by more than
   ``evaluate.behaviour_tolerance``. ``behaviour:measured`` fails when the suite was not run.
4. ``release``: ``parity`` (the served variant's decisions at the tuned thresholds differ from
   PyTorch's on at most ``evaluate.parity_tolerance`` of (text, category) pairs) and
   ``no_regression`` (test macro F1 not below the champion's by more than
   ``evaluate.regression_tolerance``; "no champion yet" passes).

The champion is ``{"version", "macro_f1", "real_pr_auc": {group: {category: v}},
"behaviour_pass_rate": {functionality: v}}`` as the registry recorded it (or None). A champion
figure that was never recorded has nothing to compare with, and that check passes saying so.

:func:`select_served_variant` picks the variant that ships using the generated and release tiers
only (real text and the suite never pick a variant); the served variant is then judged on every
tier. The evaluate step records the verdict in ``reports/metrics.json``; the register step
applies it as written and decides nothing again.
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

TIERS = ("generated", "real", "behaviour", "release")


@dataclass
class GateCheck:
    """One check of the gate: its name (``<tier>:<check>:<subject>``, or ``parity``/``no_regression``)."""

    name: str
    passed: bool
    detail: str
    tier: str = "release"


@dataclass
class GateVerdict:
    """Every check, whether all passed, and the champion the regression checks compared with."""

    passed: bool
    checks: list[GateCheck] = field(default_factory=list)
    champion: dict[str, Any] | None = None  # {"version", "macro_f1", ...} judged against, or None
    regression_tolerance: float | None = None

    def failing(self) -> list[GateCheck]:
        """The checks that did not pass, in check order."""
        return [c for c in self.checks if not c.passed]

    def tiers(self) -> dict[str, dict[str, Any]]:
        """Per tier: ``{"passed": bool, "checks": n, "failing": n}`` (a tier with no check is absent)."""
        out: dict[str, dict[str, Any]] = {}
        for tier in TIERS:
            mine = [c for c in self.checks if c.tier == tier]
            if mine:
                bad = sum(not c.passed for c in mine)
                out[tier] = {"passed": bad == 0, "checks": len(mine), "failing": bad}
        return out

    def to_dict(self) -> dict:
        """The ``gate`` object of ``reports/metrics.json``: passed, tiers, checks, failing, champion, tolerance."""
        return {
            "passed": self.passed,
            "tiers": self.tiers(),
            "checks": [asdict(c) for c in self.checks],
            "failing": [c.name for c in self.failing()],
            "champion": None if self.champion is None else dict(self.champion),
            "regression_tolerance": self.regression_tolerance,
        }


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _champion_figure(champion: Mapping[str, Any] | None, key: str, *path: str) -> Any:
    node: Any = (champion or {}).get(key)
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _floor(name: str, tier: str, what: str, value: Any, floor: float, count: str = "", after: str = "") -> GateCheck:
    """``value`` >= ``floor`` (with float slack); unmeasured fails. Detail: ``<what> <value><count> >= <floor><after>``."""
    if not _finite(value):
        return GateCheck(name, False, f"{what} not measured", tier)
    ok = value + _EPS >= floor
    return GateCheck(name, ok, f"{what} {value:.3f}{count} {'>=' if ok else '<'} {floor:.2f}{after}", tier)


# ------------------------------------------------------------------------------ tier 1: generated


def f1_floor_checks(metrics: Mapping[str, Any], floor: float) -> list[GateCheck]:
    """``generated:f1_floor:<category>`` for every category in ``LABELS`` order: F1 >= ``floor``.

    ``metrics``: :func:`components.quality.metrics.category_metrics` on the generated test text.
    """
    per = metrics.get("per_category", {})
    return [_floor(f"generated:f1_floor:{cat}", "generated", "f1", per.get(cat, {}).get("f1"), floor)
            for cat in LABELS]


# ------------------------------------------------------------------------------ tier 2: real text


def real_checks(real: Mapping[str, Any] | None, params: EvaluateParams,
                champion: Mapping[str, Any] | None = None) -> list[GateCheck]:
    """The real-text tier over :func:`components.quality.real_text.real_text_metrics`'s output.

    Only (group, category) pairs marked ``gated`` are judged; ``real:measured`` fails when there
    is none (no held-out real text, or too little of it).
    """
    judged = [(g, cat, m) for g, block in sorted(((real or {}).get("groups") or {}).items())
              for cat, m in (block.get("per_category") or {}).items() if m.get("gated")]
    if not judged:
        why = "no held-out real text" if not real else (
            f"no (source, category) has {params.real_min_support} positives and negatives in the held-out real text")
        return [GateCheck("real:measured", False, why, "real")]
    floor, tol = params.real_roc_auc_floor, params.real_pr_auc_tolerance
    checks = []
    for group, cat, m in judged:
        checks.append(_floor(f"real:roc_auc:{group}:{cat}", "real", "roc_auc", m.get("roc_auc"), floor,
                             after=f" ({m.get('support')} positives)"))
        checks.append(_regression(f"real:pr_auc_regression:{group}:{cat}", "real", "pr_auc", m.get("pr_auc"),
                                  _champion_figure(champion, "real_pr_auc", group, cat), champion, tol))
    return checks


# ------------------------------------------------------------------------------ tier 3: behaviour


def behaviour_checks(behaviour: Mapping[str, Any] | None, params: EvaluateParams,
                     champion: Mapping[str, Any] | None = None) -> list[GateCheck]:
    """The behavioural tier over :func:`components.quality.behaviour.score`'s output: every gating
    functionality's pass rate at the floor and not below the champion's."""
    funcs = ((behaviour or {}).get("functionalities") or {})
    gating = [(name, f) for name, f in funcs.items() if f.get("gating", True)]
    if not gating:
        return [GateCheck("behaviour:measured", False, "the behavioural suite was not run", "behaviour")]
    floor, tol = params.behaviour_floor, params.behaviour_tolerance
    checks = []
    for name, f in gating:
        rate = f.get("pass_rate")
        checks.append(_floor(f"behaviour:pass_rate:{name}", "behaviour", "pass rate", rate, floor,
                             count=f" ({f.get('passed')}/{f.get('n')})"))
        checks.append(_regression(f"behaviour:regression:{name}", "behaviour", "pass rate", rate,
                                  _champion_figure(champion, "behaviour_pass_rate", name), champion, tol))
    return checks


# ------------------------------------------------------------------------------ tier 4: release


def _regression(name: str, tier: str, what: str, value: Any, best: Any, champion: Mapping[str, Any] | None,
                tolerance: float) -> GateCheck:
    """``value`` not below the champion's ``best`` by more than ``tolerance``."""
    if champion is None:
        return GateCheck(name, True, "no champion yet", tier)
    if champion.get("unavailable"):
        return GateCheck(name, False, f"champion unknown ({champion['unavailable']}); rerun evaluate once the "
                         "tracking store answers: content-moderation run --from evaluate", tier)
    who = f"champion version {champion.get('version')}"
    if not _finite(value):
        return GateCheck(name, False, f"{what} not measured", tier)
    if not _finite(best):
        return GateCheck(name, True, f"{who} has no recorded {what}; nothing to compare with", tier)
    ok = value + _EPS >= best - tolerance
    return GateCheck(name, ok, f"{what} {value:.4f} {'>=' if ok else '<'} {who} {best:.4f} - {tolerance:.4f}", tier)


def parity_check(parity: Mapping[str, Any] | None, tolerance: float) -> GateCheck:
    """``parity``: the decision diff rate (:func:`components.quality.parity.parity`) <= ``tolerance``."""
    rate = None if parity is None else parity.get("decision_diff_rate")
    if not _finite(rate):
        return GateCheck("parity", False, "parity not measured: no ONNX vs PyTorch comparison was run")
    if rate <= tolerance + _EPS:
        return GateCheck("parity", True, f"decision diff rate {rate:.4f} <= {tolerance:.4f}")
    return GateCheck("parity", False, f"decision diff rate {rate:.4f} > {tolerance:.4f}")


def no_regression_check(macro_f1: float | None, champion: Mapping[str, Any] | None, tolerance: float) -> GateCheck:
    """``no_regression``: test macro F1 >= the champion's macro F1 - ``tolerance``.

    ``champion`` is ``{"version": str, "macro_f1": float | None, ...}`` or None (no champion yet:
    passes). A champion without a recorded macro F1 passes, saying so; an unmeasured macro F1 of
    the candidate fails, and so does a champion that could not be looked up
    (``{"unavailable": "<why>"}``: the tracking store did not answer).
    """
    return _regression("no_regression", "release", "macro f1", macro_f1,
                       None if champion is None else champion.get("macro_f1"), champion, tolerance)


def _judged(champion: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if champion is None:
        return None
    version = champion.get("version")
    judged = {**champion, "version": None if version is None else str(version)}
    if champion.get("unavailable"):
        judged["unavailable"] = str(champion["unavailable"])
    return judged


def variant_checks(generated: Mapping[str, Any], parity: Mapping[str, Any] | None, params: EvaluateParams,
                   champion: Mapping[str, Any] | None = None) -> list[GateCheck]:
    """The checks a variant must pass to be considered for serving: the generated and release tiers."""
    checks = f1_floor_checks(generated, params.f1_floor)
    checks.append(parity_check(parity, params.parity_tolerance))
    checks.append(no_regression_check(generated.get("macro_f1"), champion, params.regression_tolerance))
    return checks


def quality_gate(
    generated: Mapping[str, Any],
    parity: Mapping[str, Any] | None,
    params: EvaluateParams,
    champion: Mapping[str, Any] | None = None,
    *,
    real: Mapping[str, Any] | None,
    behaviour: Mapping[str, Any] | None,
) -> GateVerdict:
    """Decide promotion on every tier.

    ``generated``: :func:`components.quality.metrics.category_metrics` on the generated test text;
    ``parity``: :func:`components.quality.parity.parity` at the tuned thresholds, or None when it
    was not measured (fails); ``real``: :func:`components.quality.real_text.real_text_metrics` on
    the held-out real text, or None; ``behaviour``: :func:`components.quality.behaviour.score`, or
    None; ``champion``: the registry's current champion (see the module docstring), or None.
    Returns the verdict with every check, in tier order.
    """
    release = variant_checks(generated, parity, params, champion)
    checks = [*release[:-2], *real_checks(real, params, champion), *behaviour_checks(behaviour, params, champion),
              *release[-2:]]
    verdict = GateVerdict(passed=all(c.passed for c in checks), checks=checks, champion=_judged(champion),
                          regression_tolerance=params.regression_tolerance)
    if verdict.passed:
        log.info("quality gate passed (%d checks)", len(checks))
    else:
        bad = verdict.failing()
        log.warning("quality gate failed %d of %d checks: %s", len(bad), len(checks),
                    "; ".join(f"{c.name}: {c.detail}" for c in bad[:10]) + (" ..." if len(bad) > 10 else ""))
    return verdict


def select_served_variant(results: Mapping[str, Mapping[str, Any]], tolerance: float) -> str | None:
    """The smallest exported variant that passed its variant checks and is within tolerance of fp32.

    ``results``: ``{variant: {"macro_f1", "size_bytes", "gate_passed"}}`` where ``gate_passed`` is
    whether :func:`variant_checks` all passed; ``tolerance``: macro F1 (``evaluate.variant_tolerance``).
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
