"""MLflow tracking and the model registry: one run per pipeline run, and the gate moves `champion`.

Everything talks to the store through ``mlflow.MlflowClient`` objects built for the given
tracking URI (never MLflow's global fluent state), so a test can use a temporary SQLite store.

- :func:`log_pipeline_run` records a pipeline run: flattened params, per-category test figures,
  macro/micro figures, the gate verdict, variant sizes and speeds, the training curve as metric
  steps, tags (lineage, data and code version, profile, gate) and artifacts (the model folder
  under ``model/``).
- :func:`register_version` adds a version of the registered model (source ``runs:/<id>/model``)
  and points the ``candidate`` alias at it.
- :func:`apply_gate` lets the quality gate alone move ``champion``: every gate check passed and
  macro F1 not below the champion's by more than the tolerance. The reasons are model-version
  tags whatever the decision; a refused version never touches ``champion``.
- :func:`promote` and :func:`rollback` are for people and record who and why as tags.
- :func:`import_lineage` records the historical experiments (``components/tracking/lineage.py``) as runs;
  :func:`continue_lineage` gives a new run its version and parent.

Every store call is retried with exponential backoff on transient failures (connection errors,
a locked SQLite database, 5xx / TEMPORARILY_UNAVAILABLE); when the retries run out the call
raises :class:`TrackingError`, which says how to fix it. Nothing here deletes or rewrites the
pipeline's outputs, so a tracking failure leaves them on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from components.tracking.lineage import LineageTable, load_lineage, next_version, version_number

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "content-moderation"
DEFAULT_EXPERIMENT = "content-moderation"
CANDIDATE = "candidate"
CHAMPION = "champion"
GATE_ACTOR = "quality-gate"

# MLflow 3 accepts 6000-character param values, older servers 500: stay within what any accepts.
MAX_PARAM_VALUE = 500
MAX_TAG_VALUE = 5000
_BATCH_PARAMS_TAGS = 100
_BATCH_METRICS = 500
_TRUNCATED = "...[truncated]"
_EPS = 1e-9
_NAME_BAD_CHARS = re.compile(r"[^/\w.\- ]")


class TrackingError(RuntimeError):
    """The tracking store could not be reached or used; the pipeline's outputs are still on disk."""


class RegistryError(ValueError):
    """A registry request that cannot be honoured (unknown version, nothing to roll back to)."""


# ---------------------------------------------------------------------------------------------
# retries


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per store call and the exponential backoff between them (seconds)."""

    attempts: int = 4
    initial_wait: float = 0.5
    max_wait: float = 8.0


DEFAULT_RETRY = RetryPolicy()

_TRANSIENT_TEXT = (
    "database is locked",
    "database table is locked",
    "connection refused",
    "max retries exceeded",
    "failed to establish a new connection",
    "connection aborted",
    "connection reset",
    "temporarily unavailable",
    "timed out",
    "name or service not known",
    "unable to open database file",
)


def _is_transient(exc: BaseException) -> bool:
    """Whether a store failure is worth retrying: the network, a locked database, a 5xx."""
    if isinstance(exc, (TrackingError, RegistryError)):
        return False
    try:
        import requests

        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
    except ImportError:  # pragma: no cover - requests ships with mlflow
        pass
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = str(exc).lower()
    try:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.OperationalError):
            return any(t in text for t in _TRANSIENT_TEXT)
    except ImportError:  # pragma: no cover
        pass
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        if exc.error_code == "TEMPORARILY_UNAVAILABLE":
            return True
        try:
            if int(exc.get_http_status_code()) >= 500:
                return True
        except (TypeError, ValueError):
            pass
        return any(t in text for t in _TRANSIENT_TEXT)
    return False


def redact_uri(uri: str) -> str:
    """The URI without a password, for messages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def _unavailable(uri: str, what: str, attempts: int, exc: BaseException) -> TrackingError:
    shown = redact_uri(uri)
    detail = str(exc).splitlines()[0][:400] if str(exc) else type(exc).__name__
    if uri.startswith(("http://", "https://")):
        fix = (
            f"start the tracking server (e.g. `mlflow server --host 127.0.0.1 --backend-store-uri "
            f"sqlite:///mlflow.db --workers 1`) so that {shown} answers, or set MLFLOW_TRACKING_URI "
            f"to a reachable store (sqlite:///mlflow.db needs no server)"
        )
    elif uri.startswith("sqlite:"):
        fix = (
            "if the database is locked, stop the other process using it and retry; check the path "
            "exists and is writable, or set MLFLOW_TRACKING_URI to another store"
        )
    else:
        fix = "check the store is up and reachable, or set MLFLOW_TRACKING_URI to a reachable store"
    return TrackingError(
        f"MLflow tracking store {shown} unavailable: {what} failed after {attempts} attempt(s): {detail}. "
        f"Fix: {fix}. The pipeline's outputs are kept on disk (reports/, models/); "
        f"record them again once the store is back."
    )


