"""A real `dvc repro` of the whole DAG in a temporary copy of the repository, on small volumes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.contract import read_records
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def set_params(repo: Path, **changes) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split(".", 1)
        params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("project")
    for f in project_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    sh(dst, "git", "init", "-q")
    set_params(dst, **{
        "generate.positives_per_category": 30, "generate.hard_negatives_default": 10, "generate.hard_negatives": {},
        "generate.innocuous": 80, "ingest.caps": {k: 40 for k in
                                                  ("davidson", "hatexplain", "tweeteval_hate", "tweeteval_offensive",
                                                   "sms_spam", "cyberbullying", "sdcnl")},
        "ingest.roots": ["data/external/raw"], "merge.val_fraction": 0.15, "merge.test_fraction": 0.2,
    })
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["train"]["profiles"]["cpu"].update({"head_epochs": 20, "max_length": 64})
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dst


ALL_STAGES = ["generate-positives", "generate-negatives", "generate-perturbations", "ingest-external", "merge",
              "train", "export", "evaluate"]
MODEL_STAGES = ["train", "export", "evaluate"]


def test_repro_builds_everything_then_finds_nothing_to_do(repo):
    first = sh(repo, "dvc", "repro")
    assert sorted(ran(first)) == sorted(ALL_STAGES)
    assert (repo / "models/moderation/release/manifest.json").exists()
    metrics = __import__("json").loads((repo / "reports/metrics.json").read_text())
    assert set(metrics["gate"]) >= {"passed", "checks", "failing"}
    splits = {s: read_records(repo / f"data/splits/{s}.jsonl").records for s in ("train", "val", "test")}
    assert all(splits.values())
    assert any(r.source.startswith("external:") for r in splits["train"])
    assert all(r.text.startswith("[") for rs in splits.values() for r in rs)
    second = sh(repo, "dvc", "repro")
    assert ran(second) == [] and "up to date" in second
    assert "up to date" in sh(repo, "dvc", "status")


def test_changing_one_param_reruns_only_what_is_downstream(repo):
    set_params(repo, **{"evaluate.f1_floor": 0.5})
    assert ran(sh(repo, "dvc", "repro")) == ["evaluate"]
    set_params(repo, **{"perturb.rate": 0.5})
    assert ran(sh(repo, "dvc", "repro")) == ["generate-perturbations", "merge", *MODEL_STAGES]


def test_cli_status_reports_steps_and_counts(repo):
    out = sh(repo, str(BIN / "content-moderation"), "status", "--json")
    import json

    rows = {r["stage"]: r for r in json.loads(out)}
    assert all(r["up_to_date"] for r in rows.values())
    merge_outs = {o["path"]: o["records"] for o in rows["merge"]["outs"]}
    assert merge_outs["data/splits"] > 0


def test_cli_run_from_and_to(repo):
    cli = str(BIN / "content-moderation")
    # --from forces that step; its output is byte-identical, so nothing downstream is stale.
    assert ran(sh(repo, cli, "run", "--from", "generate-perturbations")) == ["generate-perturbations"]
    set_params(repo, **{"ingest.seed": 5})
    assert ran(sh(repo, cli, "run", "--to", "ingest-external")) == ["ingest-external"]
    assert "merge" in sh(repo, "dvc", "status")
    out = sh(repo, cli, "run")
    assert ran(out) == ["merge", *MODEL_STAGES]
    assert "quality gate" in out and "release folder models/moderation/release" in out


def test_dvc_push_to_the_default_local_remote(repo):
    out = sh(repo, "dvc", "push")
    assert "pushed" in out
    assert any((repo / ".dvc-storage").rglob("*"))
