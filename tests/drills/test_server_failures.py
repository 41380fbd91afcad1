"""The server-failure drill (tests/drills/servers.py). Light form in `make test` (about a minute): a real
`mlflow server` (SQLite backend) down before register and stopped during it, the checkout's SQLite store
locked before and during register. The full form (the servers of deploy/local.py, the tiny pipeline through
the CLI, the S3 server down, the Prefect server restarted under a deployment run) is marked `servers`
and runs from benchmarks/reliability.py or `pytest -m servers tests/drills`."""

from __future__ import annotations

import pytest

from tests.drills import servers

pytestmark = pytest.mark.slow


def _once(facts: dict, registrations: int) -> None:
    assert facts["once"], facts
    assert facts["versions"] == facts["finished_runs"] == facts["active_runs"] == registrations, facts
    assert facts["runs_left_unfinished"] == [], facts
    assert facts["lineage"] == [f"v{17 + i}" for i in range(registrations)], facts


@pytest.mark.timeout(600)
def test_light_a_tracking_server_down_fails_clearly_and_a_locked_store_is_waited_out(tmp_path):
    result = servers.run(tmp_path, light=True)
    a = result["cases"]["tracking_server_down"]
    before, during = a["down_before_register"], a["stopped_during_register"]
    for case in (before, during):
        # a clear error naming the server, how to start one, and that the outputs are kept
        assert case["clear"] and case["outputs_kept"], case
        assert case["rerun_error"] is None, case
    assert before["failed_after_s"] < 30 and during["stopped_after_run_existed_s"] is not None
    assert during["left_by_the_failure"]["statuses"].count("RUNNING") == 1  # the attempt cut short ...
    _once(before, 1)
    _once(during, 2)  # ... is not recorded twice: one run and one version each, lineage v17, v18
    assert during["deleted_runs"] == 1

    b = result["cases"]["sqlite_locked"]
    short, mid = b["locked_before_register_5s"], b["locked_during_register_25s"]
    assert short["error"] is None and short["held_s"] >= 4.5 and short["took_s"] >= 4.5  # it waited the lock out
    assert mid["error"] is None and mid["locked_after_run_existed_s"] is not None and mid["held_s"] >= 24.5
    assert mid["took_s"] >= 24.5  # one store call outlasted its 20 s busy timeout and was retried
    _once(short, 1)
    _once(mid, 2)
    assert result["passed"] and result["lost"] == "nothing", result
    assert result["seconds"] < 180


@pytest.mark.servers
@pytest.mark.timeout(3600)
def test_full_the_team_servers_fail_under_the_pipeline_and_nothing_is_recorded_twice(tmp_path):
    result = servers.run(tmp_path, light=False)
    cases = result["cases"]
    a = cases["tracking_server_down"]
    assert a["stopped_before_register"]["clear"] and a["stopped_before_register"]["outputs_kept"], a
    assert a["stopped_before_register"]["stale_after"] == ["register", "report"], a
    assert a["stopped_before_register"]["rerun_ran"] == ["register", "report"], a
    _once(a["stopped_before_register"], 1)
    assert a["stopped_during_register"]["stopped_after_run_existed_s"] is not None, a
    assert a["stopped_during_register"]["clear"] and a["stopped_during_register"]["outputs_kept"], a
    _once(a["stopped_during_register"], 2)

    b = cases["sqlite_locked"]
    gave_up = b["locked_during_register_until_it_gives_up"]
    assert gave_up["clear"] and gave_up["outputs_kept"] and gave_up["rerun_error"] is None, gave_up
    _once(gave_up, 3)

    c = cases["object_store_down"]
    assert c["rc"] == 1 and c["clear"] and c["outputs_kept"], c
    assert c["left_by_the_failure"]["versions"] == 2, c  # no half-registered version
    assert c["rerun_rc"] == 0, c
    _once(c, 3)

    d = cases["prefect_restarted"]
    assert d["first_run"]["state"] in ("Completed", "Crashed", "Failed"), d
    assert d["rerun"]["state"] == "Completed" and d["new_versions"] == 1, d
    assert d["after_rerun"]["stale"] == [], d
    _once(d["after_rerun"], 4)
    assert result["passed"], result["lost"]