class _Store:
    """An MlflowClient whose every call is retried and whose give-up is a TrackingError."""

    def __init__(self, uri: str, retry: RetryPolicy | None = None):
        self.uri = uri
        self.retry = retry or DEFAULT_RETRY
        if uri.startswith(("http://", "https://")):
            # MLflow's own HTTP retries default to 7 with backoff (minutes on a dead server);
            # our retries wrap every call, so keep MLflow's short unless the user chose otherwise.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        from mlflow import MlflowClient

        self.client = self.call("connect", lambda: MlflowClient(tracking_uri=uri, registry_uri=uri))

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        policy = self.retry
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(max(1, policy.attempts)),
                wait=wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait),
                retry=retry_if_exception(_is_transient),
                reraise=True,
                before_sleep=lambda rs: log.warning(
                    "tracking store %s: %s failed (attempt %d/%d), retrying: %s",
                    redact_uri(self.uri), what, rs.attempt_number, policy.attempts, rs.outcome.exception(),
                ),
            ):
                with attempt:
                    return fn()
        except Exception as exc:
            if _is_transient(exc):
                raise _unavailable(self.uri, what, policy.attempts, exc) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name in ("client", "uri", "retry"):
            raise AttributeError(name)
        method = getattr(self.client, name)

        def retried(*args, **kwargs):
            return self.call(name, lambda: method(*args, **kwargs))

        return retried


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


# ---------------------------------------------------------------------------------------------
# flattening and names


def _param_value(value: Any, max_len: int) -> str:
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, (bool, int, float)):
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    if len(text) > max_len:
        text = text[: max_len - len(_TRUNCATED)] + _TRUNCATED
    return text


def flatten_params(params: Mapping[str, Any], prefix: str = "", max_len: int = MAX_PARAM_VALUE) -> dict[str, str]:
    """Nested params as ``{"train.profiles.cpu.mode": "head", ...}``.

    Lists and empty mappings become JSON strings; values longer than ``max_len`` are cut and
    marked ``...[truncated]`` (the full params are logged as an artifact by the caller).
    """
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name, max_len))
        else:
            out[name] = _param_value(value if not isinstance(value, Mapping) else {}, max_len)
    return out


