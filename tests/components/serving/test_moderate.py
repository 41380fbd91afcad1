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


def test_one_normalisation_gives_what_each_part_gives_on_its_own(folder):
    """moderate() normalises once and hands the result to the language verdict and the scores; the same as
    each normalising the raw input itself, for every kind of disguise normalisation undoes."""
    model = _model(folder, {"threats": 0.0})
    texts = ["\uff29 \uff41\uff4d going to hurt you",                 # fullwidth
             "I am g\u200boing to h\u200curt y\u2060ou",                 # zero-width and word joiner
             "I \u0430m going to hurt \u0443ou",                         # Cyrillic look-alikes
             "I   am\tgoing\n\nto hurt\u00a0you",                      # whitespace of every kind
             "[ADULT][MESSAGE] \uff48\uff55\uff52\uff54 you",           # a context prefix before fullwidth
             "\u200b\u200b", "caf\u0065\u0301 ol\u00e9 " * 40]            # contentless; combining marks, long
    results = moderate(model, texts)
    inputs = [r.input for r in results]
    np.testing.assert_allclose(score_matrix(results), model.predict_proba(inputs), atol=1e-6)
    assert [r.language for r in results] == model.languages(inputs)


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
