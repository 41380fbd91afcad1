"""The register step on a real SQLite MLflow store: it records the run, registers a version and
applies the verdict recorded in reports/metrics.json as written; when the champion was moved by
hand since evaluation the version stays a candidate and the reason says to rerun evaluate."""

from __future__ import annotations

import json

import mlflow
import pytest

pytest.importorskip("mlflow")

from components import tracking  # noqa: E402
from components.core.contract import write_json  # noqa: E402
from components.core.params import EvaluateParams, Params, TrackParams  # noqa: E402
from components.register import register  # noqa: E402
from tests.components.tracking.support import FAST, MODEL, make_report  # noqa: E402


@pytest.fixture
def project(tmp_path, mlflow_store):
    """A project's reports/ and release folder, as evaluate leaves them, and a fresh store."""
    reports, release = tmp_path / "reports", tmp_path / "release"
    (reports / "plots").mkdir(parents=True)
    release.mkdir()
    write_json(release / "manifest.json", {"served_variant": "int8"})
    write_json(release / "thresholds.json", {})
    write_json(reports / "train.json", {"profile": "cpu", "seconds": 3.0})
    write_json(reports / "benchmark_env.json", {"scores": {"classifier": {"triage": 0.7, "mean": 0.7}}})
    return {"root": tmp_path, "reports": reports, "release": release, "uri": mlflow_store[0],
            "artifacts": mlflow_store[1]}


def _register(project, report: dict, params: Params | None = None) -> dict:
    write_json(project["reports"] / "metrics.json", report)
    params = params or Params(track=TrackParams(model_name=MODEL, experiment="register-test", log_model=False))
    return register(params, params.model_dump(mode="json"), tracking_uri=project["uri"],
                    reports_dir=project["reports"], release_dir=project["release"],
                    dvc_lock=project["root"] / "dvc.lock", code_root=project["root"],
                    artifact_location=project["artifacts"], retry=FAST)


def _judged(uri) -> dict | None:
    c = tracking.champion(uri, MODEL, retry=FAST)
    return None if c is None else {"version": c["version"], "macro_f1": c["macro_f1"]}


def test_a_passed_verdict_without_champion_promotes(project):
    out = _register(project, make_report(macro_f1=0.9, champion=None))
    assert out["promoted"] and out["gate_passed"] and out["version"] == "1"
    assert out["champion"]["version"] == "1" and out["lineage_version"] == "v17"
    assert out["experiment_id"] == mlflow.MlflowClient(project["uri"]).get_experiment_by_name(out["experiment"]).experiment_id
    assert out["reasons"][0] == "gate: all 24 checks passed" and "no_regression: no champion yet" in out["reasons"]


def test_the_recorded_verdict_is_applied_not_judged_again(project):
    _register(project, make_report(macro_f1=0.9))
    worse = make_report(macro_f1=0.85, champion=_judged(project["uri"]))
    assert worse["gate"]["failing"] == ["no_regression"]
    # A tolerance that would let 0.85 through if register judged again: the recorded verdict stands.
    lenient = Params(track=TrackParams(model_name=MODEL, experiment="register-test", log_model=False),
                     evaluate=EvaluateParams(regression_tolerance=1.0))
    out = _register(project, worse, lenient)
    assert not out["promoted"] and out["gate_passed"] is False and out["champion"]["version"] == "1"
    assert "gate failed: no_regression" in out["reasons"]
    assert any(r.startswith("no_regression: macro f1 0.8500 < champion version 1") for r in out["reasons"])


def test_champion_moved_by_hand_since_evaluation_stays_candidate(project):
    uri = project["uri"]
    _register(project, make_report(macro_f1=0.9))  # version 1, champion
    judged_then = _judged(uri)
    _register(project, make_report(macro_f1=0.91, weak="threats", champion=judged_then))  # version 2, refused
    report = make_report(macro_f1=0.95, champion=judged_then)  # evaluate ran while version 1 was champion
    tracking.promote(uri, "2", "alice", "threats floor waived", MODEL, retry=FAST)  # then the champion moved

    out = _register(project, report)
    assert out["gate_passed"] and not out["promoted"] and out["version"] == "3"
    assert out["champion"]["version"] == "2"
    assert "champion is version 2 now" in out["reasons"][-1] and "against version 1" in out["reasons"][-1]
    assert "rerun evaluate: content-moderation run --from evaluate" in out["reasons"][-1]

    # rerun evaluate (judged against the champion as it is now) and register again: applied
    out = _register(project, make_report(macro_f1=0.95, champion=_judged(uri)))
    assert out["promoted"] and out["champion"]["version"] == "4"


