"""A temporary copy of the repository with tiny volumes, for tests that run the real pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
TINY = {
    "generate.positives_per_category": 30, "generate.hard_negatives_default": 10, "generate.hard_negatives": {},
    "generate.innocuous": 80,
    "ingest.caps": {k: 40 for k in ("davidson", "hatexplain", "tweeteval_hate", "tweeteval_offensive",
                                    "sms_spam", "cyberbullying", "sdcnl")},
    "ingest.roots": ["data/external/raw"], "merge.val_fraction": 0.15, "merge.test_fraction": 0.2,
    # the frozen-encoder head trains in seconds: the flow tests judge the orchestration, not the recipe
    "train.profiles.cpu.mode": "head", "train.profiles.cpu.head_hidden": 512,
    "train.profiles.cpu.head_epochs": 20, "train.profiles.cpu.max_length": 64,
}


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def clean_env(dst: Path) -> dict[str, str]:
    """The environment a command in the copy runs with: its own stores, never the checkout's."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(key, None)
    return env


def sh(cwd: Path, *cmd: str, env: dict | None = None, check: bool = True) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env or clean_env(cwd), capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def set_params(repo: Path, **changes) -> None:
    """Dotted keys, any depth: ``set_params(repo, **{"train.profiles.cpu.head_epochs": 5})``."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in changes.items():
        node = params
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(dst: Path, **overrides) -> Path:
    """Copy the checkout's files (not its outputs) to ``dst``, as a git repo, with tiny volumes."""
    for f in project_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    sh(dst, "git", "init", "-q")
    set_params(dst, **{**TINY, **overrides})
    return dst
