"""The light form of the kill -9 drill (tests/drills/kill9.py): three SIGKILLs at seeded random moments in one
pipeline's worth of work on the tiny copy (a data step, a model step, register), floors at zero so the gate passes.
The full form (20 kills over 4 episodes) runs from benchmarks/reliability.py."""

from __future__ import annotations

import pytest

from tests.drills import kill9

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_three_kills_every_rerun_resumes_nothing_is_left_and_champion_moves_once(tmp_path):
    result = kill9.run(tmp_path, light=True)
    kills = result["kills"]
    assert len(kills) == 3, result["happened"]
    assert kills[0]["target"] in kill9.DATA_STEPS and kills[1]["target"] in kill9.MODEL_STEPS
    assert kills[2]["target"] == "register"
    for kill in kills:
        # the rerun redid what was not finished and nothing that was
        assert kill["rerun"] is not None and kill["rerun"]["resumed"], kill
        # nothing partial under an output's name; what the kill left was removed by the reruns
        assert kill["stray_files"] == [] and kill["unreadable"] == [] and kill["leftovers"] == [], kill
        assert kill["stale_but_reported_finished"] == [], kill
        assert kill["registry_problems"] == [], kill
    (episode,) = result["episodes"]
    assert episode["checks"] == {name: True for name in episode["checks"]}, episode
    assert episode["runs_to_finish"] == 4
    # one registration recorded once, and the gate moved champion to it, once
    assert episode["new_versions"] == ["1"] and episode["lineage_version"] == "v17"
    assert [r["status"] for r in episode["new_runs"]] == ["FINISHED"]
    assert episode["gate_passed"] and episode["champion"] == "1"
    assert episode["champion_moves"] == result["champion_moves"] == 1
    assert result["passed"] and result["lost"] == "nothing", result["lost"]
