"""The same flows on real servers: the nightly deployment fired by its cron through the work pool, the run
recorded in an MLflow tracking server on PostgreSQL with artifacts in S3, the service loading the champion
from it, and the release moving through a DVC remote on the S3 server to a second clone.

The tests share one tiny copy of the repository (tests/project.py) and run in order. The copy's
prefect.yaml schedules `train-flow/nightly` for the next whole minute; nothing triggers it by hand.
The gate's floors are set to zero so the tiny model passes and `champion` moves.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from deploy.local import POOL, base_env, free_port, s3_client
from tests.project import BIN, make_project, set_params, sh

pytestmark = [pytest.mark.servers, pytest.mark.timeout(1800)]
MODEL = "content-moderation"
GIT_ID = {"GIT_AUTHOR_NAME": "drill", "GIT_AUTHOR_EMAIL": "drill@example.invalid",
          "GIT_COMMITTER_NAME": "drill", "GIT_COMMITTER_EMAIL": "drill@example.invalid"}
PASS_EVERYTHING = {"evaluate.f1_floor": 0.0, "evaluate.real_roc_auc_floor": 0.0, "evaluate.behaviour_floor": 0.0,
                   "evaluate.real_min_support": 2}
TIMINGS: dict[str, float] = {}


def env_for(servers) -> dict[str, str]:
    return base_env(**servers.settings(), **GIT_ID)


def bucket_keys(servers, prefix: str) -> list[str]:
    pages = s3_client(servers.servers["s3"].url).get_paginator("list_objects_v2")
    return [o["Key"] for page in pages.paginate(Bucket=servers.bucket, Prefix=prefix) for o in page.get("Contents", [])]


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def next_minute(lead_s: float) -> dt.datetime:
    """The first whole UTC minute at least ``lead_s`` seconds from now."""
    now = dt.datetime.now(dt.timezone.utc)
    start = (now + dt.timedelta(seconds=lead_s)).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return start


@pytest.fixture(scope="module")
def project(servers, tmp_path_factory) -> Path:
    """The copy, committed, with the shared DVC remote on the S3 server and tonight's run a minute ahead."""
    repo = make_project(tmp_path_factory.mktemp("team") / "project", **PASS_EVERYTHING)
    env = env_for(servers)
    sh(repo, "dvc", "remote", "add", "-d", "-f", "shared", servers.dvc_remote, env=env)
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-qm", "tiny copy", env=env)
    return repo


