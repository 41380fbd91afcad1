"""One MLflow run per pipeline run: flattened params, the report's figures, tags, datasets and the model.

:func:`log_pipeline_run` records a pipeline run: flattened params, per-category test figures,
macro/micro figures, the gate verdict, variant sizes and speeds, the training curve as metric
steps, tags (lineage, data and code version, profile, gate), the data splits as MLflow datasets
(:func:`components.tracking.logged.split_dataset`), artifacts, and the release folder as the run's MLflow model, logged by
the function the caller passes (the register step passes
``components.serving.mlflow_model.log_release_model``, a pyfunc model: tracking imports no serving
code). Nothing here deletes or rewrites the pipeline's outputs, so a tracking failure leaves them
on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.tracking.logged import ModelLogger, _log_datasets, _log_model
from components.tracking.store import (
    MAX_PARAM_VALUE,
    RetryPolicy,
    TrackingError,
    _error_code,
    metric_name,
    as_number,
    Store,
    tag_value,
    _TRUNCATED,
    numeric_items,
    redact_uri,
)

log = logging.getLogger(__name__)

_BATCH_PARAMS_TAGS = 100
_BATCH_METRICS = 500
# Marks the experiment as model training, so the MLflow UI never asks its kind; which view it opens
# on is the browser's workflow type (see experiment_ui_path).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
MODEL_ID_TAG = "model.id"  # the run's logged model (models:/<id>), what register_version registers


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


def experiment_ui_path(experiment_id: str) -> str:
    """The MLflow UI's address (after its host) of an experiment's training runs. MLflow 3.17's UI
    shows every experiment in its GenAI view (an Overview of traces) unless the browser's workflow
    type is "Model training"; the ``workflowType`` parameter sets it, and the UI remembers it."""
    return f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _experiment_id(store: Store, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, created if need be as a model-training experiment (:data:`EXPERIMENT_KIND`);
    an existing one without a kind gets it, one whose kind someone chose keeps it."""
    from mlflow.exceptions import MlflowException

    exp = store.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {name!r} in {redact_uri(store.uri)} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or use another name"
            )
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
            store.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        return store.create_experiment(name, artifact_location=artifact_location,
                                       tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException as exc:
        if _error_code(exc) == "RESOURCE_ALREADY_EXISTS":  # created by a concurrent run
            return store.get_experiment_by_name(name).experiment_id
        raise


def _log_batches(store: Store, run_id: str, metrics=(), params=(), tags=()) -> None:
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
            if (v := as_number(figures.get(key))) is not None:
                out[f"test_{key}.{cat}"] = v
        for key in ("threshold", "support", "predicted"):
            if (v := as_number(figures.get(key))) is not None:
                out[f"{key}.{cat}"] = v
    for key, value in test.items():
        if key != "per_category" and (v := as_number(value)) is not None:
            out[f"test_{key}"] = v
    for cat, value in (report.get("thresholds") or {}).items():
        if (v := as_number(value)) is not None:
            out.setdefault(f"threshold.{cat}", v)
    gate = report.get("gate") or {}
    out["gate_passed"] = 1.0 if gate.get("passed") else 0.0
    out["gate_failing_count"] = float(len(gate.get("failing") or []))

    for variant, figures in (report.get("variants") or {}).items():
        if (size := as_number((figures or {}).get("size_bytes"))) is not None:
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
                if (n := as_number(v)) is not None:
                    out[f"brier.{cat}"] = n
        elif (n := as_number(value)) is not None:
            out[f"calibration.{key}"] = n
    for path, v in numeric_items("robustness", report.get("robustness") or {}):
        out[path] = v
    generated = report.get("generated") or {}
    for cat, figures in (generated.get("per_category") or {}).items():
        for key in ("precision", "recall", "f1", "pr_auc"):
            if (v := as_number(figures.get(key))) is not None:
                out[f"generated_{key}.{cat}"] = v
    for key in ("macro_f1", "micro_f1", "macro_pr_auc"):
        if (v := as_number(generated.get(key))) is not None:
            out[f"generated_{key}"] = v
    # real.<group>.<category>.<figure> and behaviour.<functionality>.pass_rate: the registry reads the
    # champion's figures back under these names (components/tracking/registry.py champion_figures).
    for group, block in ((report.get("real") or {}).get("groups") or {}).items():
        for cat, figures in (block.get("per_category") or {}).items():
            for key in ("precision", "recall", "f1", "pr_auc", "roc_auc", "support"):
                if (v := as_number(figures.get(key))) is not None:
                    out[f"real.{group}.{cat}.{key}"] = v
        for key in ("macro_f1", "macro_pr_auc", "macro_roc_auc", "no_label_false_positive_rate"):
            if (v := as_number(block.get(key))) is not None:
                out[f"real.{group}.{key}"] = v
    behaviour = report.get("behaviour") or {}
    for name, figures in (behaviour.get("functionalities") or {}).items():
        if (v := as_number(figures.get("pass_rate"))) is not None:
            out[f"behaviour.{name}.pass_rate"] = v
    for key in ("pass_rate", "gating_pass_rate"):
        if (v := as_number(behaviour.get(key))) is not None:
            out[f"behaviour_{key}"] = v
    for tier, figures in (gate.get("tiers") or {}).items():
        out[f"gate_tier_passed.{tier}"] = 1.0 if figures.get("passed") else 0.0
    for key in ("seconds", "champion_macro_f1", "f1_floor"):
        if (v := as_number(report.get(key))) is not None:
            out[f"evaluate_{key}" if key == "seconds" else key] = v
    return {metric_name(k): v for k, v in out.items()}


def _gate_tags(report: Mapping[str, Any]) -> dict[str, str]:
    gate = report.get("gate") or {}
    failing = list(gate.get("failing") or [])
    tags = {
        "gate.verdict": "passed" if gate.get("passed") else "failed",
        "gate.failing": ", ".join(failing) if failing else "none",
    }
    for check in gate.get("checks") or []:
        if not check.get("passed"):
            tags[metric_name(f"gate.check.{check.get('name')}")] = tag_value(check.get("detail", "failed"))
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
    model_logger: ModelLogger | None = None,
    datasets: Mapping[str, tuple[str | os.PathLike, str]] | None = None,
    extra_metrics: Mapping[str, float] | None = None,
    run_name: str | None = None,
    artifact_location: str | None = None,
    retry: RetryPolicy | None = None,
) -> str:
    """Record one pipeline run; returns its run id.

    ``tags`` carries ``lineage.version``, ``lineage.parent``, ``data.version``, ``code.version``
    and ``profile`` (see :func:`continue_lineage`, :func:`data_version`, :func:`code_version`);
    the gate tags come from the report. Files in ``artifacts`` go to the run's root, folders
    under their own name. ``model_dir`` (a release folder) becomes the run's MLflow model named
    ``model``, logged by ``model_logger(model_dir, "model")`` inside the run (the register step passes
    :func:`components.serving.mlflow_model.log_release_model`: a pyfunc model); its id is the
    ``model.id`` tag, which :func:`~components.tracking.registry.register_version` registers.
    ``datasets`` (``{"train": (path, "training"), ...}``) become the run's dataset inputs with
    their context (:func:`components.tracking.logged.split_dataset`). ``extra_metrics`` are logged as given (e.g.
    ``reported.macro_f1`` beside ``reproduced.macro_f1`` for a lineage reproduction). A missing
    artifact, dataset or model folder is skipped and named in the ``artifacts.missing`` tag. If
    logging fails part way the run is marked FAILED.
    """
    from mlflow.entities import Metric, Param

    if model_dir is not None and model_logger is None:
        raise ValueError("model_dir needs a model_logger (components.serving.mlflow_model.log_release_model)")
    store = Store(tracking_uri, retry)
    exp_id = _experiment_id(store, experiment_name, artifact_location)
    all_tags = {str(k): tag_value(v) for k, v in (tags or {}).items() if v is not None}
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
        flat = flatten_params(params)
        _log_batches(store, run_id, params=[Param(metric_name(k), v) for k, v in flat.items()])
        missing = _log_datasets(store, run_id, datasets or {})
        for item in artifacts:
            path = Path(item)
            if path.is_dir():
                store.log_artifacts(run_id, str(path), path.name)
            elif path.is_file():
                store.log_artifact(run_id, str(path))
            else:
                missing.append(str(path))
        # The model before the metrics: each metric then names it (the model's page shows them) in
        # the same batches, instead of MLflow linking the run's metrics to it one query per metric.
        model_logged = model_dir is not None and Path(model_dir).is_dir()
        model_id = _log_model(store, run_id, Path(model_dir), model_logger) if model_logged else None
        if model_id:
            store.set_tag(run_id, MODEL_ID_TAG, model_id)
        elif model_dir is not None:
            missing.append(str(model_dir))

        now = int(time.time() * 1000)

        def metric(name: str, value: float, step: int = 0) -> Metric:
            return Metric(name, value, now, step, model_id=model_id)

        metrics = [metric(k, v) for k, v in report_metrics(report).items()]
        metrics += [metric(metric_name(path), v) for path, v in numeric_items("train", dict(train_stats or {}))]
        metrics += [metric(metric_name(path), v) for path, v in numeric_items("export", {
            k: val for k, val in (export_report or {}).items() if k != "stage"})]
        for i, point in enumerate(history or []):
            step = int(point.get("epoch", point.get("step", i + 1)))
            for key, value in point.items():
                if key in ("epoch", "step") or (v := as_number(value)) is None:
                    continue
                metrics.append(metric(metric_name("train_loss" if key == "loss" else key), v, step))
        for key, value in (extra_metrics or {}).items():
            if (v := as_number(value)) is not None:
                metrics.append(metric(metric_name(key), v))
        _log_batches(store, run_id, metrics=metrics)
        if missing:
            log.warning("artifacts not found, not logged: %s", ", ".join(missing))
            store.set_tag(run_id, "artifacts.missing", tag_value(", ".join(missing)))
        store.set_tag(run_id, "model.logged", "true" if model_logged else "false")
        store.set_terminated(run_id, "FINISHED")
    except BaseException:
        try:
            store.client.set_terminated(run_id, "FAILED")
        except Exception:  # the store may be the reason we are here
            pass
        raise
    log.info("logged MLflow run %s in experiment %s (%s)", run_id, experiment_name, redact_uri(tracking_uri))
    return run_id
