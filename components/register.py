"""The register step: record the pipeline run in MLflow, add a model version, apply the gate's verdict.

Reads what the earlier steps wrote (the evaluate report, the train and export statistics, the
training curve, the release folder) and:

1. logs one MLflow run with every param, the figures, the tags (lineage, data and code version,
   profile, gate), the data splits as datasets, the artifacts and the release folder as an MLflow
   pyfunc model (:func:`components.tracking.log_pipeline_run`);
2. registers a version of that model, aliased ``candidate``;
3. applies the quality gate's verdict that the evaluate step recorded in ``reports/metrics.json``
   (:func:`components.tracking.apply_gate`): a passed verdict moves ``champion``, unless the
   champion was moved since evaluation (then the version stays candidate and the reason says to
   rerun evaluate). Nothing is judged again here.

A run continues the lineage (``v17``, ``v18``, ...), or, when ``track.reproduces`` names a
historical version, is recorded as that version's reproduction with the figures reported at the
time beside the ones measured now.

Registering the same outputs again records nothing twice. The run carries a key of what it records
(``registration.key``: metrics.json, the release folder, the ``track`` params). An attempt that was
killed or lost its store before it had a model version (a run left RUNNING or FAILED, or finished
without a version) is deleted and done again, so it leaves no run and takes no lineage version; an
attempt that got as far as a version is resumed from it: the gate's verdict applied if it was not
yet, the outcome read back if it was (also for ``run --from register`` on unchanged outputs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from components import tracking
from components.tracking.lineage import load_lineage
from components.tracking.store import Store
from components.core.params import Params

log = logging.getLogger(__name__)

# The merge step's splits (<params.paths.splits>/<name>.jsonl) and how the run used each.
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "test", "real_test": "test"}
# The run tag naming what a registration records (registration_key); apply_gate tags a run it finished with
# REGISTERED_TAG (the version).
KEY_TAG = "registration.key"
REGISTERED_TAG = "registry.version"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8")) if path.exists() else None


def reproduced_figures(report: dict, reported: dict) -> dict[str, float]:
    """The figures measured now that correspond to those a historical version reported."""
    per = (report.get("test") or {}).get("per_category") or {}
    floor = report.get("f1_floor")
    served = report.get("served_variant")
    variant = (report.get("variants") or {}).get(served) or {}
    now: dict[str, float] = {}
    if (macro := (report.get("test") or {}).get("macro_f1")) is not None:
        now["macro_f1"] = float(macro)
    for cat, figures in per.items():
        if figures.get("f1") is not None:
            now[f"{cat}_f1"] = float(figures["f1"])
    if per and floor is not None:
        now["categories_passing"] = float(sum(1 for v in per.values() if (v.get("f1") or 0) + 1e-9 >= floor))
        now["categories_total"] = float(len(per))
    if variant.get("size_bytes"):
        now["onnx_size_mb"] = round(variant["size_bytes"] / 1e6, 1)
    for cat, value in (report.get("thresholds") or {}).items():
        if isinstance(value, (int, float)):
            now[f"thresholds.{cat}"] = float(value)
    wanted = {k for k, _ in tracking.numeric_items("", reported)}
    return {k: v for k, v in now.items() if k in wanted}


def registration_key(report_path: Path, release_dir: Path, track) -> str:
    """A hash of what a registration records: the evaluate report, every file of the release folder, the
    ``track`` params. The report carries the evaluation's own timings, so a new evaluation is a new key."""
    h = hashlib.sha256(json.dumps(track.model_dump(mode="json"), sort_keys=True).encode())
    files = [("metrics.json", report_path)] + [(str(p.relative_to(release_dir)), p)
                                                for p in sorted(release_dir.rglob("*")) if p.is_file()]
    for name, path in files:
        h.update(name.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:32]


