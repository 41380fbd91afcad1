"""Process-wide settings the project sets for itself, so nothing depends on a hand-set shell.

Offline switches (never reach for the Hugging Face Hub when weights are local), analytics off,
and the local stores under the project root. A value already in the environment wins, so a
deployment can point at a remote tracking server or a Prefect API by setting it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from components.core.project import ProjectNotFoundError, find_root  # noqa: F401  (re-exported for the CLI)


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