def _name(text: str) -> str:
    """A metric/param/tag key MLflow accepts on every platform."""
    return _NAME_BAD_CHARS.sub("_", str(text))[:250]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def numeric_items(prefix: str, obj: Any) -> Iterable[tuple[str, float]]:
    """Every finite number in a nested dict, keyed by its dotted path."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from numeric_items(f"{prefix}.{key}" if prefix else str(key), value)
    else:
        num = _number(obj)
        if num is not None:
            yield prefix, num


def _tag_value(value: Any, max_len: int = MAX_TAG_VALUE) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= max_len else text[: max_len - len(_TRUNCATED)] + _TRUNCATED


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# versions of code and data (read from files; nothing is run)


def data_version(dvc_lock: str | os.PathLike = "dvc.lock", prefix: str = "data/") -> str | None:
    """A short content hash over the DVC hashes of every output under ``prefix`` in dvc.lock."""
    import yaml

    path = Path(dvc_lock)
    if not path.exists():
        return None
    lock = yaml.safe_load(path.read_text("utf-8")) or {}
    outs = sorted(
        (o["path"], str(o.get("md5") or o.get("hash") or ""))
        for stage in (lock.get("stages") or {}).values()
        for o in stage.get("outs", [])
        if str(o.get("path", "")).startswith(prefix)
    )
    if not outs:
        return None
    return hashlib.sha256(json.dumps(outs).encode()).hexdigest()[:12]


def code_version(root: str | os.PathLike = ".") -> str | None:
    """The commit checked out in ``root`` (read from .git, without running git), or None."""
    git = Path(root) / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = (Path(root) / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for base in (git, _common_dir(git)):
            ref_file = base / ref
            if ref_file.exists():
                return ref_file.read_text().strip()
            packed = base / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
    except (OSError, IndexError):
        return None
    return None


def _common_dir(git: Path) -> Path:
    common = git / "commondir"
    return (git / common.read_text().strip()).resolve() if common.exists() else git


# ---------------------------------------------------------------------------------------------
# experiments and runs


def _experiment_id(store: _Store, name: str, artifact_location: str | None = None) -> str:
    from mlflow.exceptions import MlflowException

    exp = store.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {name!r} in {redact_uri(store.uri)} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or use another name"
            )
        return exp.experiment_id
    try:
        return store.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as exc:
        if _error_code(exc) == "RESOURCE_ALREADY_EXISTS":  # created by a concurrent run
            return store.get_experiment_by_name(name).experiment_id
        raise


def _log_batches(store: _Store, run_id: str, metrics=(), params=(), tags=()) -> None:
    metrics, params, tags = list(metrics), list(params), list(tags)
    for i in range(0, len(params), _BATCH_PARAMS_TAGS):
        store.log_batch(run_id, params=params[i : i + _BATCH_PARAMS_TAGS])
    for i in range(0, len(tags), _BATCH_PARAMS_TAGS):
        store.log_batch(run_id, tags=tags[i : i + _BATCH_PARAMS_TAGS])
    for i in range(0, len(metrics), _BATCH_METRICS):
        store.log_batch(run_id, metrics=metrics[i : i + _BATCH_METRICS])


def report_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The single-valued metrics of an evaluate report (``reports/metrics.json``)."""
    out: dict[str, float] = {}
    test = report.get("test") or {}
    for cat, figures in (test.get("per_category") or {}).items():
        for key in ("precision", "recall", "f1", "pr_auc"):
            if (v := _number(figures.get(key))) is not None:
                out[f"test_{key}.{cat}"] = v
        for key in ("threshold", "support", "predicted"):
            if (v := _number(figures.get(key))) is not None:
                out[f"{key}.{cat}"] = v
    for key, value in test.items():
        if key != "per_category" and (v := _number(value)) is not None:
            out[f"test_{key}"] = v
    for cat, value in (report.get("thresholds") or {}).items():
        if (v := _number(value)) is not None:
            out.setdefault(f"threshold.{cat}", v)
    gate = report.get("gate") or {}
    out["gate_passed"] = 1.0 if gate.get("passed") else 0.0
    out["gate_failing_count"] = float(len(gate.get("failing") or []))

    for variant, figures in (report.get("variants") or {}).items():
        if (size := _number((figures or {}).get("size_bytes"))) is not None:
            out[f"size_mb.{variant}"] = size / 1e6
        for path, v in numeric_items("", figures or {}):
            if path == "gate_passed":
                path = "variant_gate_passed"
            elif path in ("macro_f1", "micro_f1"):
                path = f"variant_{path}"
            out[f"{path}.{variant}"] = v
    served = report.get("served_variant")
    if served and f"size_mb.{served}" in out:
        out["served_size_mb"] = out[f"size_mb.{served}"]
        if f"texts_per_second.{served}" in out:
            out["served_texts_per_second"] = out[f"texts_per_second.{served}"]

    calib = report.get("calibration") or {}
    for key, value in calib.items():
        if key == "per_category_brier":
            for cat, v in (value or {}).items():
                if (n := _number(v)) is not None:
                    out[f"brier.{cat}"] = n
        elif (n := _number(value)) is not None:
            out[f"calibration.{key}"] = n
    for path, v in numeric_items("robustness", report.get("robustness") or {}):
        out[path] = v
    for name, figures in (report.get("external") or {}).items():
        short = str(name).split(":", 1)[-1]
        for path, v in numeric_items(f"external.{short}", figures or {}):
            out[path] = v
    for key in ("seconds", "champion_macro_f1", "f1_floor"):
        if (v := _number(report.get(key))) is not None:
            out[f"evaluate_{key}" if key == "seconds" else key] = v
    return {_name(k): v for k, v in out.items()}


