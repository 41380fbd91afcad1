"""The evaluate step on the tiny real MiniLM export: thresholds, the gate's verdict (with the
champion it was judged against), the release folder that loads alone, and clear errors."""

import json
import shutil

import numpy as np
import pytest

from components.core.contract import ContractError, read_records, write_records
from components.core.params import EvaluateParams
from components.core.taxonomy import LABELS, ContextPrefix
from components.evaluate import evaluate
from components.model.onnx_runtime import OnnxClassifier

pytestmark = pytest.mark.slow

# Every floor at zero: these tests are about the step's mechanics, not the tiny model's quality.
LENIENT = EvaluateParams(f1_floor=0.0, variant_tolerance=1.0, parity_tolerance=1.0, real_min_support=5,
                         real_roc_auc_floor=0.0, behaviour_floor=0.0)


def _evaluate(tiny_exported, tiny_splits, tmp_path, params=LENIENT, **kw) -> dict:
    out, _ = tiny_exported
    kw.setdefault("real_test_path", tiny_splits / "real_test.jsonl")
    return evaluate(out / "onnx", tiny_splits / "val.jsonl", tiny_splits / "test.jsonl", params,
                    tmp_path / "release", tmp_path / "plots", **kw)


def test_evaluate_release_folder_loads_and_predicts_alone(tiny_exported, tiny_splits, tmp_path):
    report = _evaluate(tiny_exported, tiny_splits, tmp_path)
    assert report["gate"]["passed"] and report["served_variant"] == "int8"  # smallest within tolerance
    assert set(report["thresholds"]) == set(LABELS)
    assert (tmp_path / "plots/per_category_f1.png").exists()
    for variant in report["variants"].values():
        assert variant["parity"]["at"] == "tuned thresholds" and variant["parity"]["samples"] > 0
    # copy the release folder anywhere: it loads with nothing else and reproduces evaluation's decisions
    alone = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "release", alone)
    model = OnnxClassifier(alone, verify=True)
    assert model.variant == "int8" and model.tuned
    assert model.thresholds.tolist() == pytest.approx([report["thresholds"][c] for c in LABELS])
    texts = [r.text for r in read_records(tiny_splits / "test.jsonl").records]
    probs = model.predict_proba(texts)
    assert probs.shape == (len(texts), len(LABELS)) and np.all((probs >= 0) & (probs <= 1))
    text = model.with_context("i will find you and hurt you", ContextPrefix("GENERAL", "MESSAGE"))
    assert text.startswith("[GENERAL][MESSAGE] ")
    flags = model.flags(model.predict_proba([text]))[0]
    assert all(f.score >= f.threshold for f in flags)


def test_without_champion_the_report_says_so(tiny_exported, tiny_splits, tmp_path):
    report = _evaluate(tiny_exported, tiny_splits, tmp_path)
    check = next(c for c in report["gate"]["checks"] if c["name"] == "no_regression")
    assert check == {"name": "no_regression", "passed": True, "detail": "no champion yet", "tier": "release"}
    assert report["gate"]["champion"] is None and report["champion_macro_f1"] is None


def test_no_regression_is_judged_against_the_champion_given(tiny_exported, tiny_splits, tmp_path):
    better = _evaluate(tiny_exported, tiny_splits, tmp_path / "a", champion={"version": "3", "macro_f1": 0.0})
    assert better["gate"]["passed"] and better["gate"]["champion"] == {"version": "3", "macro_f1": 0.0}
    assert better["gate"]["tiers"]["real"]["passed"] and better["gate"]["tiers"]["behaviour"]["passed"]
    assert better["champion_macro_f1"] == 0.0
    check = next(c for c in better["gate"]["checks"] if c["name"] == "no_regression")
    assert check["passed"] and "champion version 3" in check["detail"]

    best = max(v["macro_f1"] for v in better["variants"].values())
    worse = _evaluate(tiny_exported, tiny_splits, tmp_path / "b",
                      champion={"version": "4", "macro_f1": best + 0.05})
    assert worse["gate"]["passed"] is False and worse["gate"]["failing"] == ["no_regression"]
    assert worse["served_variant"] == "fp32"  # nothing passed: fp32 is released as a candidate
    manifest = json.loads((tmp_path / "b/release/manifest.json").read_text())
    assert manifest["gate"]["champion"]["version"] == "4" and manifest["gate"]["passed"] is False


def test_gate_failure_is_recorded_not_raised(tiny_exported, tiny_splits, tmp_path):
    report = _evaluate(tiny_exported, tiny_splits, tmp_path, EvaluateParams(f1_floor=1.0))
    assert report["gate"]["passed"] is False and report["served_variant"] == "fp32"
    assert any(name.startswith("generated:f1_floor:") for name in report["gate"]["failing"])
    assert json.loads((tmp_path / "release/manifest.json").read_text())["gate"]["passed"] is False