@pytest.fixture(scope="module")
def nightly_run(servers, project) -> dict:
    """Register train-flow/nightly to the process pool with its cron a minute ahead; wait for the scheduler's run."""
    env = env_for(servers)
    api = servers.servers["prefect"].url
    at = next_minute(lead_s=25)
    spec = yaml.safe_load((project / "prefect.yaml").read_text())
    (nightly,) = [d for d in spec["deployments"] if d["name"] == "nightly"]
    nightly["schedules"] = [{"cron": f"{at.minute} {at.hour} * * *", "timezone": "UTC"}]
    (project / "prefect.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    t0 = time.monotonic()
    sh(project, str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "nightly", env=env)
    TIMINGS["deploy_s"] = round(time.monotonic() - t0, 1)
    dep = httpx.get(f"{api}/deployments/name/train-flow/nightly", timeout=10).json()
    assert dep["work_pool_name"] == POOL and dep["schedules"][0]["schedule"]["cron"] == f"{at.minute} {at.hour} * * *"

    def runs() -> list[dict]:
        return httpx.post(f"{api}/flow_runs/filter", timeout=10,
                          json={"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}}).json()

    # The scheduler puts the run on the calendar within seconds (its recent-deployments loop runs every 5 s);
    # a minute that passed before it looked would never be scheduled: say so now rather than wait.
    t0 = time.monotonic()
    while not any(r["auto_scheduled"] and dt.datetime.fromisoformat(r["expected_start_time"]) == at for r in runs()):
        assert time.monotonic() - t0 < 30 and dt.datetime.now(dt.timezone.utc) < at, (
            f"the scheduler put no run of train-flow/nightly at {at.isoformat()} on the calendar")
        time.sleep(1)
    TIMINGS["scheduled_after_s"] = round(time.monotonic() - t0, 1)
    deadline = time.monotonic() + 900 + max(0.0, (at - dt.datetime.now(dt.timezone.utc)).total_seconds())
    run = None
    while time.monotonic() < deadline:
        started = [r for r in runs() if r["auto_scheduled"] and r["state_type"] != "SCHEDULED"]
        if started and started[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            run = started[0]
            break
        time.sleep(3)
    assert run is not None, f"no scheduled run of train-flow/nightly finished by {at.isoformat()} + 15 min"
    TIMINGS["run_s"] = round(run["total_run_time"], 1)
    TIMINGS["start_delay_s"] = round((dt.datetime.fromisoformat(run["start_time"]) - at).total_seconds(), 1)
    return {"run": run, "at": at, "deployment": dep}


def test_the_nightly_deployment_fires_from_its_cron_through_the_work_pool(nightly_run, servers):
    run, at = nightly_run["run"], nightly_run["at"]
    logs = httpx.post(f"{servers.servers['prefect'].url}/logs/filter", timeout=10,
                      json={"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200}).json()
    assert run["state_type"] == "COMPLETED", "\n".join(entry["message"] for entry in logs)[-4000:]
    # the scheduler made it (not a trigger), for the cron's minute, and the pool's process worker ran it
    assert run["auto_scheduled"] is True and run["work_pool_name"] == POOL
    assert dt.datetime.fromisoformat(run["expected_start_time"]) == at
    # it starts at that minute: the worker takes a run up to its prefetch (5 s) early, and polls every 2 s
    assert -6 <= TIMINGS["start_delay_s"] < 30
    print(f"\ndrill timings: {json.dumps(TIMINGS)}")


def test_the_run_is_recorded_on_the_tracking_server_in_postgres_with_artifacts_in_s3(nightly_run, servers, project):
    import psycopg
    from mlflow import MlflowClient

    uri = servers.settings()["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(MODEL)
    (run,) = client.search_runs([exp.experiment_id], "tags.`lineage.historical` = 'false'")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied by the server
    assert run.data.tags["gate.verdict"] == "passed"
    with psycopg.connect(f"{servers.servers['postgres'].url}/mlflow") as db:
        assert db.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,)).fetchone() == ("FINISHED",)
        assert db.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias",
                          (MODEL,)).fetchall() == [("candidate", 1), ("champion", 1)]

    keys = bucket_keys(servers, "mlflow/")
    run_files = {k.split("/artifacts/", 1)[1] for k in keys if f"/{run.info.run_id}/artifacts/" in k}
    assert {"metrics.json", "thresholds.json"} <= run_files, sorted(run_files)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    model_id = champion.source.removeprefix("models:/")
    model_files = {k.split(f"/{model_id}/artifacts/", 1)[1] for k in keys if f"/{model_id}/artifacts/" in k}
    assert "MLmodel" in model_files and any(f.startswith("artifacts/release/") for f in model_files), sorted(model_files)
    registry = json.loads((project / "reports/registry.json").read_text())
    assert registry["promoted"] is True and registry["version"] == "1" and registry["champion"]["version"] == "1"


def test_the_service_loads_the_champion_from_the_tracking_server(nightly_run, servers, project):
    port = free_port()
    proc = subprocess.Popen([str(BIN / "content-moderation"), "serve", "--port", str(port), "--threads", "1"],
                            cwd=project, env=env_for(servers), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        t0, ready = time.monotonic(), None
        while time.monotonic() - t0 < 180 and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, proc.stdout.read() if proc.poll() is not None else ready
        TIMINGS["service_ready_s"] = round(time.monotonic() - t0, 1)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/moderate", timeout=30,
                            json={"items": ["I know where you live and I will hurt you"]}).json()
        assert answer["model"]["name"] == MODEL and answer["model"]["alias"] == "champion"
        assert answer["model"]["version"] == "1" and len(answer["results"][0]["scores"]) == 18
        assert (project / "models/.serving-cache" / MODEL / "1").is_dir()  # downloaded through the server from S3
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def test_dvc_push_and_a_second_clone_pulls_the_same_release_from_the_s3_remote(nightly_run, servers, project,
                                                                              tmp_path):
    env = env_for(servers)
    t0 = time.monotonic()
    sh(project, "dvc", "push", env=env)
    TIMINGS["dvc_push_s"] = round(time.monotonic() - t0, 1)
    assert len(bucket_keys(servers, "dvc/files/md5/")) > 10
    sh(project, "git", "add", "-A", env=env)
    sh(project, "git", "commit", "-qm", "nightly release", env=env)

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone), env=env)
    assert not (clone / "models/moderation/release").exists()
    t0 = time.monotonic()
    sh(clone, "dvc", "pull", env=env)
    TIMINGS["dvc_pull_s"] = round(time.monotonic() - t0, 1)
    # Every stage is current from the remote alone. The one output missing is the report page, which by
    # design is in neither git nor the DVC cache (`cache: false`, gitignored; it is kept with the MLflow run).
    stale = json.loads(sh(clone, "dvc", "status", "--json", env=env))
    assert stale == {"report": [{"changed outs": {"reports/report.html": "deleted"}}]}, stale
    release = "models/moderation/release"
    assert tree_digest(clone / release) == tree_digest(project / release)
    assert tree_digest(clone / "data/splits") == tree_digest(project / "data/splits")
    print(f"\ndrill timings: {json.dumps(TIMINGS)}")
