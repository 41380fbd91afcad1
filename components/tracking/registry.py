"""The model registry: versions, the ``candidate`` and ``champion`` aliases, and who moved them.

- :func:`register_version` adds a version of the registered model (source ``models:/<model id>``,
  the run's MLflow pyfunc model, so ``mlflow.pyfunc.load_model("models:/<name>@champion")`` loads
  it) and points the ``candidate`` alias at it.
- :func:`apply_gate` applies the quality gate's verdict recorded by the evaluate step
  (``reports/metrics.json``: ``gate``); it decides nothing itself. A passed verdict judged against
  the champion the registry still has moves ``champion``; anything else leaves the version a
  candidate. The reasons are model-version tags whatever the outcome.
- :func:`promote` and :func:`rollback` are for people and record who and why as tags.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.tracking.logged import MODEL_NAME, global_tracking_uri
from components.tracking.runs import MODEL_ID_TAG
from components.tracking.store import (
    CANDIDATE,
    CHAMPION,
    DEFAULT_MODEL_NAME,
    GATE_ACTOR,
    RegistryError,
    RetryPolicy,
    TrackingError,
    _error_code,
    now_iso,
    Store,
    tag_value,
)

log = logging.getLogger(__name__)


@dataclass
class Decision:
    """What the registry did with a version: ``promote`` (it became champion) and why, in words."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