def test_unknown_labels_and_empty_splits_name_the_file(tiny_exported, tiny_splits, tmp_path):
    out, _ = tiny_exported
    bad = tmp_path / "test.jsonl"
    rows = [json.loads(line) for line in (tiny_splits / "test.jsonl").read_text().splitlines()]
    rows[0]["labels"]["violence"] = 1
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ContractError, match=r"test.jsonl: 1 of \d+ lines .*unknown label\(s\) \['violence'\]"):
        evaluate(out / "onnx", tiny_splits / "val.jsonl", bad, EvaluateParams(), tmp_path / "r", tmp_path / "p")
    empty = tmp_path / "empty.jsonl"
    write_records(empty, [])
    with pytest.raises(ContractError, match="empty.jsonl: the validation split is empty"):
        evaluate(out / "onnx", empty, tiny_splits / "test.jsonl", EvaluateParams(), tmp_path / "r", tmp_path / "p")
    assert not (tmp_path / "r").exists()


def test_the_evaluate_stage_judges_against_the_registry_champion(tiny_exported, tiny_splits, tmp_path, monkeypatch,
                                                                  mlflow_store):
    import socket

    from components import tracking
    from components.core.params import Params, TrackParams
    from flows.stages import evaluate as evaluate_stage
    from tests.components.tracking.support import EXP, FAST, MODEL, make_report

    out, _ = tiny_exported
    params = Params(evaluate=LENIENT, track=TrackParams(model_name=MODEL))
    shutil.copytree(out / "onnx", tmp_path / params.paths.model / "onnx")
    shutil.copytree(tiny_splits, tmp_path / params.paths.splits)
    uri, artifacts = mlflow_store
    weak_champion = make_report()  # a passed verdict, recorded with a macro F1 any model beats
    weak_champion["test"]["macro_f1"] = 0.0
    weak_champion["real"]["groups"]["threatgram"]["per_category"]["threats"]["pr_auc"] = 0.0
    weak_champion["behaviour"]["functionalities"]["threat_negation"]["pass_rate"] = 0.0
    run_id = tracking.log_pipeline_run(uri, EXP, params={}, report=weak_champion, artifact_location=artifacts, retry=FAST)
    version = tracking.register_version(uri, run_id, MODEL, retry=FAST)
    assert tracking.apply_gate(uri, version, weak_champion, MODEL, retry=FAST).promote
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    evaluate_stage(tmp_path, params)
    report = json.loads((tmp_path / params.paths.reports / "metrics.json").read_text())
    assert report["gate"]["champion"] == {"version": version, "macro_f1": 0.0, "real_pr_auc": {"threatgram": {
        "threats": 0.0}}, "behaviour_pass_rate": {"threat_negation": 0.0}} and report["gate"]["passed"]
    check = next(c for c in report["gate"]["checks"] if c["name"] == "no_regression")
    assert check["passed"] and f"champion version {version} 0.0000" in check["detail"]

    with socket.socket() as s:  # a store that does not answer: evaluation completes, the gate cannot pass
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    monkeypatch.setattr(tracking, "DEFAULT_RETRY", FAST)
    evaluate_stage(tmp_path, params)
    report = json.loads((tmp_path / params.paths.reports / "metrics.json").read_text())
    # every check that compares with the champion fails (an unknown champion is not "no champion"), nothing else
    failing = report["gate"]["failing"]
    assert report["gate"]["passed"] is False and failing[-1] == "no_regression"
    assert all(":pr_auc_regression:" in n or n.startswith("behaviour:regression:") for n in failing[:-1])
    assert "champion unknown" in report["gate"]["checks"][-1]["detail"] and dead in report["gate"]["checks"][-1]["detail"]


def test_real_text_and_behaviour_are_judged_on_the_served_variant_only(tiny_exported, tiny_splits, tmp_path):
    report = _evaluate(tiny_exported, tiny_splits, tmp_path)
    real = report["real"]
    assert list(real["groups"]) == ["sms_spam"] and real["groups"]["sms_spam"]["n"] > 0
    spam = real["groups"]["sms_spam"]["per_category"]["spam"]
    assert spam["gated"] and 0 <= spam["roc_auc"] <= 1 and spam["threshold"] == report["thresholds"]["spam"]
    assert "real:roc_auc:sms_spam:spam" in [c["name"] for c in report["gate"]["checks"]]
    behaviour = report["behaviour"]
    assert behaviour["n_cases"] >= 400 and behaviour["floor"] == 0.0
    assert all(f"behaviour:pass_rate:{name}" in [c["name"] for c in report["gate"]["checks"]]
               for name, f in behaviour["functionalities"].items() if f["gating"])
    test_ids = {r.id for r in read_records(tiny_splits / "test.jsonl").records}
    real_ids = {r.id for r in read_records(tiny_splits / "real_test.jsonl").records}
    assert real_ids and not test_ids & real_ids  # the real text is never in the split variants are picked on
    curves = json.loads((tmp_path / "plots/threshold_curves.json").read_text())
    assert curves["tuned"] == report["thresholds"] and curves["threshold_curves"]
    assert len(report["cooccurrence"]["true"]) == len(LABELS)


def test_without_real_text_the_real_tier_fails_and_says_why(tiny_exported, tiny_splits, tmp_path):
    report = _evaluate(tiny_exported, tiny_splits, tmp_path, real_test_path=tmp_path / "absent.jsonl")
    assert report["real"] is None and not report["gate"]["passed"]
    check = next(c for c in report["gate"]["checks"] if c["name"] == "real:measured")
    assert check == {"name": "real:measured", "passed": False, "detail": "no held-out real text", "tier": "real"}
