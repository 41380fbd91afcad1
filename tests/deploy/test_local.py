"""deploy/local.py's plumbing on its own: missing binaries, servers that exit or never answer, clean stops."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from deploy import local
from deploy.local import ServerError, launch


def test_a_missing_postgres_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(local, "_PG_DIRS", [str(tmp_path)])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerError, match=r"initdb not found .*apt-get install postgresql-15.*PG_BIN"):
        local.start_postgres(tmp_path)


def test_a_missing_s3_server_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(local, "BIN", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerError, match=r"moto_server not found .*moto\[server\]"):
        local.start_s3(tmp_path)


def test_a_server_that_exits_is_reported_with_its_log(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('port 5432 is taken'); sys.exit(3)"]
    with pytest.raises(ServerError, match=r"(?s)demo exited with code 3 before it answered.*port 5432 is taken"):
        launch("demo", cmd, "http://127.0.0.1:1", tmp_path, local.base_env(), lambda: False, timeout=30)


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path):
    cmd = [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(600)"]

    def never():
        raise ConnectionRefusedError("connection refused")

    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"(?s)demo did not answer at http://127.0.0.1:1 within 2 s "
                                          r"\(last error: connection refused\).*starting") as info:
        launch("demo", cmd, "http://127.0.0.1:1", tmp_path, local.base_env(), never, timeout=2)
    assert time.monotonic() - t0 < 30
    assert "demo.log" in str(info.value)


def test_stop_ends_the_whole_process_group(tmp_path):
    # a leader that starts a child: stopping the server ends both
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
            "print('up', flush=True); time.sleep(600)")
    server = launch("demo", [sys.executable, "-c", code], "-", tmp_path, local.base_env(),
                    lambda: "up" in (tmp_path / "demo.log").read_text(), timeout=30)
    pgid = server.proc.pid
    assert len(live_members(pgid)) == 2
    server.stop(timeout=10)
    assert server.proc.poll() is not None
    deadline = time.monotonic() + 10
    while live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_members(pgid) == []


def live_members(pgid: int) -> list[int]:
    """Processes of the group that are still running (zombies waiting to be reaped do not count)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def test_the_checkout_settings_do_not_leak_into_servers(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///somewhere.db")
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere/api")
    env = local.base_env(EXTRA="1")
    assert "MLFLOW_TRACKING_URI" not in env and "PREFECT_API_URL" not in env and env["EXTRA"] == "1"
    assert env["PATH"].split(":")[0] == str(local.BIN)
