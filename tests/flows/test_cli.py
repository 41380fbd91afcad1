import json

import pytest
from typer.testing import CliRunner

from components.core.contract import make_labels
from flows.cli import app

runner = CliRunner()
COMMANDS = ["stage", "status", "run", "review", "validate", "evaluate", "predict", "showcase", "generate", "deploy",
            "promote", "rollback", "lineage"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"] if command else ["--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    if command is None:
        assert all(c in result.output for c in COMMANDS)


def test_validate_reports_each_bad_line_and_exits_1(tmp_path):
    good = {"id": "a", "text": "hi there", "labels": make_labels(), "metadata": {"source": "offline"}}
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "labels": {"violence": 1}}) + "\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "1 valid, 1 invalid of 2 lines" in result.output
    assert "line 2: unknown label(s) ['violence']" in result.output
    path.write_text(json.dumps(good) + "\n")
    assert runner.invoke(app, ["validate", str(path)]).exit_code == 0


def test_review_names_the_valid_choices():
    result = runner.invoke(app, ["review", "violence", "positives"])
    assert result.exit_code == 1 and "valid categories: threats, hate_speech" in result.output
    result = runner.invoke(app, ["review", "threats", "examples"])
    assert result.exit_code == 1 and "valid kinds: positives, negatives, perturbations" in result.output


def test_unknown_stage_lists_the_stages():
    result = runner.invoke(app, ["stage", "train-everything"])
    assert result.exit_code == 1 and "stages: generate-positives" in result.output


def test_a_step_that_cannot_write_its_output_is_one_clear_line(tmp_path):
    """An OSError of a step (a full disk, a path that is a file) ends the command with its message, no traceback."""
    import subprocess

    from tests.project import BIN, clean_env, make_project

    repo = make_project(tmp_path / "p")
    (repo / "data/generated").mkdir(parents=True, exist_ok=True)
    (repo / "data/generated/positives").write_text("a file where the step writes a folder\n")
    for cmd in (["stage", "generate-positives"], ["run", "--to", "generate-positives"]):
        proc = subprocess.run([str(BIN / "content-moderation"), *cmd], cwd=repo, env=clean_env(repo),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr
        assert "error:" in proc.stderr and "File exists" in proc.stderr and "data/generated/positives" in proc.stderr
        assert "Traceback" not in proc.stderr.split("error:")[-1]
