"""deploy/docker-compose.yml, linted without docker: the services, their ports and the settings they pass
agree with each other, with the project's settings (flows/settings.py SERVER_SETTINGS), prefect.yaml,
pyproject.toml, deploy/.env.example and the README's settings table."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from flows.settings import SERVER_SETTINGS
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
NAMES = [s.name for s in SERVER_SETTINGS]
# Settings of the servers themselves (not of a checkout): allowed in the project image's services.
SERVER_OWN = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "MLFLOW_DISABLE_TELEMETRY", "PREFECT_API_DATABASE_CONNECTION_URL",
              "PREFECT_UI_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "WORK_POOL"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())  # merge keys (<<) resolved by PyYAML


def command(service: dict) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else cmd


def test_the_topology_has_every_server_of_the_design(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "minio", "buckets", "mlflow", "prefect-server", "worker", "serve"}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["minio"]["image"].startswith("minio/minio")
    for name in ("mlflow", "prefect-server", "worker", "serve"):  # the project's image, built from this checkout
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert "mlflow server" in command(services["mlflow"])
    assert "prefect server start" in command(services["prefect-server"])
    assert command(services["worker"]) == "worker"  # deploy/entrypoint.sh: deploy nightly, then `prefect worker start`
    assert command(services["serve"]).startswith("content-moderation serve")


def test_ports_and_addresses_agree(compose):
    services = compose["services"]
    listens = {"mlflow": 5000, "prefect-server": 4200, "serve": 8000, "minio": 9000}
    for name, port in listens.items():
        assert f"{port}:{port}" in services[name]["ports"]
    assert "--port=5000" in command(services["mlflow"]) and "--port 4200" in command(services["prefect-server"])
    assert "--port 8000" in command(services["serve"])
    # every http://host:port a service is given names a service of the file on the port it listens on
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            for host, port in re.findall(r"https?://([a-z0-9-]+):(\d+)", str(value)):
                if host in ("localhost", "127.0.0.1"):
                    continue
                assert host in services and listens.get(host) == int(port), f"{name}.{key} = {value}"
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services and condition["condition"].startswith("service_")


def test_the_stores_agree_database_bucket_and_pool(compose):
    services = compose["services"]
    init = (DEPLOY / "postgres-init.sql").read_text()
    assert "CREATE DATABASE mlflow" in init and "CREATE DATABASE prefect" in init
    assert "postgresql+psycopg://" in command(services["mlflow"]) and command(services["mlflow"]).count("@postgres:5432/mlflow")
    assert services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://") and "@postgres:5432/prefect" in services["prefect-server"]["environment"][
        "PREFECT_API_DATABASE_CONNECTION_URL"]
    env_example = dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text().splitlines()
                       if line and not line.startswith("#"))
    bucket = env_example["S3_BUCKET"]
    assert f"--artifacts-destination=s3://${{S3_BUCKET:-{bucket}}}/mlflow" in command(services["mlflow"])
    assert env_example["DVC_REMOTE_URL"].startswith(f"s3://{bucket}/")
    pool = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"][0]["work_pool"]["name"]
    assert env_example["WORK_POOL"] == pool and services["worker"]["environment"]["WORK_POOL"] == f"${{WORK_POOL:-{pool}}}"


def test_every_variable_the_file_uses_is_in_the_env_example():
    text = (DEPLOY / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = {line.split("=", 1)[0] for line in (DEPLOY / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= example, f"not in deploy/.env.example: {sorted(used - example)}"


def test_services_pass_the_projects_setting_names_and_no_others(compose):
    services = compose["services"]
    for name in ("mlflow", "prefect-server", "worker", "serve"):
        unknown = set(services[name].get("environment") or {}) - set(NAMES) - SERVER_OWN
        assert not unknown, f"{name} sets {sorted(unknown)}: add them to SERVER_SETTINGS or drop them"
    assert set(services["worker"]["environment"]) >= set(NAMES)  # the worker is a whole checkout on the servers
    assert services["serve"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_the_readme_table_lists_exactly_the_settings():
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("### Settings: from a checkout to the servers", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \|", section, flags=re.M)
    assert rows == NAMES


def test_the_image_installs_the_pinned_stack_and_its_entrypoint_is_valid_shell():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch_pin = re.search(r'"(torch==[^"]+)"', pyproject).group(1)
    assert f"TORCH_SPEC={torch_pin}" in dockerfile and "FROM python:3.11" in dockerfile
    assert '".[servers]"' in dockerfile and "\nservers = [" in pyproject
    assert 'ENTRYPOINT ["/opt/content-moderation/deploy/entrypoint.sh"]' in dockerfile
    entry = DEPLOY / "entrypoint.sh"
    assert entry.stat().st_mode & 0o111
    if shutil.which("sh"):
        subprocess.run(["sh", "-n", str(entry)], check=True)
    assert "--name nightly" in entry.read_text() and "prefect worker start" in entry.read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv/", "deploy/.env", ".dvc/cache/"} <= set(ignored)