def _earlier_attempt(store: Store, experiment: str, model_name: str, key: str):
    """The newest earlier attempt at this registration that got a model version, as (run, version), or None.

    Attempts that stopped before a version (killed, or the store lost while logging) are deleted, so
    they leave no run behind and no lineage version taken (lineage counts active runs only).
    """
    exp = store.get_experiment_by_name(experiment)
    if exp is None:
        return None
    found = None
    for run in store.search_runs([exp.experiment_id], f"tags.`{KEY_TAG}` = '{key}'",
                                 order_by=["attributes.start_time DESC"]):
        versions = store.search_model_versions(f"name = '{model_name}' and run_id = '{run.info.run_id}'")
        if versions:
            found = found or (run, max(versions, key=lambda v: int(v.version)))
            continue
        store.delete_run(run.info.run_id)
        log.warning("deleted MLflow run %s (%s): an earlier attempt at this registration that stopped before "
                    "registering a version; recording it again", run.info.run_id, run.info.status)
    return found


def _resume(store: Store, tracking_uri: str, run, mv, report: dict, model_name: str, retry) -> tracking.Decision:
    """The gate's verdict for a version an earlier attempt registered: read back if it was applied, else applied."""
    version, tags = str(mv.version), dict(mv.tags or {})
    applied = run.data.tags.get(REGISTERED_TAG) == version
    current = tracking.champion(tracking_uri, model_name, retry=retry)
    moved_by_gate = (current is not None and current["version"] == version and tags.get("gate.decision") == "promoted"
                     and tags.get("promoted_by") == tracking.GATE_ACTOR)
    if applied or moved_by_gate:
        # the verdict was applied (the champion alias moves last): its decision is on the version
        if not applied:
            store.set_tag(run.info.run_id, REGISTERED_TAG, version)
        log.info("%s version %s was registered from these outputs already (run %s); not recorded again",
                 model_name, version, run.info.run_id)
        return tracking.Decision(tags.get("gate.decision") == "promoted",
                                 [r for r in tags.get("gate.reasons", "").split("; ") if r])
    return tracking.apply_gate(tracking_uri, version, report, model_name, retry=retry)


def _record(params: Params, raw_params: dict, report: dict, *, tracking_uri: str, reports_dir: Path,
            release_dir: Path, dvc_lock: Path, code_root: Path, splits_dir: Path | None,
            artifact_location: str | None, retry, key: str) -> tuple[str, dict]:
    """Log the pipeline run (tagged with the registration ``key``); returns its id and lineage tags."""
    from components.serving.mlflow_model import log_release_model

    track = params.track
    table = load_lineage()

    extra: dict[str, float] = {}
    if track.reproduces:
        exp = table[track.reproduces]
        lineage_tags = {
            "lineage.version": exp.version,
            "lineage.parent": exp.parent or "none",
            "lineage.reproduction": "true",
            "lineage.description": exp.description,
        }
        recorded = tracking.lineage_versions(tracking_uri, track.experiment, retry=retry)
        if exp.parent and exp.parent in recorded:
            lineage_tags["mlflow.parentRunId"] = recorded[exp.parent]
            lineage_tags["lineage.parent_run_id"] = recorded[exp.parent]
        extra.update({f"reported.{k}": v for k, v in tracking.numeric_items("", exp.reported)})
        extra.update({f"reproduced.{k}": v for k, v in reproduced_figures(report, exp.reported).items()})
    else:
        lineage_tags = tracking.continue_lineage(tracking_uri, track.experiment, table, retry=retry)

    env = _read_json(reports_dir / "benchmark_env.json") or {}
    for agent, scores in (env.get("scores") or {}).items():
        extra.update({f"env.{agent}.{task}": v for task, v in scores.items() if isinstance(v, (int, float))})
    tags = {
        **lineage_tags,
        "data.version": tracking.data_version(dvc_lock),
        "code.version": tracking.code_version(code_root),
        "profile": params.train.profile,
        KEY_TAG: key,
    }
    artifacts = [reports_dir / name for name in ("metrics.json", "train.json", "export.json", "train_history.json",
                                                 "benchmark_env.json")]
    artifacts += [reports_dir / "plots", release_dir / "thresholds.json", release_dir / "manifest.json"]
    splits_dir = Path(splits_dir) if splits_dir is not None else Path(code_root) / params.paths.splits
    datasets = {name: (splits_dir / f"{name}.jsonl", context) for name, context in SPLIT_CONTEXTS.items()
                if (splits_dir / f"{name}.jsonl").exists()}
    run_id = tracking.log_pipeline_run(
        tracking_uri,
        track.experiment,
        params=raw_params,
        report=report,
        train_stats=_read_json(reports_dir / "train.json"),
        history=_read_json(reports_dir / "train_history.json"),
        export_report=_read_json(reports_dir / "export.json"),
        tags=tags,
        artifacts=[a for a in artifacts if a.exists()],
        model_dir=release_dir if track.log_model else None,
        model_logger=log_release_model,
        datasets=datasets,
        extra_metrics=extra,
        artifact_location=artifact_location,
        retry=retry,
    )
    return run_id, lineage_tags


