"""Process-wide settings the project sets for itself, so nothing depends on a hand-set shell.

Offline switches (never reach for the Hugging Face Hub when weights are local), analytics off,
and the local stores under the project root. A value already in the environment wins, so a
deployment can point at a remote tracking server or a Prefect API by setting it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from components.core.project import ProjectNotFoundError, find_root  # noqa: F401  (re-exported for the CLI)


@dataclass(frozen=True)
class ServerSetting:
    """One environment variable that moves a checkout from its embedded stores to the team's servers.

    ``embedded``: what a checkout uses while it is unset; ``example``: its value in deploy/docker-compose.yml
    (service names as hosts); ``reads``: who reads it.
    """

    name: str
    embedded: str
    example: str
    reads: str


# The one place these are named: README ("Settings: from a checkout to the servers") shows this table,
# deploy/docker-compose.yml and deploy/local.py set exactly these, and a test keeps the three in step.
SERVER_SETTINGS: tuple[ServerSetting, ...] = (
    ServerSetting("MLFLOW_TRACKING_URI", "sqlite:///<checkout>/mlflow.db, artifacts in <checkout>/mlruns",
                  "http://mlflow:5000",
                  "every command, train-flow's register step, the service: runs, registry and aliases; artifacts go "
                  "through the tracking server's proxy"),
    ServerSetting("PREFECT_API_URL", "unset: an ephemeral Prefect API inside each `content-moderation run`",
                  "http://prefect-server:4200/api",
                  "`content-moderation deploy`, `prefect deploy`, the worker and the flow runs it starts"),
    ServerSetting("MLFLOW_S3_ENDPOINT_URL", "unset (AWS S3 itself)", "http://minio:9000",
                  "the MLflow server's artifact store (`--artifacts-destination s3://…`); clients only when they "
                  "write to S3 directly"),
    ServerSetting("AWS_ENDPOINT_URL_S3", "unset (AWS S3 itself)", "http://minio:9000",
                  "DVC's S3 remote and any other boto3 client (botocore reads it; a remote's `endpointurl` wins)"),
    ServerSetting("AWS_ACCESS_KEY_ID", "unset", "minio user (deploy/.env)",
                  "the MLflow server and DVC: the object store's credentials"),
    ServerSetting("AWS_SECRET_ACCESS_KEY", "unset", "minio password (deploy/.env)", "as AWS_ACCESS_KEY_ID"),
    ServerSetting("AWS_DEFAULT_REGION", "unset", "us-east-1", "as AWS_ACCESS_KEY_ID (MinIO accepts any)"),
    ServerSetting("DVC_REMOTE_URL", "unset: the `local` remote, ../.dvc-storage",
                  "s3://content-moderation/dvc",
                  "deploy/entrypoint.sh: makes it the default DVC remote (`dvc remote add --local -d shared …`)"),
)


def apply_defaults(root: Path) -> None:
    defaults = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DVC_NO_ANALYTICS": "1",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "TOKENIZERS_PARALLELISM": "false",
        # The ./mlruns file store is refused by MLflow 3.17; the SQLite store needs no server.
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    # Stage commands in dvc.yaml call `content-moderation`: make sure this environment's
    # scripts come first on PATH even when the virtual environment is not activated.
    bindir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def tracking_uri() -> str:
    """The MLflow store every command uses: MLFLOW_TRACKING_URI (``apply_defaults`` sets the default)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RuntimeError("MLFLOW_TRACKING_URI is not set; run through `content-moderation`, which sets it")
    return uri


def artifact_location(root: Path, uri: str) -> str | None:
    """Artifacts of a local store go under <project>/mlruns; a tracking server decides its own."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return (root / "mlruns").as_uri()
