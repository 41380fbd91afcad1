"""The nightly deployment, served by `content-moderation deploy` against a real local Prefect server.

The test starts `prefect server start` on 127.0.0.1, serves train-flow/nightly from a tiny copy of
the repository, triggers it with `prefect deployment run 'train-flow/nightly' --watch`, and checks
that the run built and registered a model; a second trigger with nothing new finishes from cache
and records nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from flows.dvc_state import stage_names
from tests.conftest import ROOT

STAGES = stage_names(ROOT)
from tests.project import BIN, clean_env, make_project, sh
from deploy.local import free_port

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended early:\n{log.read_text()[-8000:] if log else ''}")
        try:
            value = predicate()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**clean_env(home), "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false"}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 120, "the Prefect server")
        yield api
    finally:
        _stop(proc)
        log.close()


def test_nightly_deployment_runs_on_a_local_server(server, tmp_path):
    repo = make_project(tmp_path / "project")
    env = {**clean_env(repo), "PREFECT_API_URL": server}
    # The served flow's own log (a failing task's traceback) goes to a file: a pipe nobody reads would fill
    # and stall the run, and the file is what a failure message quotes.
    log_path = tmp_path / "deploy.log"
    log = open(log_path, "w")
    deploy = subprocess.Popen([str(BIN / "content-moderation"), "deploy"], cwd=repo, env=env,
                              stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def trigger_run() -> str:
        proc = subprocess.run(trigger, cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0 and "Completed" in proc.stdout, (
            f"{' '.join(trigger)} failed:\n{proc.stdout}\n{proc.stderr}\n"
            f"the served flow's log (last 8,000 characters):\n{log_path.read_text()[-8000:]}")
        return proc.stdout

    trigger = [str(BIN / "prefect"), "deployment", "run", "train-flow/nightly", "--watch", "--watch-timeout", "900"]
    try:
        dep = _wait(lambda: (r := httpx.get(f"{server}/deployments/name/train-flow/nightly", timeout=5)).status_code
                    == 200 and r.json(), 120, "the nightly deployment to register", deploy, log_path)
        (schedule,) = dep["schedules"]
        assert schedule["schedule"]["cron"] == "0 3 * * *" and schedule["schedule"]["timezone"] == "UTC"
        assert dep["concurrency_limit"] == 1 or (dep.get("global_concurrency_limit") or {}).get("limit") == 1

        trigger_run()
        registry = json.loads((repo / "reports/registry.json").read_text())
        assert registry["version"] == "1" and registry["lineage_version"] == "v17"
        assert "Data and pipelines are up to date" in sh(repo, "dvc", "status")

        # Nothing new: the run finishes from cache and registers nothing.
        before = (repo / "reports/registry.json").stat().st_mtime
        trigger_run()
        assert (repo / "reports/registry.json").stat().st_mtime == before
        runs = httpx.post(f"{server}/task_runs/filter",
                          json={"sort": "EXPECTED_START_TIME_DESC", "limit": len(STAGES)}, timeout=10).json()
        assert [r["state"]["name"] for r in runs] == ["Cached"] * len(STAGES)
    finally:
        _stop(deploy)
        log.close()


def test_deploy_without_a_server_says_how_to_start_one(tmp_path):
    repo = make_project(tmp_path / "project")
    env = {**clean_env(repo), "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    proc = subprocess.run([str(BIN / "content-moderation"), "deploy"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "prefect server start" in proc.stderr


def test_prefect_yaml_defines_the_nightly_deployment():
    import yaml

    from tests.conftest import ROOT

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (nightly,) = [d for d in spec["deployments"] if d["name"] == "nightly"]
    module, func = nightly["entrypoint"].split(":")
    assert (ROOT / module).exists() and func == "train_flow"
    assert nightly["schedules"][0] == {"cron": "0 3 * * *", "timezone": "UTC"}
    assert Path(ROOT / module).read_text().count('@flow(name="train-flow"') == 1