def _gate_tags(report: Mapping[str, Any]) -> dict[str, str]:
    gate = report.get("gate") or {}
    failing = list(gate.get("failing") or [])
    tags = {
        "gate.verdict": "passed" if gate.get("passed") else "failed",
        "gate.failing": ", ".join(failing) if failing else "none",
    }
    for check in gate.get("checks") or []:
        if not check.get("passed"):
            tags[_name(f"gate.check.{check.get('name')}")] = _tag_value(check.get("detail", "failed"))
    if report.get("served_variant"):
        tags["served_variant"] = str(report["served_variant"])
    return tags


def log_pipeline_run(
    tracking_uri: str,
    experiment_name: str,
    *,
    params: Mapping[str, Any],
    report: Mapping[str, Any],
    train_stats: Mapping[str, Any] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    export_report: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    artifacts: Sequence[str | os.PathLike] = (),
    model_dir: str | os.PathLike | None = None,
    extra_metrics: Mapping[str, float] | None = None,
    run_name: str | None = None,
    artifact_location: str | None = None,
    retry: RetryPolicy | None = None,
) -> str:
    """Record one pipeline run; returns its run id.

    ``tags`` carries ``lineage.version``, ``lineage.parent``, ``data.version``, ``code.version``
    and ``profile`` (see :func:`continue_lineage`, :func:`data_version`, :func:`code_version`);
    the gate tags come from the report. Files in ``artifacts`` go to the run's root, folders
    under their own name, ``model_dir`` under ``model/``. ``extra_metrics`` are logged as given
    (e.g. ``reported.macro_f1`` beside ``reproduced.macro_f1`` for a lineage reproduction). A missing artifact is skipped and named
    in the ``artifacts.missing`` tag. If logging fails part way the run is marked FAILED.
    """
    from mlflow.entities import Metric, Param

    store = _Store(tracking_uri, retry)
    exp_id = _experiment_id(store, experiment_name, artifact_location)
    all_tags = {str(k): _tag_value(v) for k, v in (tags or {}).items() if v is not None}
    all_tags.update(_gate_tags(report))
    if train_stats:
        for key in ("profile", "model", "mode", "device"):
            if train_stats.get(key) is not None:
                all_tags.setdefault("profile" if key == "profile" else f"train.{key}", str(train_stats[key]))
    if run_name is None and all_tags.get("lineage.version"):
        run_name = all_tags["lineage.version"]
    run = store.create_run(exp_id, run_name=run_name, tags={"lineage.historical": "false", **all_tags})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in report_metrics(report).items()]
        for path, v in numeric_items("train", dict(train_stats or {})):
            metrics.append(Metric(_name(path), v, now, 0))
        for path, v in numeric_items("export", {
            k: val for k, val in (export_report or {}).items() if k != "stage"
        }):
            metrics.append(Metric(_name(path), v, now, 0))
        for i, point in enumerate(history or []):
            step = int(point.get("epoch", point.get("step", i + 1)))
            for key, value in point.items():
                if key in ("epoch", "step") or (v := _number(value)) is None:
                    continue
                metrics.append(Metric(_name("train_loss" if key == "loss" else key), v, now, step))
        for key, value in (extra_metrics or {}).items():
            if (v := _number(value)) is not None:
                metrics.append(Metric(_name(key), v, now, 0))
        flat = flatten_params(params)
        _log_batches(store, run_id, metrics=metrics, params=[Param(_name(k), v) for k, v in flat.items()])

        missing = []
        for item in artifacts:
            path = Path(item)
            if path.is_dir():
                store.log_artifacts(run_id, str(path), path.name)
            elif path.is_file():
                store.log_artifact(run_id, str(path))
            else:
                missing.append(str(path))
        if model_dir is not None:
            if Path(model_dir).is_dir():
                store.log_artifacts(run_id, str(model_dir), "model")
            else:
                missing.append(str(model_dir))
        if missing:
            log.warning("artifacts not found, not logged: %s", ", ".join(missing))
            store.set_tag(run_id, "artifacts.missing", _tag_value(", ".join(missing)))
        store.set_tag(run_id, "model.logged", "true" if model_dir is not None and Path(model_dir).is_dir() else "false")
        store.set_terminated(run_id, "FINISHED")
    except BaseException:
        try:
            store.client.set_terminated(run_id, "FAILED")
        except Exception:  # the store may be the reason we are here
            pass
        raise
    log.info("logged MLflow run %s in experiment %s (%s)", run_id, experiment_name, redact_uri(tracking_uri))
    return run_id