def _ensure_registered_model(store: Store, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        store.get_registered_model(name)
        return
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        store.create_registered_model(
            name, description="Content-moderation classifier; the quality gate moves the champion alias."
        )
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise


def register_version(
    tracking_uri: str, run_id: str, model_name: str = DEFAULT_MODEL_NAME, *, retry: RetryPolicy | None = None
) -> str:
    """A new version of ``model_name`` from the run's logged model, aliased ``candidate``.

    The source is ``models:/<id>`` of the run's ``model.id`` tag (the pyfunc model
    :func:`~components.tracking.runs.log_pipeline_run` logged); a run that logged no model
    (``track.log_model: false``) gets ``runs:/<id>/model``, which loads nothing.
    """
    store = Store(tracking_uri, retry)
    run = store.get_run(run_id)
    _ensure_registered_model(store, model_name)
    tags = {"registered_at": now_iso()}
    if (macro := run.data.metrics.get("test_macro_f1")) is not None:
        tags["macro_f1"] = repr(float(macro))
    for key in ("lineage.version", "lineage.parent", "gate.verdict", "gate.failing", "data.version",
                "code.version", "profile", "served_variant"):
        if run.data.tags.get(key):
            tags[key] = run.data.tags[key]
    model_id = run.data.tags.get(MODEL_ID_TAG)
    if model_id:
        # MLflow's SQL registry looks the logged model up through the global tracking URI.
        with global_tracking_uri(store.uri):
            mv = store.create_model_version(model_name, f"models:/{model_id}", run_id=run_id, tags=tags,
                                            model_id=model_id)
    else:
        mv = store.create_model_version(model_name, f"runs:/{run_id}/{MODEL_NAME}", run_id=run_id, tags=tags)
    store.set_registered_model_alias(model_name, CANDIDATE, mv.version)
    log.info("registered %s version %s (alias %s)", model_name, mv.version, CANDIDATE)
    return str(mv.version)


def _version(store: Store, model_name: str, version: str | int):
    from mlflow.exceptions import MlflowException

    try:
        return store.get_model_version(model_name, str(version))
    except MlflowException as exc:
        if _error_code(exc) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    known = sorted(
        (str(v.version) for v in _all_versions(store, model_name)), key=lambda s: int(s) if s.isdigit() else 0
    )
    raise RegistryError(
        f"{model_name} has no version {version!r}; versions: {', '.join(known) or 'none registered yet'}"
    )


def _all_versions(store: Store, model_name: str) -> list:
    try:
        return list(store.search_model_versions(f"name = '{model_name}'"))
    except TrackingError:
        raise
    except Exception:
        return []


def _by_alias(store: Store, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return store.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _macro_f1_of(mv, run_metrics: Mapping[str, float]) -> float | None:
    """The version's ``macro_f1`` tag, else its run's ``test_macro_f1``."""
    tag = (mv.tags or {}).get("macro_f1")
    if tag:
        try:
            return float(tag)
        except ValueError:
            pass
    value = run_metrics.get("test_macro_f1")
    return None if value is None else float(value)


def _champion(store: Store, model_name: str) -> dict | None:
    mv = _by_alias(store, model_name, CHAMPION)
    if mv is None:
        return None
    figures = store.get_run(mv.run_id).data.metrics if mv.run_id else {}  # one read serves every figure
    return {
        "version": str(mv.version),
        "macro_f1": _macro_f1_of(mv, figures),
        "promoted_at": (mv.tags or {}).get("promoted_at"),
        "run_id": mv.run_id,
        **champion_figures(figures),
    }


def champion_figures(metrics: Mapping[str, float]) -> dict:
    """The gate's per-subject figures read back from a run's metrics (as :func:`report_metrics` names
    them): ``{"real_pr_auc": {group: {category: v}}, "behaviour_pass_rate": {functionality: v}}``."""
    real: dict[str, dict[str, float]] = {}
    behaviour: dict[str, float] = {}
    for key, value in metrics.items():
        parts = key.split(".")
        if len(parts) == 4 and parts[0] == "real" and parts[3] == "pr_auc":
            real.setdefault(parts[1], {})[parts[2]] = float(value)
        elif len(parts) == 3 and parts[0] == "behaviour" and parts[2] == "pass_rate":
            behaviour[parts[1]] = float(value)
    return {"real_pr_auc": real, "behaviour_pass_rate": behaviour}


def champion(tracking_uri: str, model_name: str = DEFAULT_MODEL_NAME, *, retry: RetryPolicy | None = None) -> dict | None:
    """The current champion: ``{version, macro_f1, promoted_at, run_id, real_pr_auc, behaviour_pass_rate}``
    (see :func:`champion_figures`), or None if there is none."""
    return _champion(Store(tracking_uri, retry), model_name)


def _set_version_tags(store: Store, model_name: str, version: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        store.set_model_version_tag(model_name, version, key, tag_value(value))


def _set_run_tags(store: Store, run_id: str | None, tags: Mapping[str, Any]) -> None:
    if not run_id:
        return
    from mlflow.entities import RunTag

    store.log_batch(run_id, tags=[RunTag(k, tag_value(v)) for k, v in tags.items()])


def _move_champion(store: Store, model_name: str, version: str, tags: Mapping[str, Any]) -> None:
    """Tag first, then move the alias: a failure in between leaves champion where it was."""
    _set_version_tags(store, model_name, version, tags)
    store.set_registered_model_alias(model_name, CHAMPION, version)


RERUN_EVALUATE = "content-moderation run --from evaluate"


def _judged_against(gate: Mapping[str, Any]) -> str | None:
    champ = gate.get("champion")
    return None if not champ or champ.get("version") is None else str(champ["version"])


def verdict_reasons(gate: Mapping[str, Any]) -> list[str]:
    """The gate's verdict in words: the summary, then the no-regression check and every failing check.

    ``gate`` is ``reports/metrics.json``'s ``gate`` (``passed``, ``checks`` [{name, passed, detail}],
    ``failing``). Nothing is decided here; the words are what the evaluate step's gate wrote.
    """
    checks = list(gate.get("checks") or [])
    failing = list(gate.get("failing") or [])
    reasons = [f"gate: all {len(checks)} checks passed" if gate.get("passed")
               else "gate failed" + (f": {', '.join(failing)}" if failing else "")]
    for check in checks:
        if check.get("name") == "no_regression" or not check.get("passed"):
            reasons.append(f"{check.get('name')}: {check.get('detail')}")
    return reasons


def _stale_verdict(gate: Mapping[str, Any], current: Mapping[str, Any] | None) -> str | None:
    """Why a recorded verdict no longer applies (the champion moved since evaluation), or None."""
    if "champion" not in gate:
        return ("the verdict does not record which champion it was judged against (a metrics.json written "
                f"before the no-regression check moved to evaluate); rerun evaluate: {RERUN_EVALUATE}")
    judged, now = _judged_against(gate), None if current is None else str(current["version"])
    if judged == now:
        return None
    return (f"the champion is {'version ' + now if now else 'gone'} now, but evaluate judged this model against "
            f"{'version ' + judged if judged else 'no champion'}: the champion was moved since evaluation, so the "
            f"no-regression check is out of date; rerun evaluate: {RERUN_EVALUATE}")


def apply_gate(
    tracking_uri: str,
    version: str | int,
    report: Mapping[str, Any],
    model_name: str = DEFAULT_MODEL_NAME,
    *,
    retry: RetryPolicy | None = None,
) -> Decision:
    """Apply the quality gate's recorded verdict to ``version``; the reasons become tags.

    ``report`` is the evaluate report (``reports/metrics.json``): ``gate.passed``, ``gate.checks``,
    ``gate.failing`` and ``gate.champion`` (the champion the no-regression check compared with,
    ``{"version", "macro_f1"}`` or None). Nothing is judged again here. The version becomes
    champion only if the verdict passed and the registry's champion is still the one it was
    judged against; a champion moved by hand since evaluation leaves it a candidate with a reason
    that says to rerun evaluate. A refused version never touches ``champion``. Raises
    :class:`RegistryError` for an unknown version, :class:`TrackingError` when the store is down.
    """
    store = Store(tracking_uri, retry)
    version = str(version)
    mv = _version(store, model_name, version)
    gate = report.get("gate") or {}
    macro = (report.get("test") or {}).get("macro_f1")
    current = _champion(store, model_name)
    if current is not None and current["version"] == version:
        # Nothing to apply: its own gate tags stay as they were written when it was promoted.
        return Decision(False, [f"version {version} is already champion"])
    reasons = verdict_reasons(gate)
    stale = _stale_verdict(gate, current)
    if stale:
        reasons.append(stale)
    decision = Decision(promote=bool(gate.get("passed")) and stale is None, reasons=reasons)
    now = now_iso()
    tags = {
        "gate.decision": "promoted" if decision.promote else "refused",
        "gate.reasons": "; ".join(decision.reasons),
        "gate.decided_at": now,
        "gate.champion_before": current["version"] if current else "none",
        "gate.judged_against": _judged_against(gate) or "none",
    }
    if gate.get("regression_tolerance") is not None:
        tags["gate.tolerance"] = repr(float(gate["regression_tolerance"]))
    if macro is not None and "macro_f1" not in (mv.tags or {}):
        tags["macro_f1"] = repr(float(macro))
    _set_version_tags(store, model_name, version, tags)
    if decision.promote:
        _move_champion(store, model_name, version, {
            "previous_champion": current["version"] if current else "none",
            "promoted_at": now,
            "promoted_by": GATE_ACTOR,
            "promoted_why": "; ".join(decision.reasons),
            "promotion": "gate",
        })
        log.info("quality gate: %s version %s is champion (%s)", model_name, version, "; ".join(decision.reasons))
    else:
        log.warning("quality gate: %s version %s stays %s (%s)", model_name, version, CANDIDATE,
                    "; ".join(decision.reasons))
    _set_run_tags(store, mv.run_id, {k: v for k, v in tags.items() if k.startswith("gate.")} | {
        "registry.version": version})
    return decision


def _require(who: str, why: str) -> None:
    if not str(who or "").strip() or not str(why or "").strip():
        raise RegistryError("say who and why: both are recorded as tags on the model version")


def promote(
    tracking_uri: str,
    version: str | int,
    who: str,
    why: str,
    model_name: str = DEFAULT_MODEL_NAME,
    *,
    retry: RetryPolicy | None = None,
) -> dict:
    """A person makes ``version`` champion; who and why are recorded as tags. Returns the new champion."""
    _require(who, why)
    store = Store(tracking_uri, retry)
    version = str(version)
    mv = _version(store, model_name, version)
    current = _champion(store, model_name)
    if current is not None and current["version"] == version:
        raise RegistryError(f"{model_name} version {version} is already champion")
    tags = {
        "previous_champion": current["version"] if current else "none",
        "promoted_at": now_iso(),
        "promoted_by": who,
        "promoted_why": why,
        "promotion": "manual",
    }
    if (mv.tags or {}).get("gate.decision") == "refused":
        tags["promotion.gate_override"] = "true"
        log.warning("%s version %s was refused by the gate; promoted by %s anyway: %s", model_name, version, who, why)
    _move_champion(store, model_name, version, tags)
    return _champion(store, model_name)


def rollback(
    tracking_uri: str,
    who: str,
    why: str,
    model_name: str = DEFAULT_MODEL_NAME,
    *,
    retry: RetryPolicy | None = None,
) -> dict:
    """Move ``champion`` back to the version it replaced; who and why are recorded as tags."""
    _require(who, why)
    store = Store(tracking_uri, retry)
    current = _by_alias(store, model_name, CHAMPION)
    if current is None:
        raise RegistryError(f"{model_name} has no champion: nothing to roll back")
    previous = (current.tags or {}).get("previous_champion")
    if not previous or previous == "none":
        raise RegistryError(
            f"{model_name} champion version {current.version} replaced no earlier champion: nothing to roll back to"
        )
    _version(store, model_name, previous)
    now = now_iso()
    _set_version_tags(store, model_name, str(current.version), {
        "rolled_back_at": now, "rolled_back_by": who, "rolled_back_why": why, "rolled_back_to": previous,
    })
    _move_champion(store, model_name, previous, {
        "promoted_at": now, "promoted_by": who, "promoted_why": why, "promotion": "rollback",
        "restored_from": str(current.version),
    })
    log.warning("%s champion rolled back from version %s to %s by %s: %s", model_name, current.version,
                previous, who, why)
    return _champion(store, model_name)
