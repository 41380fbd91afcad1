"""The one scoring path (components.serving.moderate) on a real exported MiniLM: the same scores,
flags and language verdicts as the ONNX runtime, and the action the policy table asks for."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from components.core.taxonomy import LABELS, ContextPrefix
from components.model.onnx_runtime import OnnxClassifier
from components.serving.moderate import Policy, PolicyError, default_policy, moderate, score_matrix

TEXTS = ["I am going to hurt you tonight", "lovely weather for the picnic", "🔥🔥🔥",
         "Hola, ¿cómo estás? Espero que todo vaya muy bien en tu casa y con tu familia."]


@pytest.fixture(scope="module")
def folder(tiny_exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("moderate") / "model"
    shutil.copytree(tiny_exported[0] / "onnx", out)
    return out


def _model(folder, flagged: dict[str, float]) -> OnnxClassifier:
    """The real model with thresholds that flag exactly ``flagged`` (0 always flags, >1 never)."""
    (folder / "thresholds.json").write_text(json.dumps({c: flagged.get(c, 1.01) for c in LABELS}))
    return OnnxClassifier(folder, variant="fp32")


def test_scores_flags_and_languages_are_the_runtimes_own(folder):
    model = _model(folder, {"threats": 0.0, "spam": 0.0})
    results = moderate(model, TEXTS, ContextPrefix("GENERAL", "MESSAGE"))
    inputs = [f"[GENERAL][MESSAGE] {t}" for t in TEXTS]
    assert [r.input for r in results] == inputs
    probs = model.predict_proba(inputs)
    verdicts = model.languages(inputs)
    np.testing.assert_allclose(score_matrix(results), probs, atol=1e-6)
    assert [r.flags for r in results] == model.flags(probs, verdicts)
    assert [r.language for r in results] == verdicts
    assert [r.language.language for r in results][2:] == ["zxx", "es"]


def test_the_action_follows_the_policy_table(folder):
    policy = default_policy()
    cases = [({"threats": 0.0}, "GENERAL", "remove"),            # critical
             ({"self_harm": 0.0}, "GENERAL", "escalate"),        # by category
             ({"profanity": 0.0}, "GENERAL", "review"),          # low
             ({"profanity": 0.0}, "ADULT", "allow"),             # by context
             ({"spam": 0.0, "threats": 0.0}, "GENERAL", "remove"),  # the most severe wins
             ({"contact_info": 0.0, "spam": 0.0}, "GENERAL", "restrict"),
             ({}, "GENERAL", "allow")]
    for flagged, audience, action in cases:
        model = _model(folder, flagged)
        r = moderate(model, [TEXTS[0]], ContextPrefix(audience, "MESSAGE"), policy=policy)[0]
        assert sorted(f.category for f in r.flags) == sorted(flagged)
        assert r.action == action, (flagged, audience)


def test_texts_it_does_not_judge_get_no_flags_and_their_own_action(folder):
    model = _model(folder, {c: 0.0 for c in LABELS})
    emoji, spanish = moderate(model, TEXTS[2:])
    assert emoji.flags == [] and emoji.action == "allow"
    assert spanish.flags == [] and spanish.action == "review"


def test_contexts_per_text_and_from_the_texts_own_prefix(folder):
    model = _model(folder, {})
    a, b, c = moderate(model, ["hi there", "[ADULT][BIO] hi there", "[ADULT][BIO] hi there"],
                       [ContextPrefix("GENERAL", "LISTING"), None, ContextPrefix("GENERAL", "REVIEW")])
    assert (a.input, a.context) == ("[GENERAL][LISTING] hi there", ContextPrefix("GENERAL", "LISTING"))
    assert (b.input, b.context) == ("[ADULT][BIO] hi there", ContextPrefix("ADULT", "BIO"))
    assert c.input == "[GENERAL][REVIEW] hi there"
    assert moderate(model, []) == []
    with pytest.raises(ValueError, match="2 contexts for 1 texts"):
        moderate(model, ["hi"], [None, None])
    with pytest.raises(ValueError, match="unknown audience"):
        moderate(model, ["[KIDS][BIO] hi"])


def test_result_json_shape(folder):
    r = moderate(_model(folder, {"threats": 0.0}), [TEXTS[0]])[0].to_dict()
    assert set(r) == {"text", "context", "action", "flags", "scores", "language"}
    assert list(r["scores"]) == list(LABELS)
    assert r["flags"][0]["category"] == "threats" and r["flags"][0]["threshold"] == 0.0
    assert r["language"]["judged"] is True


@pytest.mark.parametrize("change,problem", [
    ({"no_flags": "delete"}, "action 'delete'"),
    ({"by_category": {"threats": "ban"}}, "action 'ban'"),
    ({"by_category": {"threat": "remove"}}, "category 'threat'"),
    ({"by_context": {"KIDS": {"profanity": "remove"}}}, "audience 'KIDS'"),
    ({"by_severity": {"critical": "remove", "high": "remove", "medium": "restrict"}}, "no action for severity 'low'"),
])
def test_a_bad_policy_table_is_refused_with_what_is_wrong(change, problem):
    base = default_policy()
    fields = {k: getattr(base, k) for k in ("actions", "no_flags", "not_judged", "no_content", "by_severity",
                                             "by_category", "by_context")}
    with pytest.raises(PolicyError, match=problem):
        Policy(**{**fields, **change})
