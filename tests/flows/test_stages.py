"""The layout shows the architecture: dvc.yaml's stages, flows/stages.py and components/ name the same steps."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.dvc_state import stage_names
from flows.stages import STAGES
from tests.conftest import ROOT

MAX_LINES = 400  # a module longer than this is split by concern (data tables excepted)


def test_every_dvc_stage_has_a_step_function_and_no_other():
    assert set(STAGES) == set(stage_names(ROOT))


@pytest.mark.parametrize("stage", stage_names(ROOT))
def test_every_stage_has_a_component_module_under_its_own_name(stage):
    module = stage.replace("-", "_")
    assert (ROOT / "components" / f"{module}.py").is_file() or (ROOT / "components" / module).is_dir()
    # ...and its step function calls into that module
    source = (ROOT / "flows" / "stages.py").read_text("utf-8")
    assert f"from components.{module} import" in source


def test_components_top_level_holds_only_stages_and_helper_packages():
    stages = {s.replace("-", "_") for s in stage_names(ROOT)}
    modules = {p.stem for p in (ROOT / "components").glob("*.py") if p.name != "__init__.py"}
    assert modules <= stages, f"modules at components/ that are not a stage: {sorted(modules - stages)}"


def test_no_code_module_is_over_the_size_limit():
    files = [p for top in ("components", "flows", "moderation_env", "deploy") for p in (ROOT / top).rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text("utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by concern: {long}"


def test_python_m_flows_cli_runs_every_command_help():
    """`python -m flows.cli <command> --help` works for every command and sub-command."""
    from typer.main import get_command

    from flows.cli import app

    def walk(cmd, path=()):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, (*path, name))

    paths = [p for p in walk(get_command(app)) if p]
    assert {"stage", "status", "run", "predict", "deploy", "promote", "env", "lineage"} <= {p[0] for p in paths}
    for path in paths:
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *path, "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{' '.join(path)} --help failed:\n{proc.stderr}"
        assert "Usage:" in proc.stdout


@pytest.mark.parametrize("module", sorted(p.stem for p in (ROOT / "flows" / "cli").glob("*.py")
                                          if p.stem not in ("__init__", "__main__")))
def test_each_cli_module_imports_on_its_own(module):
    """No import cycle: every command module can be the first one imported."""
    proc = subprocess.run([sys.executable, "-c", f"import flows.cli.{module}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
