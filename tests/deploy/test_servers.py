"""The light form of the server drills, run by `make test`: the real servers of deploy/local.py, each used once.

- every server answers, and how long each took to start is printed;
- a run logged through the MLflow server lands in PostgreSQL with its artifact in the S3 bucket, and the
  project's registry code (register a version, apply a passing gate verdict) moves `champion` there;
- a DVC S3 remote on the S3 server: push, a fresh clone pulls the same bytes;
- the nightly deployment of prefect.yaml, registered to the process pool, triggered once with
  ``to_step=generate-positives``: the worker runs it in the checkout it was deployed from.

The full drill (a whole pipeline fired by its cron, the service, a release through DVC) is
tests/deploy/test_team_scale.py, behind the `servers` marker (`make drills`).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from deploy.local import POOL, base_env, s3_client
from tests.project import BIN, make_project, sh

GIT_ID = {"GIT_AUTHOR_NAME": "drill", "GIT_AUTHOR_EMAIL": "drill@example.invalid",
          "GIT_COMMITTER_NAME": "drill", "GIT_COMMITTER_EMAIL": "drill@example.invalid"}


def keys(servers, prefix: str) -> list[str]:
    listing = s3_client(servers.servers["s3"].url).list_objects_v2(Bucket=servers.bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_every_server_answers(servers):
    settings = servers.settings()
    assert httpx.get(f"{settings['MLFLOW_TRACKING_URI']}/health", timeout=5).status_code == 200
    assert httpx.get(f"{settings['PREFECT_API_URL']}/health", timeout=5).status_code == 200
    assert servers.bucket in [b["Name"] for b in s3_client(settings["AWS_ENDPOINT_URL_S3"]).list_buckets()["Buckets"]]
    workers = httpx.post(f"{settings['PREFECT_API_URL']}/work_pools/{POOL}/workers/filter", json={}, timeout=5).json()
    assert [w["status"] for w in workers] == ["ONLINE"]
    print(f"\nserver start-up seconds: {json.dumps(servers.startup_seconds())}")


def test_the_gate_moves_champion_on_the_tracking_server_with_artifacts_in_s3(servers, tmp_path):
    import mlflow
    import psycopg

    from components import tracking

    uri = servers.settings()["MLFLOW_TRACKING_URI"]
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"macro_f1": 0.91}}))
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("light-drill")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "test_macro_f1", 0.91)
    client.log_artifact(run.info.run_id, str(tmp_path / "metrics.json"))
    client.set_terminated(run.info.run_id)

    version = tracking.register_version(uri, run.info.run_id, "light-drill")
    decision = tracking.apply_gate(uri, version, {"gate": {"passed": True, "checks": [], "champion": None}, "test": {"macro_f1": 0.91}},
                                   "light-drill")
    assert decision.promote and tracking.champion(uri, "light-drill")["version"] == version == "1"
    with psycopg.connect(f"{servers.servers['postgres'].url}/mlflow") as db:
        assert db.execute("SELECT version FROM registered_model_aliases WHERE name = 'light-drill' AND "
                          "alias = 'champion'").fetchone() == (1,)
    assert f"mlflow/{exp}/{run.info.run_id}/artifacts/metrics.json" in keys(servers, f"mlflow/{exp}/")


def test_a_dvc_remote_on_the_s3_server_takes_a_push_and_a_clone_pulls_it(servers, tmp_path):
    env = base_env(**servers.settings(), **GIT_ID)
    repo, clone = tmp_path / "repo", tmp_path / "clone"
    repo.mkdir()
    sh(repo, "git", "init", "-q", env=env)
    sh(repo, "dvc", "init", "-q", env=env)
    (repo / "data").mkdir()
    (repo / "data" / "splits.jsonl").write_bytes(b'{"id": "1", "text": "hello"}\n' * 1000)
    sh(repo, "dvc", "add", "data", env=env)
    remote = f"s3://{servers.bucket}/light-dvc"  # the endpoint comes from AWS_ENDPOINT_URL_S3 alone
    sh(repo, "dvc", "remote", "add", "-d", "shared", remote, env=env)
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-qm", "data", env=env)
    sh(repo, "dvc", "push", env=env)
    assert keys(servers, "light-dvc/files/md5/")
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone), env=env)
    sh(clone, "dvc", "pull", env=env)
    assert (clone / "data" / "splits.jsonl").read_bytes() == (repo / "data" / "splits.jsonl").read_bytes()


@pytest.mark.slow
def test_the_nightly_deployment_runs_through_the_process_pool(servers, tmp_path):
    repo = make_project(tmp_path / "project")
    env = base_env(**servers.settings(), **GIT_ID)
    api = servers.settings()["PREFECT_API_URL"]
    sh(repo, str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "nightly", env=env)
    t0 = time.monotonic()
    out = sh(repo, str(BIN / "prefect"), "deployment", "run", "train-flow/nightly", "--param",
             "to_step=generate-positives", "--watch", "--watch-timeout", "300", env=env)
    assert "Completed" in out, out
    print(f"\na deployment run of one step through the pool: {time.monotonic() - t0:.1f} s")
    (run,) = httpx.post(f"{api}/flow_runs/filter", timeout=10,
                        json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}).json()
    assert run["work_pool_name"] == POOL and not run["auto_scheduled"]
    assert run["parameters"] == {"to_step": "generate-positives"}
    assert (repo / "data/generated/positives/threats.jsonl").is_file()  # written in the deployed checkout
