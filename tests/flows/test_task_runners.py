"""train-flow with its generation steps fanned out on a Dask task runner (a real LocalCluster of two
worker processes, through prefect-dask) writes the same bytes as with the default runner, and
records one Prefect task run per category; a wrong runner setting is refused before any work."""

from __future__ import annotations

import subprocess

import pytest

from flows.task_runners import FanOut
from tests.project import BIN, clean_env, make_project

pytestmark = pytest.mark.slow

GENERATED = ("data/generated", "data/splits")


def run(repo, *args):
    return subprocess.run([str(BIN / "content-moderation"), "run", "--to", "merge", *args], cwd=repo,
                          env=clean_env(repo), capture_output=True, text=True, timeout=900)


def tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for d in GENERATED for p in sorted((root / d).rglob("*"))
            if p.is_file()}


def lock_outs(repo, stage: str) -> list[dict]:
    """The step's data outputs as dvc.lock records them (its statistics file holds its time, so it differs)."""
    import yaml

    outs = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]["outs"]
    return [o for o in outs if not o["path"].startswith("reports/")]


def test_dask_fan_out_writes_the_same_bytes_as_the_default_runner(tmp_path):
    default, dask = make_project(tmp_path / "default"), make_project(tmp_path / "dask")
    a = run(default)
    assert a.returncode == 0, a.stdout + a.stderr
    b = run(dask, "--task-runner", "dask", "--dask-workers", "2")
    assert b.returncode == 0, b.stdout + b.stderr
    out = b.stdout + b.stderr
    for stage in ("generate-positives", "generate-negatives"):
        for part in ("threats", "csam", "spam"):
            assert f"Task run '{stage}[{part}]' - Finished in state Completed()" in out
        assert lock_outs(default, stage) == lock_outs(dask, stage) != []
    assert "Task run 'generate-negatives[innocuous]' - Finished in state Completed()" in out
    assert "generate-perturbations[" not in out  # only the generation steps fan out
    assert out.count("Creating a new Dask cluster") == 1  # one local cluster for both steps
    files = tree(default)
    assert len(files) > 40 and files == tree(dask)
    for proc in (a, b):  # both built their data: neither was served from a cache
        assert "generate-positives: Completed" in proc.stdout and "generate-negatives: Completed" in proc.stdout


def test_a_wrong_task_runner_setting_is_refused_before_any_work(tmp_path):
    repo = make_project(tmp_path / "p")
    proc = run(repo, "--task-runner", "ray")
    assert proc.returncode == 1 and "task_runner='ray': use one of default, dask" in proc.stderr
    proc = run(repo, "--task-runner", "dask", "--dask-workers", "0")
    assert proc.returncode == 1 and "at least 1 worker" in proc.stderr
    assert not (repo / "data/generated/positives").exists()


def test_fan_out_settings():
    assert FanOut().map_fn("generate-positives") is None
    assert FanOut("dask", 3).map_fn("generate-positives") is not None
    with pytest.raises(ValueError, match="use one of default, dask"):
        FanOut("threads")
