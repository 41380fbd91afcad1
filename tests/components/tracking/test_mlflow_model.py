"""Each registered version is an MLflow pyfunc model (components.serving.mlflow_model) on a real SQLite
store: ``mlflow.pyfunc.load_model("models:/<name>@champion")`` and ``mlflow models serve`` answer as
``moderate()`` does for the same texts and contexts; the version's artifacts hold ``MLmodel`` and
``artifacts/release/``; the run has the model's signature and input example, the splits as datasets
(digest = the file's md5, which DVC records for it) and the experiment opens on its training runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

mlflow = pytest.importorskip("mlflow")

from mlflow.exceptions import MlflowException  # noqa: E402

from components.core.params import Params, TrackParams  # noqa: E402
from components.core.contract import write_json  # noqa: E402
from components.core.taxonomy import LABELS, ContextPrefix  # noqa: E402
from components.model.folder import CheckpointError, write_release  # noqa: E402
from components.model.onnx_runtime import OnnxClassifier  # noqa: E402
from components.register import register  # noqa: E402
from components.serving.mlflow_model import (  # noqa: E402
    OUTPUT_COLUMNS,
    ModerationModel,
    _texts_and_contexts,
    log_release_model,
)
from components.serving.moderate import moderate  # noqa: E402
from components.tracking import log_pipeline_run, register_version  # noqa: E402
from components.tracking.logged import global_tracking_uri  # noqa: E402
from components.tracking.runs import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG  # noqa: E402
from tests.components.tracking.support import EXP, FAST, MODEL, make_report  # noqa: E402
from deploy.local import free_port

# (text, audience, surface) as a caller sends them, and the context moderate() is given for each.
ROWS = [
    ("I am going to hurt you tonight", "GENERAL", "MESSAGE", ContextPrefix("GENERAL", "MESSAGE")),
    ("lovely weather for the picnic", "adult", "bio", ContextPrefix("ADULT", "BIO")),
    ("[ADULT][LISTING] selling my old bike, barely used", None, None, None),  # its own prefix
    ("you absolute idiot, nobody wants you here", "ADULT", None, ContextPrefix("ADULT", "GENERAL")),
    ("🔥🔥🔥", None, None, None),
    ("Hola, ¿cómo estás? Espero que todo vaya muy bien en tu casa y con tu familia.", None, "REVIEW",
     ContextPrefix("GENERAL", "REVIEW")),
]
# Flags that do not depend on the tiny model's scores: these always flag, the others never.
FLAGGED = ("threats", "profanity", "spam")
SPLITS = {"train": "training", "val": "validation", "test": "test", "real_test": "test"}


def _records() -> list[dict]:
    return [{"text": t, "audience": a, "surface": s} for t, a, s, _ in ROWS]


def _expected(release: Path) -> list[dict]:
    """moderate()'s results for ROWS, in the model's output columns."""
    results = moderate(OnnxClassifier(release), [r[0] for r in ROWS], [r[3] for r in ROWS])
    out = []
    for r in results:
        d = r.to_dict(include_text=False)
        out.append({"action": d["action"], "flags": [f["category"] for f in d["flags"]], "scores": d["scores"],
                    "language": d["language"]["code"], "judged": d["language"]["judged"]})
    return out


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def release(tiny_exported, tmp_path_factory) -> Path:
    """A release folder of the tiny model (fp32), as the evaluate step writes one."""
    out = tmp_path_factory.mktemp("mlflow-model") / "release"
    write_release(tiny_exported[0] / "onnx", out, "fp32", {c: 0.0 if c in FLAGGED else 1.01 for c in LABELS},
                  make_report())
    return out


@pytest.fixture(scope="module")
def registered(release, tiny_splits, tmp_path_factory, _mlflow_template_db) -> dict:
    """One run with the pyfunc model and the tiny splits, registered and made champion."""
    root = tmp_path_factory.mktemp("mlflow-registered")
    shutil.copy(_mlflow_template_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    datasets = {name: (tiny_splits / f"{name}.jsonl", context) for name, context in SPLITS.items()}
    t = time.perf_counter()
    run_id = log_pipeline_run(uri, EXP, params={"train": {"profile": "cpu"}}, report=make_report(),
                              tags={"lineage.version": "v17", "lineage.parent": "v16"}, model_dir=release,
                              model_logger=log_release_model, datasets=datasets,
                              artifact_location=str(root / "artifacts"), retry=FAST)
    logged_s = time.perf_counter() - t
    version = register_version(uri, run_id, MODEL, retry=FAST)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.set_registered_model_alias(MODEL, "champion", version)
    return {"uri": uri, "run_id": run_id, "version": version, "client": client, "root": root,
            "datasets": datasets, "logged_s": logged_s}


@pytest.mark.slow
def test_the_champion_loads_with_pyfunc_and_answers_as_moderate(registered, release):
    import pandas as pd

    with global_tracking_uri(registered["uri"]):
        t = time.perf_counter()
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
        loaded_s = time.perf_counter() - t
        t = time.perf_counter()
        out = model.predict(pd.DataFrame(_records()))
        predicted_s = time.perf_counter() - t
    print(f"log {registered['logged_s']:.1f} s, load {loaded_s:.1f} s, predict {predicted_s:.2f} s")
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    expected = _expected(release)
    assert out.to_dict("records") == expected
    assert expected[0]["flags"] == ["threats", "profanity", "spam"]  # most severe first
    assert [e["language"] for e in expected[4:]] == ["zxx", "es"] and expected[5]["flags"] == []
    # the text column alone: every row placed by its own prefix, else GENERAL/GENERAL
    alone = model.predict(pd.DataFrame({"text": [r[0] for r in ROWS]}))
    assert alone["action"].tolist() == [r.action for r in moderate(OnnxClassifier(release), [r[0] for r in ROWS])]
    # the model object itself also takes a list of strings
    listed = model.unwrap_python_model().predict(None, [r[0] for r in ROWS])
    assert listed.to_dict("records") == alone.to_dict("records")


@pytest.mark.slow
def test_the_version_is_an_mlflow_model_with_signature_example_and_release_folder(registered, tmp_path):
    client, run_id = registered["client"], registered["run_id"]
    run = client.get_run(run_id)
    model_id = run.data.tags["model.id"]
    assert run.data.tags["model.logged"] == "true" and run.info.status == "FINISHED"
    mv = client.get_model_version(MODEL, registered["version"])
    assert mv.source == f"models:/{model_id}" and mv.run_id == run_id
    logged = client.get_logged_model(model_id)
    assert logged.source_run_id == run_id and logged.name == "model"
    assert {m.key: m.value for m in logged.metrics}["test_macro_f1"] == pytest.approx(0.9)  # linked in the batches
    with global_tracking_uri(registered["uri"]):
        path = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion", dst_path=str(tmp_path)))
        info = mlflow.models.get_model_info(f"models:/{MODEL}@champion")
    assert (path / "MLmodel").is_file()
    assert {p.name for p in (path / "artifacts" / "release").iterdir()} >= {
        "model.onnx", "tokenizer.json", "classifier.json", "thresholds.json", "manifest.json"}
    assert (path / "code" / "components" / "serving" / "moderate.py").is_file()
    assert not list((path / "code").rglob("__pycache__")) and not list((path / "code").rglob("*.pyc"))
    requirements = (path / "requirements.txt").read_text().split()
    assert "wordsegment==1.3.1" in requirements and any(r.startswith("onnxruntime==") for r in requirements)
    inputs = info.signature.inputs
    assert inputs.input_names() == ["text", "audience", "surface"] and inputs.required_input_names() == ["text"]
    assert info.signature.outputs.input_names() == list(OUTPUT_COLUMNS)
    assert info.saved_input_example_info is not None
    example = json.loads((path / "input_example.json").read_text())
    assert example["columns"] == ["text", "audience", "surface"] and len(example["data"]) == 3


@pytest.mark.slow
def test_the_splits_are_the_runs_datasets(registered):
    run = registered["client"].get_run(registered["run_id"])
    found = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(found) == set(SPLITS)
    for name, (path, context) in registered["datasets"].items():
        d = found[name]
        assert d.dataset.digest == _md5(path)
        assert json.loads(d.dataset.source) == {"uri": str(path)} and d.dataset.source_type == "local"
        assert {t.key: t.value for t in d.tags}["mlflow.data.context"] == context
        assert json.loads(d.dataset.profile)["num_rows"] == len(path.read_text("utf-8").splitlines())
        assert [c["name"] for c in json.loads(d.dataset.schema)["mlflow_colspec"]] == ["id", "text", "labels"]


def test_the_experiment_opens_on_its_training_runs(mlflow_store):
    uri, artifacts = mlflow_store
    client = mlflow.MlflowClient(tracking_uri=uri)
    old = client.create_experiment("made-before", artifact_location=artifacts)
    chosen = client.create_experiment("chosen", artifact_location=artifacts,
                                      tags={EXPERIMENT_KIND_TAG: "genai_development"})
    names = (EXP, "made-before", "chosen")
    for name in names:
        log_pipeline_run(uri, name, params={}, report=make_report(), artifact_location=artifacts, retry=FAST)
    kind = {name: client.get_experiment_by_name(name).tags.get(EXPERIMENT_KIND_TAG) for name in names}
    assert kind == {EXP: EXPERIMENT_KIND, "made-before": EXPERIMENT_KIND, "chosen": "genai_development"}
    assert {old, chosen} <= {e.experiment_id for e in client.search_experiments()}


def test_register_logs_the_project_splits_as_datasets(mlflow_store, tmp_path):
    """The register step finds the splits under <root>/<params.paths.splits>; absent ones are left out."""
    uri, artifacts = mlflow_store
    params = Params(track=TrackParams(model_name=MODEL, experiment="register-test", log_model=False))
    reports, release, splits = tmp_path / "reports", tmp_path / "release", tmp_path / params.paths.splits
    reports.mkdir()
    release.mkdir()
    splits.mkdir(parents=True)
    write_json(release / "manifest.json", {"served_variant": "fp32"})
    write_json(reports / "metrics.json", make_report())
    for name in ("train", "val", "test"):
        (splits / f"{name}.jsonl").write_text(json.dumps({"id": name, "text": "hi", "labels": {}}) + "\n")
    out = register(params, params.model_dump(mode="json"), tracking_uri=uri, reports_dir=reports,
                   release_dir=release, dvc_lock=tmp_path / "dvc.lock", code_root=tmp_path,
                   artifact_location=artifacts, retry=FAST)
    inputs = mlflow.MlflowClient(tracking_uri=uri).get_run(out["run_id"]).inputs.dataset_inputs
    assert {d.dataset.name: d.dataset.digest for d in inputs} == {
        name: _md5(splits / f"{name}.jsonl") for name in ("train", "val", "test")}


def test_a_folder_that_is_not_a_release_fails_the_run(mlflow_store, tmp_path):
    uri, artifacts = mlflow_store
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "thresholds.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no classifier.json"):
        log_pipeline_run(uri, EXP, params={}, report=make_report(), model_dir=tmp_path / "release",
                         model_logger=log_release_model, artifact_location=artifacts, retry=FAST)
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(EXP).experiment_id])
    assert run.info.status == "FAILED" and "model.id" not in run.data.tags
    with pytest.raises(ValueError, match="model_dir needs a model_logger"):
        log_pipeline_run(uri, EXP, params={}, report=make_report(), model_dir=tmp_path / "release", retry=FAST)


def test_input_it_cannot_read_is_the_callers_error():
    import pandas as pd

    texts, contexts = _texts_and_contexts(pd.DataFrame({"text": ["a", "b"], "surface": ["listing", float("nan")]}))
    assert texts == ["a", "b"] and contexts == [ContextPrefix("GENERAL", "LISTING"), None]
    assert _texts_and_contexts(["a", "b"]) == (["a", "b"], [None, None])
    for bad, message in [(pd.DataFrame({"body": ["a"]}), "needs a 'text' column"),
                         (pd.DataFrame({"text": ["a", "b"], "audience": [None, "KIDS"]}), "row 1: unknown audience"),
                         (pd.DataFrame({"text": ["a", None]}), r"rows \[1\] are not"),
                         (42, "expected a DataFrame")]:
        with pytest.raises(MlflowException, match=message) as err:
            _texts_and_contexts(bad)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert isinstance(ModerationModel(), mlflow.pyfunc.PythonModel)


# ---------------------------------------------------------------------------------------------
# mlflow models serve


def _post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow
def test_mlflow_models_serve_answers_as_moderate(registered, release, tmp_path):
    port = free_port()
    # The server runs `uvicorn` from PATH: this interpreter's scripts first, as in an activated venv.
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"], "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    log = (tmp_path / "serve.log").open("wb")
    # Run outside the project, so the model's own code/ (code_paths) is what gets imported.
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
                             "--env-manager", "local", "-p", str(port), "--host", "127.0.0.1", "-w", "1"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 180 s"
            time.sleep(1)
        status, body = _post(f"{base}/invocations", {"dataframe_records": _records()})
        assert status == 200, body
        assert body["predictions"] == _expected(release)
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"text": "hi", "audience": "KIDS"}]})
        assert status == 400 and "unknown audience" in body["message"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        log.close()
