"""`content-moderation status` while a `dvc repro` holds DVC's lock says in one line that the pipeline
is busy (it printed a 73-line traceback), and works again once the lock is released."""

from __future__ import annotations

import json
import subprocess

from dvc.repo import Repo

from tests.project import BIN, clean_env, make_project


def _status(repo, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "content-moderation"), "status", *args], cwd=repo, env=clean_env(repo),
                          capture_output=True, text=True, timeout=300)


def test_status_during_a_repro_says_the_pipeline_is_busy(tmp_path):
    repo = make_project(tmp_path)
    dvc = Repo(str(repo))
    try:
        with dvc.lock:  # what `dvc repro` holds for its whole run
            for args in ((), ("--json",)):
                proc = _status(repo, *args)
                out = (proc.stdout + proc.stderr).strip()
                assert proc.returncode == 1, out
                assert "Traceback" not in out and len(out.splitlines()) == 1, out
                assert "pipeline is busy" in out and "dvc repro" in out
    finally:
        dvc.close()
    proc = _status(repo, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and not any(r["up_to_date"] for r in rows)  # nothing built yet in the copy
