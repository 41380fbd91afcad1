"""The registry on a real SQLite MLflow store: versions, the recorded gate verdict applied as
written (never judged again), a champion moved since evaluation, and people's promote/rollback."""

from __future__ import annotations

import pytest

mlflow = pytest.importorskip("mlflow")

from components.tracking import (  # noqa: E402
    RERUN_EVALUATE,
    RegistryError,
    apply_gate,
    champion,
    log_pipeline_run,
    promote,
    register_version,
    rollback,
)
from tests.components.tracking.support import EXP, FAST, MODEL, make_report  # noqa: E402


@pytest.fixture
def store(mlflow_store):
    return mlflow_store


def _version_with(store, report) -> str:
    uri, artifacts = store
    run_id = log_pipeline_run(uri, EXP, params={"train": {"profile": "cpu"}}, report=report,
                              tags={"lineage.version": "v17", "lineage.parent": "v16"},
                              artifact_location=artifacts, retry=FAST)
    return register_version(uri, run_id, MODEL, retry=FAST)


def _client(uri):
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _as_judged(uri) -> dict | None:
    """The champion as the evaluate step passes it to the gate."""
    c = champion(uri, MODEL, retry=FAST)
    return None if c is None else {k: c[k] for k in ("version", "macro_f1", "real_pr_auc", "behaviour_pass_rate")}


def test_passing_candidate_becomes_champion(store):
    uri = store[0]
    report = make_report(champion=None)
    version = _version_with(store, report)
    client = _client(uri)
    mv = client.get_model_version_by_alias(MODEL, "candidate")
    assert str(mv.version) == version and mv.source.endswith("/model")
    assert champion(uri, MODEL, retry=FAST) is None

    decision = apply_gate(uri, version, report, MODEL, retry=FAST)
    assert decision.promote
    champ = champion(uri, MODEL, retry=FAST)
    assert champ["version"] == version and champ["macro_f1"] == pytest.approx(0.9) and champ["promoted_at"]
    # the per-subject figures the next evaluation's regression checks compare with, read back from the run
    assert champ["real_pr_auc"] == {"threatgram": {"threats": pytest.approx(0.72)}}
    assert champ["behaviour_pass_rate"] == {"threat_negation": pytest.approx(0.95)}
    tags = client.get_model_version(MODEL, version).tags
    assert tags["gate.decision"] == "promoted" and "no_regression: no champion yet" in tags["gate.reasons"]
    assert tags["gate.judged_against"] == "none" and tags["gate.tolerance"] == "0.01"
    assert tags["previous_champion"] == "none" and tags["promoted_by"] == "quality-gate"
    assert client.get_run(mv.run_id).data.tags["gate.decision"] == "promoted"
    again = apply_gate(uri, version, report, MODEL, retry=FAST)  # applying again is a no-op
    assert not again.promote and "already champion" in again.reasons[0]
    assert client.get_model_version(MODEL, version).tags["gate.decision"] == "promoted"


def test_failing_verdict_stays_candidate_and_champion_is_untouched(store):
    uri = store[0]
    first = _version_with(store, make_report())
    apply_gate(uri, first, make_report(), MODEL, retry=FAST)
    failing = make_report(macro_f1=0.95, weak="harassment", champion=_as_judged(uri))  # better macro F1, a failed check
    second = _version_with(store, failing)

    decision = apply_gate(uri, second, failing, MODEL, retry=FAST)
    assert not decision.promote
    assert champion(uri, MODEL, retry=FAST)["version"] == first
    assert str(_client(uri).get_model_version_by_alias(MODEL, "candidate").version) == second
    tags = _client(uri).get_model_version(MODEL, second).tags
    assert tags["gate.decision"] == "refused" and "generated:f1_floor:harassment" in tags["gate.reasons"]
    assert tags["gate.judged_against"] == first
    assert "previous_champion" not in tags and "promoted_at" not in tags


