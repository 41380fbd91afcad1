"""dvc.lock survives a run killed while DVC writes it: the flow records each stage with DVC's writes
made atomic (flows.dvc_state.atomic_dvc_writes), so the file holds the old lock or the new one."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from dvc.utils.serialize import _common, modify_yaml

from flows.dvc_state import atomic_dvc_writes, record
from tests.project import BIN


class Killed(BaseException):
    """Stands for SIGKILL arriving mid-write: nothing after it runs."""


def _dump_half_then_die(data, stream):
    stream.write("schema: '2.0'\nstages:\n  train:\n    cmd: cont")
    stream.flush()
    raise Killed


def test_a_write_cut_short_leaves_the_old_lock_whole(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  merge:\n    cmd: content-moderation stage merge\n")
    before = lock.read_text()
    with atomic_dvc_writes(), pytest.raises(Killed):
        with _common._modify_data(lock, lambda text, path: yaml.safe_load(text), _dump_half_then_die):
            pass
    assert lock.read_text() == before and not list(tmp_path.glob(".dvc.lock.*"))
    # without the guard DVC's own write truncates the file in place: what the guard prevents
    with pytest.raises(Killed):
        with _common._modify_data(lock, lambda text, path: yaml.safe_load(text), _dump_half_then_die):
            pass
    assert lock.read_text() != before
    assert _common._dump_data.__module__ == "dvc.utils.serialize._common"  # the guard put DVC's writer back


def test_record_writes_a_valid_lock_through_the_guard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # DVC resolves a stage name against the working directory, as the flow runs it
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text("stages:\n  copy:\n    cmd: cp a.txt b.txt\n    deps: [a.txt]\n"
                                       "    outs: [b.txt]\n")
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "b.txt").write_text("a\n")
    record(tmp_path, "copy")
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert lock["stages"]["copy"]["outs"][0]["path"] == "b.txt"
    with modify_yaml(tmp_path / "dvc.lock") as data:  # DVC's own reader/writer still accepts it
        assert "copy" in data["stages"]