def test_register_needs_evaluate_first(project):
    with pytest.raises(FileNotFoundError, match="run the evaluate step first"):
        register(Params(), {}, tracking_uri=project["uri"], reports_dir=project["reports"],
                 release_dir=project["release"], dvc_lock=project["root"] / "dvc.lock", code_root=project["root"])
    assert json.loads((project["release"] / "manifest.json").read_text()) == {"served_variant": "int8"}


# --- an attempt cut short (kill -9, the store lost part way) is not recorded twice ---------------------


def _runs(uri) -> list:
    from mlflow.entities import ViewType

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("register-test")
    return list(client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)) if exp else []


def _versions(uri) -> list[str]:
    return sorted(str(v.version) for v in mlflow.MlflowClient(uri).search_model_versions(f"name = '{MODEL}'"))


def test_an_attempt_cut_short_before_its_version_is_deleted_and_recorded_again(project, monkeypatch):
    import components.tracking.runs as runs

    def lost(*_a, **_k):
        raise tracking.TrackingError("the store went away")

    report = make_report(macro_f1=0.9)
    with monkeypatch.context() as m:  # logging stops half way and the run cannot even be marked FAILED
        m.setattr(runs, "report_metrics", lost)
        m.setattr(mlflow.MlflowClient, "set_terminated", lost)
        with pytest.raises(tracking.TrackingError):
            _register(project, report)
    (left,) = _runs(project["uri"])
    assert left.info.status == "RUNNING" and left.data.tags["lineage.version"] == "v17"

    out = _register(project, report)
    assert out["version"] == "1" and out["promoted"] and out["lineage_version"] == "v17"
    runs_now = {r.info.run_id: r for r in _runs(project["uri"])}
    assert runs_now[left.info.run_id].info.lifecycle_stage == "deleted"  # no lineage version taken, nothing twice
    (active,) = [r for r in runs_now.values() if r.info.lifecycle_stage == "active"]
    assert active.info.run_id == out["run_id"] and active.info.status == "FINISHED"
    assert _versions(project["uri"]) == ["1"]
    assert _register(project, make_report(macro_f1=0.91, champion=_judged(project["uri"])))["lineage_version"] == "v18"


def test_an_attempt_cut_short_after_its_version_resumes_from_it(project, monkeypatch):
    report = make_report(macro_f1=0.9)
    with monkeypatch.context() as m:  # killed between registering the version and applying the verdict
        m.setattr(tracking, "apply_gate", lambda *a, **k: (_ for _ in ()).throw(tracking.TrackingError("killed")))
        with pytest.raises(tracking.TrackingError):
            _register(project, report)
    assert _versions(project["uri"]) == ["1"] and tracking.champion(project["uri"], MODEL, retry=FAST) is None

    out = _register(project, report)
    assert (out["version"], out["promoted"], out["champion"]["version"]) == ("1", True, "1")
    assert _versions(project["uri"]) == ["1"] and len(_runs(project["uri"])) == 1
    assert mlflow.MlflowClient(project["uri"]).get_run(out["run_id"]).data.tags["registry.version"] == "1"


def test_killed_after_champion_moved_the_rerun_reads_the_decision_back(project, monkeypatch):
    import components.tracking.registry as registry

    report = make_report(macro_f1=0.9)
    with monkeypatch.context() as m:  # the alias moved; the run's own tags were never written
        m.setattr(registry, "_set_run_tags", lambda *a, **k: (_ for _ in ()).throw(tracking.TrackingError("killed")))
        with pytest.raises(tracking.TrackingError):
            _register(project, report)
    assert tracking.champion(project["uri"], MODEL, retry=FAST)["version"] == "1"

    out = _register(project, report)
    assert (out["version"], out["promoted"]) == ("1", True)  # not "stays candidate, rerun evaluate" for a version 2
    assert out["reasons"][0] == "gate: all 24 checks passed"
    assert _versions(project["uri"]) == ["1"] and len(_runs(project["uri"])) == 1


def test_registering_unchanged_outputs_again_records_nothing_new(project):
    report = make_report(macro_f1=0.9)
    first = _register(project, report)
    again = _register(project, report)  # `run --from register` with nothing changed
    assert {k: again[k] for k in ("run_id", "version", "lineage_version", "promoted", "reasons")} == {
        k: first[k] for k in ("run_id", "version", "lineage_version", "promoted", "reasons")}
    assert _versions(project["uri"]) == ["1"] and len(_runs(project["uri"])) == 1
    # a new evaluation is a new registration
    assert _register(project, make_report(macro_f1=0.91, champion=_judged(project["uri"])))["version"] == "2"
