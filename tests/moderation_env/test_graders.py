"""Graders of the moderation environment, each component against a reward computed by hand."""

import typing

import pytest

from moderation_env import graders
from moderation_env.items import parse_item
from moderation_env.models import ModerationAction
from moderation_env.vocab import (ACTIONS, LABELS, ActionName, Label, action_similarity,
                                             label_similarity, strongest_action)


def item(labels=("clean",), action="approve", rules=(), keywords=(), conflict=(), political=False,
         type_="text_post", **public):
    row = {"id": "it-1", "type": type_, "text": "some text", "author_region": "US", "language": "en",
           "author_history": {"account_age_days": 10, "prior_violations": 0, "followers": 5, "verified": False},
           "conflicting_policies": list(conflict), "source": "test", **public,
           "gold": {"labels": list(labels), "action": action, "violated_rules": list(rules),
                    "reasoning_keywords": list(keywords), "protected_political_speech": political}}
    return parse_item(row)


def act(labels, action, confidence, reasoning="", cites=()):
    return ModerationAction(content_id="it-1", labels=list(labels), action=action, confidence=confidence,
                            reasoning=reasoning, policy_citations=list(cites))


def test_vocabulary_literals_match_the_table():
    assert typing.get_args(Label) == LABELS
    assert typing.get_args(ActionName) == ACTIONS


def test_similarity_tables_are_symmetric_and_clean_is_never_near_a_violation():
    for a in LABELS:
        assert label_similarity(a, a) == 1.0
        for b in LABELS:
            assert label_similarity(a, b) == label_similarity(b, a)
        if a != "clean":
            assert label_similarity("clean", a) == 0.0
    assert label_similarity("hate_speech", "harassment") == 0.5
    assert action_similarity("remove", "restrict") == action_similarity("restrict", "remove") == 0.5
    assert action_similarity("approve", "remove") == 0.0
    assert strongest_action(["restrict", "escalate", "remove"]) == "escalate"
    assert strongest_action([]) == "approve"


def test_single_label_exact():
    g = graders.grade_single_label(act(["hate_speech"], "remove", 0.9), item(["hate_speech"], "remove"))
    assert g.reward == pytest.approx(1.0)
    assert g.components["label"] == 1.0 and g.components["action"] == 1.0


def test_single_label_near_miss_and_calibration():
    # label 0.5 (harassment for hate_speech), action 0.5 (restrict for remove):
    # correctness 0.6*0.5 + 0.4*0.5 = 0.5; calibration 0.5*(0.8-0.5)^2 = 0.045; reward 0.455
    g = graders.grade_single_label(act(["harassment"], "restrict", 0.8), item(["hate_speech"], "remove"))
    assert g.components["correctness"] == pytest.approx(0.5)
    assert g.components["calibration_penalty"] == pytest.approx(0.045)
    assert g.reward == pytest.approx(0.455)


def test_single_label_only_the_first_label_counts():
    g = graders.grade_single_label(act(["spam", "hate_speech"], "remove", 0.0), item(["hate_speech"], "remove"))
    assert g.components["label"] == 0.0 and g.reward == pytest.approx(0.4)


def test_confident_mistake_costs_quadratically():
    # everything wrong at confidence 1: correctness 0, penalty 0.5*1^2
    g = graders.grade_single_label(act(["clean"], "approve", 1.0), item(["violence"], "remove"))
    assert g.reward == pytest.approx(-0.5)
    # the same mistake at confidence 0.5 costs a quarter of that
    g = graders.grade_single_label(act(["clean"], "approve", 0.5), item(["violence"], "remove"))
    assert g.reward == pytest.approx(-0.125)


def test_soft_f1_and_false_positive_penalty():
    # precision: hate_speech 1, spam 0 -> 0.5; recall: hate_speech 1, harassment max(0.5, 0) -> 0.75
    # F1 = 2*0.5*0.75/1.25 = 0.6; spam has no basis -> one false positive, 0.1
    assert graders.soft_f1(["hate_speech", "spam"], ("hate_speech", "harassment")) == pytest.approx(0.6)
    assert graders.false_positives(["hate_speech", "spam"], ("hate_speech", "harassment")) == 1
    g = graders.grade_multi_label(act(["hate_speech", "spam"], "remove", 0.6),
                                  item(["hate_speech", "harassment"], "remove"))
    # correctness 0.6*0.6 + 0.4*1 = 0.76; no calibration penalty (0.6 < 0.76); minus 0.1
    assert g.components["correctness"] == pytest.approx(0.76)
    assert g.components["false_positive_penalty"] == pytest.approx(0.1)
    assert g.reward == pytest.approx(0.66)