# ---------------------------------------------------------------------------------------------
# registry


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide_promotion(
    report_gate_passed: bool,
    macro_f1: float | None,
    champion_macro_f1: float | None,
    tolerance: float,
    failing: Sequence[str] = (),
) -> Decision:
    """Promote only if every gate check passed and macro F1 is within ``tolerance`` of the champion's.

    Every reason is listed, passing or not, so the decision explains itself.
    """
    reasons: list[str] = []
    ok = True
    if report_gate_passed:
        reasons.append("gate: all checks passed")
    else:
        ok = False
        reasons.append("gate failed" + (f": {', '.join(failing)}" if failing else ""))
    if macro_f1 is None or not math.isfinite(float(macro_f1)):
        ok = False
        reasons.append("macro F1 not measured")
    elif champion_macro_f1 is None:
        reasons.append(f"no champion yet (macro F1 {macro_f1:.4f})")
    else:
        need = champion_macro_f1 - tolerance
        if macro_f1 + _EPS >= need:
            reasons.append(
                f"macro F1 {macro_f1:.4f} >= champion {champion_macro_f1:.4f} - tolerance {tolerance:.4f}"
            )
        else:
            ok = False
            reasons.append(
                f"regression: macro F1 {macro_f1:.4f} < champion {champion_macro_f1:.4f} - tolerance {tolerance:.4f}"
            )
    return Decision(promote=ok, reasons=reasons)


def _ensure_registered_model(store: _Store, name: str) -> None:
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
    """A new version of ``model_name`` from the run's ``model/`` artifacts, aliased ``candidate``."""
    store = _Store(tracking_uri, retry)
    run = store.get_run(run_id)
    _ensure_registered_model(store, model_name)
    tags = {"registered_at": _now_iso()}
    if (macro := run.data.metrics.get("test_macro_f1")) is not None:
        tags["macro_f1"] = repr(float(macro))
    for key in ("lineage.version", "lineage.parent", "gate.verdict", "gate.failing", "data.version",
                "code.version", "profile", "served_variant"):
        if run.data.tags.get(key):
            tags[key] = run.data.tags[key]
    mv = store.create_model_version(model_name, f"runs:/{run_id}/model", run_id=run_id, tags=tags)
    store.set_registered_model_alias(model_name, CANDIDATE, mv.version)
    log.info("registered %s version %s (alias %s)", model_name, mv.version, CANDIDATE)
    return str(mv.version)


def _version(store: _Store, model_name: str, version: str | int):
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


def _all_versions(store: _Store, model_name: str) -> list:
    try:
        return list(store.search_model_versions(f"name = '{model_name}'"))
    except TrackingError:
        raise
    except Exception:
        return []


