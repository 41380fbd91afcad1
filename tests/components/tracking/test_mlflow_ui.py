"""The MLflow UI (3.17, a real `mlflow server` over a SQLite store, rendered in headless Debian
chromium) opens the project's experiment on its training runs at the address the project gives."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from components.tracking.runs import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, _experiment_id, experiment_ui_path
from components.tracking.store import Store
from tests.components.test_report import browser  # noqa: F401  (the fixture)
from deploy.local import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """(base URL, experiment id) of a UI over a store holding the experiment and one run."""
    root = tmp_path_factory.mktemp("mlflow-ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    store = Store(uri)
    exp_id = _experiment_id(store, "content-moderation", artifact_location=str(root / "artifacts"))
    store.create_run(exp_id, run_name="v17", tags={})
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow server did not start")
                time.sleep(1)
        yield base, exp_id, store
    finally:
        server.terminate()
        server.wait(30)


def test_the_experiment_is_a_model_training_one(ui):
    _, exp_id, store = ui
    assert store.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_the_project_s_address_opens_the_training_runs(ui, browser):  # noqa: F811
    base, exp_id, _ = ui
    page = browser.new_page()
    try:
        page.goto(base + experiment_ui_path(exp_id), wait_until="load")
        page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
        page.get_by_text("v17", exact=True).first.wait_for(timeout=60_000)
        assert not page.get_by_role("heading", name="Overview").count()
    finally:
        page.close()