def test_the_recorded_no_regression_verdict_is_applied_as_written(store):
    uri = store[0]
    first = _version_with(store, make_report(macro_f1=0.90))
    assert apply_gate(uri, first, make_report(macro_f1=0.90), MODEL, retry=FAST).promote

    worse = make_report(macro_f1=0.88, champion=_as_judged(uri))
    assert worse["gate"]["failing"] == ["no_regression"]
    second = _version_with(store, worse)
    decision = apply_gate(uri, second, worse, MODEL, retry=FAST)
    assert not decision.promote
    assert f"no_regression: macro f1 0.8800 < champion version {first} 0.9000 - 0.0100" in decision.reasons
    assert champion(uri, MODEL, retry=FAST)["version"] == first

    close = make_report(macro_f1=0.895, champion=_as_judged(uri))
    third = _version_with(store, close)
    assert apply_gate(uri, third, close, MODEL, retry=FAST).promote
    assert champion(uri, MODEL, retry=FAST)["version"] == third
    assert _client(uri).get_model_version(MODEL, third).tags["previous_champion"] == first

    # the registry never re-judges: a verdict that says passed is applied even at a lower macro F1
    lower = make_report(macro_f1=0.5)
    lower["gate"] = make_report(champion=_as_judged(uri))["gate"]
    fourth = _version_with(store, lower)
    assert apply_gate(uri, fourth, lower, MODEL, retry=FAST).promote


def test_champion_moved_since_evaluation_leaves_a_candidate_and_says_rerun_evaluate(store):
    uri = store[0]
    first = _version_with(store, make_report())
    apply_gate(uri, first, make_report(), MODEL, retry=FAST)
    judged_then = _as_judged(uri)
    second = _version_with(store, make_report(weak="threats", champion=judged_then))
    promote(uri, second, "alice", "hotfix", MODEL, retry=FAST)  # moved by hand after the evaluation below

    report = make_report(macro_f1=0.93, champion=judged_then)  # passed, but against the old champion
    third = _version_with(store, report)
    decision = apply_gate(uri, third, report, MODEL, retry=FAST)
    assert not decision.promote
    why = decision.reasons[-1]
    assert f"champion is version {second} now" in why and f"against version {first}" in why
    assert RERUN_EVALUATE in why and RERUN_EVALUATE == "content-moderation run --from evaluate"
    assert champion(uri, MODEL, retry=FAST)["version"] == second
    tags = _client(uri).get_model_version(MODEL, third).tags
    assert tags["gate.decision"] == "refused" and RERUN_EVALUATE in tags["gate.reasons"]
    assert tags["gate.champion_before"] == second and tags["gate.judged_against"] == first


def test_a_champion_appearing_since_evaluation_also_counts_as_moved(store):
    uri = store[0]
    unjudged = make_report(champion=None)
    first = _version_with(store, make_report())
    promote(uri, first, "alice", "seeded by hand", MODEL, retry=FAST)
    second = _version_with(store, unjudged)
    decision = apply_gate(uri, second, unjudged, MODEL, retry=FAST)
    assert not decision.promote and "against no champion" in decision.reasons[-1]

    old = make_report()
    del old["gate"]["champion"]  # a metrics.json from before the verdict named its champion
    third = _version_with(store, old)
    decision = apply_gate(uri, third, old, MODEL, retry=FAST)
    assert not decision.promote and "does not record which champion" in decision.reasons[-1]
    assert champion(uri, MODEL, retry=FAST)["version"] == first


def test_promote_and_rollback_record_who_and_why(store):
    uri = store[0]
    first = _version_with(store, make_report())
    apply_gate(uri, first, make_report(), MODEL, retry=FAST)
    refused_report = make_report(weak="threats", champion=_as_judged(uri))
    second = _version_with(store, refused_report)
    apply_gate(uri, second, refused_report, MODEL, retry=FAST)

    with pytest.raises(RegistryError, match="no version '99'"):
        promote(uri, 99, "alice", "hotfix", MODEL, retry=FAST)
    with pytest.raises(RegistryError, match="who and why"):
        promote(uri, second, "", "", MODEL, retry=FAST)

    champ = promote(uri, second, "alice", "threats floor waived for the hotfix", MODEL, retry=FAST)
    assert champ["version"] == second
    client = _client(uri)
    tags = client.get_model_version(MODEL, second).tags
    assert tags["promoted_by"] == "alice" and tags["promoted_why"].startswith("threats floor")
    assert tags["previous_champion"] == first and tags["promotion.gate_override"] == "true"

    champ = rollback(uri, "bob", "hotfix broke harassment", MODEL, retry=FAST)
    assert champ["version"] == first
    assert client.get_model_version(MODEL, second).tags["rolled_back_by"] == "bob"
    restored = client.get_model_version(MODEL, first).tags
    assert restored["promoted_by"] == "bob" and restored["promotion"] == "rollback"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(uri, "bob", "again", MODEL, retry=FAST)


def test_rollback_without_champion_is_a_clear_error(store):
    with pytest.raises(RegistryError, match="no champion"):
        rollback(store[0], "bob", "why not", "never-registered", retry=FAST)
