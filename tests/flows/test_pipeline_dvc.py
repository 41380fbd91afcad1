"""A real `dvc repro` of the whole DAG in a temporary copy of the repository, on small volumes."""

from pathlib import Path

import pytest

from components.core.contract import read_records
from flows.dvc_state import stage_names
from tests.conftest import ROOT
from tests.project import BIN, make_project, set_params, sh

pytestmark = pytest.mark.slow


def ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


ALL_STAGES = stage_names(ROOT)
MODEL_STAGES = ALL_STAGES[ALL_STAGES.index("train"):]


def test_repro_builds_everything_then_finds_nothing_to_do(repo):
    first = sh(repo, "dvc", "repro")
    assert sorted(ran(first)) == sorted(ALL_STAGES)
    assert (repo / "models/moderation/release/manifest.json").exists()
    metrics = __import__("json").loads((repo / "reports/metrics.json").read_text())
    assert set(metrics["gate"]) >= {"passed", "checks", "failing"}
    registry = __import__("json").loads((repo / "reports/registry.json").read_text())
    assert registry["version"] == "1" and registry["lineage_version"] == "v17" and registry["lineage_parent"] == "v16"
    assert (repo / "mlflow.db").exists()
    splits = {s: read_records(repo / f"data/splits/{s}.jsonl").records for s in ("train", "val", "test")}
    assert all(splits.values())
    assert any(r.source.startswith("external:") for r in splits["train"])
    assert all(r.text.startswith("[") for rs in splits.values() for r in rs)
    second = sh(repo, "dvc", "repro")
    assert ran(second) == [] and "up to date" in second
    assert "up to date" in sh(repo, "dvc", "status")


def test_changing_one_param_reruns_only_what_is_downstream(repo):
    set_params(repo, **{"evaluate.f1_floor": 0.5})
    # The gate's floor is in the release manifest: the environment benchmark of the release reruns too.
    assert ran(sh(repo, "dvc", "repro")) == ["evaluate", "benchmark-env", "register", "report"]
    set_params(repo, **{"perturb.rate": 0.5})
    assert ran(sh(repo, "dvc", "repro")) == ["generate-perturbations", "merge", *MODEL_STAGES]


def test_cli_status_reports_steps_and_counts(repo):
    out = sh(repo, str(BIN / "content-moderation"), "status", "--json")
    import json

    rows = {r["stage"]: r for r in json.loads(out)}
    assert all(r["up_to_date"] for r in rows.values())
    merge_outs = {o["path"]: o["records"] for o in rows["merge"]["outs"]}
    assert merge_outs["data/splits"] > 0


def test_dvc_push_to_the_default_local_remote(repo):
    out = sh(repo, "dvc", "push")
    assert "pushed" in out
    assert any((repo / ".dvc-storage").rglob("*"))