def register(
    params: Params,
    raw_params: dict,
    *,
    tracking_uri: str,
    reports_dir: Path,
    release_dir: Path,
    dvc_lock: Path,
    code_root: Path,
    splits_dir: Path | None = None,
    artifact_location: str | None = None,
    retry: tracking.RetryPolicy | None = None,
) -> dict:
    """Record and register the model the pipeline just released and apply the gate's recorded verdict.

    Reads ``reports_dir`` (metrics.json, train.json, export.json, train_history.json,
    benchmark_env.json), ``release_dir`` and the splits in ``splits_dir`` (default
    ``<code_root>/<params.paths.splits>``; those present are logged as datasets); returns the
    outcome written to ``reports/registry.json``: run id, version, lineage, ``gate_passed`` (the
    recorded verdict), ``promoted``, ``reasons``, ``champion``. Raises FileNotFoundError when
    evaluate has not run, TrackingError when the store is unavailable.
    """
    t0 = time.perf_counter()
    report = _read_json(reports_dir / "metrics.json")
    if report is None:
        raise FileNotFoundError(f"{reports_dir / 'metrics.json'} not found: run the evaluate step first")
    if not (release_dir / "manifest.json").exists():
        raise FileNotFoundError(f"{release_dir} has no manifest.json: run the evaluate step first")
    track = params.track
    store = Store(tracking_uri, retry)
    key = registration_key(reports_dir / "metrics.json", release_dir, track)
    earlier = _earlier_attempt(store, track.experiment, track.model_name, key)
    if earlier is not None:
        run, mv = earlier
        run_id, version = run.info.run_id, str(mv.version)
        lineage_tags = {k: run.data.tags.get(k, "none") for k in ("lineage.version", "lineage.parent")}
        decision = _resume(store, tracking_uri, run, mv, report, track.model_name, retry)
    else:
        run_id, lineage_tags = _record(params, raw_params, report, tracking_uri=tracking_uri, reports_dir=reports_dir,
                                       release_dir=release_dir, dvc_lock=dvc_lock, code_root=code_root,
                                       splits_dir=splits_dir, artifact_location=artifact_location, retry=retry,
                                       key=key)
        version = tracking.register_version(tracking_uri, run_id, track.model_name, retry=retry)
        decision = tracking.apply_gate(tracking_uri, version, report, track.model_name, retry=retry)
    champion = tracking.champion(tracking_uri, track.model_name, retry=retry)
    outcome = {
        "run_id": run_id,
        "experiment": track.experiment,
        "experiment_id": store.get_run(run_id).info.experiment_id,
        "model_name": track.model_name,
        "version": version,
        "lineage_version": lineage_tags["lineage.version"],
        "lineage_parent": lineage_tags["lineage.parent"],
        "reproduces": track.reproduces,
        "gate_passed": bool((report.get("gate") or {}).get("passed")),
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "champion": champion,
        "macro_f1": (report.get("test") or {}).get("macro_f1"),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    verdict = "promoted to champion" if decision.promote else "stays candidate"
    log.info("%s version %s (%s): %s (%s)", track.model_name, version, lineage_tags["lineage.version"], verdict,
             "; ".join(decision.reasons))
    return outcome