def test_false_positive_penalty_is_capped():
    g = graders.grade_multi_label(act(["spam", "nudity", "terrorism", "self_harm"], "approve", 0.0),
                                  item(["clean"], "approve"))
    # F1 0, action 1 -> correctness 0.4; four labels without basis: 0.4 capped at 0.3
    assert g.components["false_positive_penalty"] == pytest.approx(0.3)
    assert g.reward == pytest.approx(0.1)


def test_citation_f1():
    assert graders.citation_f1([], ()) == 1.0
    assert graders.citation_f1(["AD_AGE_001"], ()) == 0.0
    assert graders.citation_f1([], ("AD_AGE_001",)) == 0.0
    assert graders.citation_f1(["AD_AGE_001", "AD_POL_001"], ("AD_AGE_001",)) == pytest.approx(2 / 3)


def test_ad_policy_grade():
    ad = item(["clean"], "restrict", rules=["AD_AGE_001"], type_="ad_copy")
    assert graders.grade_ad_policy(act(["clean"], "restrict", 0.9, cites=["AD_AGE_001"]), ad).reward == pytest.approx(1.0)
    # label 1, citation 2/3, action restrict vs remove 0.5: 0.35 + 0.35*2/3 + 0.15
    g = graders.grade_ad_policy(act(["clean"], "remove", 0.0, cites=["AD_AGE_001", "AD_AGE_002"]), ad)
    assert g.reward == pytest.approx(0.35 + 0.35 * 2 / 3 + 0.15)


def test_keyword_overlap_removes_stop_words_and_folds_plurals():
    kw = ("public", "figure", "political", "criticism", "election")
    assert graders.keyword_overlap("Criticism of public figures before an election is political speech", kw) == 1.0
    assert graders.keyword_overlap("The mayor is bad", kw) == 0.0
    assert graders.keyword_overlap("an election and a public post", kw) == pytest.approx(2 / 5)
    # "no" is a stop word: only "threat" is wanted
    assert graders.keyword_overlap("not really threats", ("no", "threat")) == 1.0
    assert graders.tokens("The threats, and THE glass") == {"threat", "glass"}


def test_thread_conflict_reasoning_and_political_penalty():
    political = item(["clean"], "approve", keywords=("public", "figure", "political", "criticism"),
                     conflict=("CS_HARASS_001", "CS_POL_001"), political=True, type_="whatsapp_message",
                     thread_id="t", message_index=0, thread_length=3, sender="a")
    good = graders.grade_thread_message(
        act(["clean"], "approve", 0.9, "political criticism of a public figure is protected"), political)
    assert good.components["reasoning"] == 1.0 and good.reward == pytest.approx(1.0)
    # removing it: F1 0, action 0, reasoning 0 -> correctness 0; calibration 0.5*0.81; political 0.5
    bad = graders.grade_thread_message(act(["harassment"], "remove", 0.9, "insult"), political)
    assert bad.components["political_penalty"] == 0.5
    assert bad.reward == pytest.approx(-0.405 - 0.5)


def test_thread_without_conflict_and_last_message_is_thread_level():
    last = item(["scam"], "remove", rules=["CS_SCAM_001"], type_="whatsapp_message", thread_id="t",
                message_index=2, thread_length=3, sender="a")
    g = graders.grade_thread_message(act(["scam", "spam"], "remove", 0.5), last)
    # soft F1: precision (1 + 0.5)/2 = 0.75, recall 1 -> 6/7; 0.55*6/7 + 0.45*1
    assert "thread_action" in g.components and "reasoning" not in g.components
    assert g.reward == pytest.approx(0.55 * 6 / 7 + 0.45)


def test_clamp_and_episode_score():
    assert graders.clamp(-3.0) == -1.0 and graders.clamp(2.0) == 1.0
    assert graders.episode_score([1.0, -0.5, 0.2], 10) == pytest.approx(0.07)
    assert graders.episode_score([-1.0, 0.2], 10) == 0.0
    assert graders.episode_score([1.0] * 10, 10) == 1.0