def _by_alias(store: _Store, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return store.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _macro_f1_of(store: _Store, mv) -> float | None:
    tag = (mv.tags or {}).get("macro_f1")
    if tag:
        try:
            return float(tag)
        except ValueError:
            pass
    if mv.run_id:
        value = store.get_run(mv.run_id).data.metrics.get("test_macro_f1")
        return None if value is None else float(value)
    return None


def _champion(store: _Store, model_name: str) -> dict | None:
    mv = _by_alias(store, model_name, CHAMPION)
    if mv is None:
        return None
    return {
        "version": str(mv.version),
        "macro_f1": _macro_f1_of(store, mv),
        "promoted_at": (mv.tags or {}).get("promoted_at"),
        "run_id": mv.run_id,
    }


def champion(tracking_uri: str, model_name: str = DEFAULT_MODEL_NAME, *, retry: RetryPolicy | None = None) -> dict | None:
    """The current champion: ``{version, macro_f1, promoted_at, run_id}``, or None if there is none."""
    return _champion(_Store(tracking_uri, retry), model_name)


def _set_version_tags(store: _Store, model_name: str, version: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        store.set_model_version_tag(model_name, version, key, _tag_value(value))


def _set_run_tags(store: _Store, run_id: str | None, tags: Mapping[str, Any]) -> None:
    if not run_id:
        return
    from mlflow.entities import RunTag

    store.log_batch(run_id, tags=[RunTag(k, _tag_value(v)) for k, v in tags.items()])


def _move_champion(store: _Store, model_name: str, version: str, tags: Mapping[str, Any]) -> None:
    """Tag first, then move the alias: a failure in between leaves champion where it was."""
    _set_version_tags(store, model_name, version, tags)
    store.set_registered_model_alias(model_name, CHAMPION, version)


def apply_gate(
    tracking_uri: str,
    version: str | int,
    report: Mapping[str, Any],
    tolerance: float,
    model_name: str = DEFAULT_MODEL_NAME,
    *,
    retry: RetryPolicy | None = None,
) -> Decision:
    """Let the quality gate decide whether ``version`` becomes champion; the reasons become tags.

    ``report`` is the evaluate report (``gate.passed``, ``gate.failing``, ``test.macro_f1``).
    The champion's macro F1 is read from the registry now, not from the report, so a champion
    promoted since the evaluation counts. A refused version never touches ``champion``.
    """
    store = _Store(tracking_uri, retry)
    version = str(version)
    mv = _version(store, model_name, version)
    gate = report.get("gate") or {}
    macro = (report.get("test") or {}).get("macro_f1")
    current = _champion(store, model_name)
    if current is not None and current["version"] == version:
        # Nothing to decide: its own gate tags stay as they were written when it was promoted.
        return Decision(False, [f"version {version} is already champion"])
    decision = decide_promotion(
        bool(gate.get("passed")),
        None if macro is None else float(macro),
        None if current is None else current["macro_f1"],
        tolerance,
        failing=list(gate.get("failing") or []),
    )
    now = _now_iso()
    verdict = "promoted" if decision.promote else "refused"
    tags = {
        "gate.decision": verdict,
        "gate.reasons": "; ".join(decision.reasons),
        "gate.decided_at": now,
        "gate.tolerance": repr(float(tolerance)),
        "gate.champion_before": current["version"] if current else "none",
    }
    if macro is not None and "macro_f1" not in (mv.tags or {}):
        tags["macro_f1"] = repr(float(macro))
    if decision.promote:
        _set_version_tags(store, model_name, version, tags)
        _move_champion(store, model_name, version, {
            "previous_champion": current["version"] if current else "none",
            "promoted_at": now,
            "promoted_by": GATE_ACTOR,
            "promoted_why": "; ".join(decision.reasons),
            "promotion": "gate",
        })
        log.info("quality gate: %s version %s is champion (%s)", model_name, version, "; ".join(decision.reasons))
    else:
        _set_version_tags(store, model_name, version, tags)
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
    store = _Store(tracking_uri, retry)
    version = str(version)
    mv = _version(store, model_name, version)
    current = _champion(store, model_name)
    if current is not None and current["version"] == version:
        raise RegistryError(f"{model_name} version {version} is already champion")
    tags = {
        "previous_champion": current["version"] if current else "none",
        "promoted_at": _now_iso(),
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
    store = _Store(tracking_uri, retry)
    current = _by_alias(store, model_name, CHAMPION)
    if current is None:
        raise RegistryError(f"{model_name} has no champion: nothing to roll back")
    previous = (current.tags or {}).get("previous_champion")
    if not previous or previous == "none":
        raise RegistryError(
            f"{model_name} champion version {current.version} replaced no earlier champion: nothing to roll back to"
        )
    _version(store, model_name, previous)
    now = _now_iso()
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


# ---------------------------------------------------------------------------------------------
# lineage


def _lineage_runs(store: _Store, exp_id: str, historical: bool | None = None) -> list:
    flt = "tags.`lineage.version` != ''"
    if historical is not None:
        flt = f"tags.`lineage.historical` = '{'true' if historical else 'false'}'"
    runs, token = [], None
    while True:
        page = store.search_runs([exp_id], filter_string=flt, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def import_lineage(
    tracking_uri: str,
    experiment_name: str,
    table: LineageTable | None = None,
    *,
    artifact_location: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[str]:
    """One historical run per lineage version; returns their run ids in table order.

    Idempotent: versions already recorded (found by their ``lineage.version`` tag) are left as
    they are and only missing ones are created. Overrides become params, the figures reported
    at the time metrics named ``reported.<figure>``; parents are linked by tag and as MLflow
    parent runs, so the UI shows the tree.
    """
    from mlflow.entities import Metric, Param

    table = table or load_lineage()
    store = _Store(tracking_uri, retry)
    exp_id = _experiment_id(store, experiment_name, artifact_location)
    existing: dict[str, str] = {}
    for run in _lineage_runs(store, exp_id, historical=True):
        existing.setdefault(run.data.tags["lineage.version"], run.info.run_id)

    order = sorted(table, key=lambda e: (len(table.ancestors(e.version)), e.number))
    now = int(time.time() * 1000)
    for exp in order:
        if exp.version in existing:
            continue
        parent_run = existing.get(exp.parent) if exp.parent else None
        tags = {
            "lineage.version": exp.version,
            "lineage.parent": exp.parent or "none",
            "lineage.historical": "true",
            "lineage.description": _tag_value(exp.description),
            "mlflow.note.content": _tag_value(
                exp.description + ("\n\n" + "\n".join(f"- {n}" for n in exp.notes) if exp.notes else "")
            ),
        }
        if exp.notes:
            tags["lineage.notes"] = _tag_value(" | ".join(exp.notes))
        if parent_run:
            tags["lineage.parent_run_id"] = parent_run
            tags["mlflow.parentRunId"] = parent_run
        run = store.create_run(exp_id, run_name=exp.version, tags=tags, start_time=now)
        run_id = run.info.run_id
        params = [Param(_name(k), v) for k, v in flatten_params(exp.overrides).items()]
        metrics = [Metric(_name(f"reported.{k}"), v, now, 0) for k, v in numeric_items("", exp.reported)]
        _log_batches(store, run_id, metrics=metrics, params=params)
        store.set_terminated(run_id, "FINISHED", end_time=now)
        existing[exp.version] = run_id
        log.info("lineage: recorded historical run %s (%s)", exp.version, run_id)
    return [existing[e.version] for e in table]


def lineage_versions(
    tracking_uri: str, experiment_name: str, *, retry: RetryPolicy | None = None
) -> dict[str, str]:
    """``{version: run_id}`` of every run in the experiment that carries a lineage version.

    Where a version appears twice the newest run wins.
    """
    store = _Store(tracking_uri, retry)
    exp = store.get_experiment_by_name(experiment_name)
    if exp is None:
        return {}
    out: dict[str, tuple[int, str]] = {}
    for run in _lineage_runs(store, exp.experiment_id):
        v = run.data.tags.get("lineage.version", "")
        if v and (v not in out or run.info.start_time > out[v][0]):
            out[v] = (run.info.start_time, run.info.run_id)
    return {v: rid for v, (_, rid) in out.items()}


def continue_lineage(
    tracking_uri: str,
    experiment_name: str,
    table: LineageTable | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> dict[str, str]:
    """The lineage tags for a new pipeline run: the next version, with the latest one as parent.

    The latest version is the highest of the table's and those already recorded in the
    experiment (``v16`` with only the history; ``v17`` after one new run; ...).
    """
    table = table or load_lineage()
    recorded = lineage_versions(tracking_uri, experiment_name, retry=retry)
    versions = set(recorded) | set(table.experiments)
    valid = [v for v in versions if re.fullmatch(r"v[1-9][0-9]*", v)]
    parent = max(valid, key=version_number) if valid else None
    tags = {"lineage.version": next_version(valid), "lineage.parent": parent or "none"}
    if parent and parent in recorded:
        tags["lineage.parent_run_id"] = recorded[parent]
        tags["mlflow.parentRunId"] = recorded[parent]
    return tags
