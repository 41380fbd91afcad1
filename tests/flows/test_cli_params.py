"""A broken params.yaml stops every command that reads it with its message (file, line or key, and the
fix), never a traceback: `stage`, `status`, `run` and `review`, run as a user runs them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.project import BIN, clean_env

BASE = (ROOT / "params.yaml").read_text("utf-8")
BROKEN = {
    "duplicate key": (BASE.replace("  test_fraction: 0.15", "  test_fraction: 0.15\n  test_fraction: 0.2"),
                      "merge.test_fraction is written twice"),
    "not utf-8": (BASE.replace("experiment: content-moderation", "experiment: caf\udce9")
                  .encode("utf-8", "surrogateescape"), "byte 0xe9 is not UTF-8; re-save the file as UTF-8"),
    "malformed yaml": (BASE.replace("  opset: 17", "  opset: [17"), "not valid YAML"),
    "wrong type": (BASE.replace("  opset: 17", "  opset: seventeen"), "export.opset (line"),
}
COMMANDS = [["stage", "merge"], ["status"]]
MORE_COMMANDS = [["run", "--to", "merge"], ["review", "threats", "positives"]]  # the same check; tried on one case


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder the CLI takes for a project: dvc.yaml, DVC's config, a git repo; params.yaml per case."""
    root = tmp_path_factory.mktemp("broken-params")
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


@pytest.mark.parametrize("case", list(BROKEN))
def test_every_command_names_the_problem_in_params_yaml(project, case):
    content, expected = BROKEN[case]
    path = project / "params.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    for command in COMMANDS + (MORE_COMMANDS if case == "duplicate key" else []):
        proc = subprocess.run([str(BIN / "content-moderation"), *command], cwd=project, env=clean_env(project),
                              capture_output=True, timeout=300)
        out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        assert proc.returncode == 1, (command, out)
        assert "Traceback" not in out and expected in out and str(path) in out, (command, out)
