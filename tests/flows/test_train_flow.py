"""The real train-flow on an ephemeral Prefect, in a temporary copy of the repository, on tiny volumes.

The tests share one copy and run in order: each starts from the state the previous one left.
They check Prefect's caching, its agreement with DVC both ways, the MLflow run and registry
(on the copy's own SQLite store), the pipeline lock, a killed run resuming, newly reviewed
examples, and the experiment lineage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from flows.dvc_state import stage_names
from tests.conftest import ROOT
from tests.project import BIN, clean_env, make_project, set_params, sh

pytestmark = pytest.mark.slow
CLI = str(BIN / "content-moderation")
DATA_STEPS = stage_names(ROOT)[: stage_names(ROOT).index("train")]


def steps(output: str) -> dict[str, str]:
    """``{step: final state}`` from the summary `content-moderation run` prints."""
    lines = output.splitlines()
    start = lines.index("train-flow:") + 1
    out = {}
    for line in lines[start:]:
        if not line.startswith("  ") or ":" not in line:
            break
        name, rest = line.strip().split(":", 1)
        out[name] = rest.split("(")[0].strip()
    return out


def ran(output: str) -> list[str]:
    return [name for name, state in steps(output).items() if state != "Cached"]


def client(repo: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def pipeline_runs(repo: Path) -> list:
    c = client(repo)
    exp = c.get_experiment_by_name("content-moderation")
    return list(c.search_runs([exp.experiment_id], "tags.`lineage.historical` = 'false'")) if exp else []


def registry(repo: Path) -> dict:
    return json.loads((repo / "reports/registry.json").read_text())


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("flow"))


def test_first_run_builds_everything_records_it_and_dvc_agrees(repo):
    out = sh(repo, CLI, "run")
    assert steps(out) == {name: "Completed" for name in stage_names(ROOT)}
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status")
    assert "quality gate" in out and "champion: none yet" in out

    reg = registry(repo)
    assert (reg["version"], reg["lineage_version"], reg["lineage_parent"]) == ("1", "v17", "v16")
    assert reg["promoted"] is False and reg["champion"] is None  # a 30-examples-a-category model fails the gate

    (run,) = pipeline_runs(repo)
    assert run.data.params["train.profiles.cpu.head_epochs"] == "20"
    assert run.data.params["evaluate.f1_floor"] == "0.85"
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert run.data.metrics["test_macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])
    assert run.data.metrics["test_f1.threats"] == pytest.approx(metrics["test"]["per_category"]["threats"]["f1"])
    assert "threshold.harassment" in run.data.metrics and "support.harassment" in run.data.metrics
    assert 0 <= run.data.metrics["env.classifier.multi-label-classify"] <= 1
    assert run.data.metrics["size_mb.int8"] > 0 and run.data.metrics["latency_ms_p50.int8"] > 0
    assert run.data.tags["lineage.version"] == "v17" and run.data.tags["gate.verdict"] == "failed"
    assert len(run.data.tags["data.version"]) == 12 and run.data.tags["profile"] == "cpu"
    history = client(repo).get_metric_history(run.info.run_id, "train_loss")
    curve = json.loads((repo / "reports/train_history.json").read_text())
    assert [m.step for m in history] == [p["epoch"] for p in curve] and history[-1].step == 20
    artifacts = {a.path for a in client(repo).list_artifacts(run.info.run_id)}
    assert {"metrics.json", "plots", "thresholds.json"} <= artifacts
    mv = client(repo).get_model_version_by_alias("content-moderation", "candidate")
    assert str(mv.version) == "1" and mv.tags["gate.decision"] == "refused"
    # the release folder is the run's MLflow model (a logged model, not run artifacts), and the version is it
    assert run.data.tags["model.logged"] == "true" and mv.source == f"models:/{run.data.tags['model.id']}"


def test_second_run_is_all_cached_and_records_nothing_new(repo):
    out = sh(repo, CLI, "run")
    assert steps(out) == {name: "Cached" for name in stage_names(ROOT)}
    assert len(pipeline_runs(repo)) == 1


def test_an_evaluate_param_reruns_only_evaluation_and_registration_and_the_gate_promotes(repo):
    # every floor at zero, and a little real text judged: every tier passes and the gate lets it through
    set_params(repo, **{"evaluate.f1_floor": 0.0, "evaluate.real_roc_auc_floor": 0.0, "evaluate.behaviour_floor": 0.0,
                        "evaluate.real_min_support": 2})
    out = sh(repo, CLI, "run")
    # evaluation (the gate's floor is in the release manifest, so the environment benchmark too) and registration
    assert ran(out) == ["evaluate", "benchmark-env", "register", "report"]
    reg = registry(repo)
    assert reg["promoted"] is True and reg["champion"]["version"] == reg["version"] == "2"
    champion = client(repo).get_model_version_by_alias("content-moderation", "champion")
    assert str(champion.version) == "2" and champion.tags["promoted_by"] == "quality-gate"
    assert "champion: content-moderation version 2" in sh(repo, CLI, "status")


def test_a_regression_is_refused_and_champion_stays(repo):
    set_params(repo, **{"train.profiles.cpu.head_epochs": 1, "evaluate.regression_tolerance": 0.0})
    out = sh(repo, CLI, "run")
    assert ran(out) == ["train", "export", "evaluate", "benchmark-env", "register", "report"]
    reg = registry(repo)
    assert reg["version"] == "3" and reg["promoted"] is False
    assert any("no_regression" in r for r in reg["reasons"]), reg["reasons"]
    assert client(repo).get_model_version_by_alias("content-moderation", "champion").version == 2
    mv = client(repo).get_model_version("content-moderation", "3")
    assert mv.tags["gate.decision"] == "refused" and "regression" in mv.tags["gate.reasons"]


def test_dvc_repro_then_the_flow_finds_everything_cached(repo):
    set_params(repo, **{"evaluate.calibration_bins": 5})  # changes the report, not the release
    repro = sh(repo, "dvc", "repro")
    assert [line.split("'")[1] for line in repro.splitlines() if line.startswith("Running stage")] == [
        "evaluate", "register", "report"]
    out = sh(repo, CLI, "run")
    assert steps(out) == {name: "Cached" for name in stage_names(ROOT)}


def test_to_and_from(repo):
    set_params(repo, **{"ingest.seed": 5})
    out = sh(repo, CLI, "run", "--to", "ingest-external")
    assert steps(out) == {"ingest-external": "Completed"}
    assert "merge" in sh(repo, "dvc", "status")
    out = sh(repo, CLI, "run", "--from", "generate-perturbations")
    # Forced, and byte-identical: nothing after it reruns for it; merge reruns for the new ingest.
    assert steps(out)["generate-perturbations"] == "Completed"
    assert ran(out)[:2] == ["generate-perturbations", "merge"]
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status")


def test_newly_reviewed_examples_in_incoming_are_merged(repo):
    from components.core.contract import Record, make_labels, read_records, write_records

    reviewed = [Record(f"review-{i}", f"[GENERAL][MESSAGE] reviewer confirmed threat number {i}: you will pay for this",
                       make_labels(["threats"]), {"source": "review", "group": f"review-{i}"}) for i in range(6)]
    write_records(repo / "data/incoming/2026-11-28.jsonl", reviewed)
    out = sh(repo, CLI, "run")
    assert ran(out) == ["merge", "train", "export", "evaluate", "benchmark-env", "register", "report"]
    ids = {r.id for s in ("train", "val", "test") for r in read_records(repo / f"data/splits/{s}.jsonl").records}
    assert {r.id for r in reviewed} <= ids

    # A broken line is rejected with its reason, never silently dropped, and the rest still merges.
    with open(repo / "data/incoming/broken.jsonl", "w") as fh:
        fh.write('{"id": "x1", "text": "hello", "labels": {"threats": 2}}\n')
    sh(repo, CLI, "run", "--to", "merge")
    rejects = (repo / "data/splits/rejects.jsonl").read_text()
    assert "broken.jsonl" in rejects and "x1" in rejects
    (repo / "data/incoming/broken.jsonl").unlink()
    sh(repo, CLI, "run")


def test_a_busy_checkout_is_refused(repo):
    from filelock import FileLock

    with FileLock(str(repo / ".pipeline.lock")):
        for cmd in (("run",), ("stage", "merge")):
            proc = subprocess.run([CLI, *cmd], cwd=repo, env=clean_env(repo), capture_output=True, text=True)
            assert proc.returncode == 1 and "another pipeline run" in proc.stderr, proc.stderr


def _lock_entry(repo: Path, stage: str):
    try:
        return yaml.safe_load((repo / "dvc.lock").read_text())["stages"].get(stage)
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def test_a_killed_run_resumes_from_its_finished_steps(repo):
    set_params(repo, **{"train.seed": 99})
    before = _lock_entry(repo, "train")
    proc = subprocess.Popen([CLI, "run"], cwd=repo, env=clean_env(repo), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while _lock_entry(repo, "train") == before and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the step after train is running: nothing gets to clean up
    proc.wait()
    out = sh(repo, CLI, "run")  # the kernel released the lock with the process
    assert steps(out)["train"] == "Cached" and all(steps(out)[s] == "Cached" for s in DATA_STEPS)
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status")


def test_an_unreachable_tracking_server_fails_clearly_and_keeps_the_outputs(repo):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    set_params(repo, **{"evaluate.batch_size": 16})
    proc = subprocess.run([CLI, "run"], cwd=repo, env={**clean_env(repo), "MLFLOW_TRACKING_URI": dead},
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "unavailable" in proc.stderr and "mlflow server" in proc.stderr and "kept on disk" in proc.stderr
    assert (repo / "models/moderation/release/manifest.json").exists()
    rows = json.loads(sh(repo, CLI, "status", "--json"))
    assert [r["stage"] for r in rows if not r["up_to_date"]] == ["register", "report"]  # evaluate's work was committed
    out = sh(repo, CLI, "run")  # the store is back: only registration (and its report) is left to do
    assert ran(out) == ["register", "report"]


def test_lineage_import_and_reproducing_a_version(repo):
    latest = registry(repo)["lineage_version"]  # the newest run so far (v17 and on)
    out = sh(repo, CLI, "lineage", "import")
    assert "16 historical runs" in out
    sh(repo, CLI, "lineage", "import")  # idempotent
    c = client(repo)
    exp = c.get_experiment_by_name("content-moderation")
    historical = c.search_runs([exp.experiment_id], "tags.`lineage.historical` = 'true'", max_results=100)
    assert sorted(r.data.tags["lineage.version"] for r in historical) == sorted(f"v{i}" for i in range(1, 17))

    out = sh(repo, CLI, "run", "--experiment", "v10")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["track"]["reproduces"] == "v10" and params["generate"]["overlap"] == {}
    assert "generate-positives" in ran(out)  # v1's overrides (no overlap) change the generated data
    reg = registry(repo)
    assert (reg["lineage_version"], reg["lineage_parent"], reg["reproduces"]) == ("v10", "v9", "v10")
    run = c.get_run(reg["run_id"])
    assert run.data.metrics["reported.categories_passing"] == 17
    assert run.data.metrics["reported.harassment_f1"] == pytest.approx(0.829)
    assert "reproduced.categories_passing" in run.data.metrics and "reproduced.harassment_f1" in run.data.metrics
    v9 = next(r for r in historical if r.data.tags["lineage.version"] == "v9")
    assert run.data.tags["mlflow.parentRunId"] == v9.info.run_id

    set_params(repo, **{"track.reproduces": None})
    sh(repo, CLI, "run")
    following = f"v{int(latest[1:]) + 1}"
    assert (registry(repo)["lineage_version"], registry(repo)["lineage_parent"]) == (following, latest)


def test_promote_and_rollback_from_the_command_line(repo):
    champion = str(client(repo).get_model_version_by_alias("content-moderation", "champion").version)
    target = registry(repo)["version"]
    assert target != champion
    out = sh(repo, CLI, "promote", target, "--why", "reviewed the showcase by hand", "--who", "alice")
    assert f"champion is now version {target}" in out
    mv = client(repo).get_model_version("content-moderation", target)
    assert mv.tags["promoted_by"] == "alice" and mv.tags["promotion"] == "manual"
    out = sh(repo, CLI, "rollback", "--why", "false positives on reviews", "--who", "bob")
    assert f"rolled back to version {champion}" in out
    bad = subprocess.run([CLI, "promote", "999", "--why", "x"], cwd=repo, env=clean_env(repo),
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "no version '999'" in bad.stderr


def test_a_missing_api_key_stops_the_run_at_once_without_retries(repo):
    set_params(repo, **{"generate.backend": "claude"})
    env = clean_env(repo)
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("ANTHROPIC_AUTH_TOKEN", None)
    proc = subprocess.run([CLI, "run"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "ANTHROPIC_API_KEY" in proc.stderr, proc.stderr
    assert "Retrying" not in proc.stdout + proc.stderr  # a wrong setting is not worth three backoffs
    set_params(repo, **{"generate.backend": "offline"})
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status")
