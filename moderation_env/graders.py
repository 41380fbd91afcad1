"""Deterministic graders: one reward per step in [-1, 1], one score per episode in [0, 1].

Components (each in [0, 1]; the task decides the weights):
- ``label``: single-label tasks take the first predicted label and score its similarity to the
  gold label from the near-miss table (1 exact, e.g. 0.5 hate_speech for harassment, 0 else).
  Multi-label tasks score a *soft F1*: precision = mean over predicted labels of their best
  similarity to a gold label, recall = mean over gold labels of their best similarity to a
  predicted label, F1 = 2PR / (P + R).
- ``action``: similarity of the chosen action to the gold action (1 exact, 0.5 remove/restrict ...).
- ``citation``: F1 between cited rule ids and the violated rule ids; 1 when both are empty.
- ``reasoning``: share of the gold reasoning keywords (stop words removed, plural ``s`` folded)
  found in the reasoning; graded only where policies conflict.
Penalties (subtracted):
- ``calibration_penalty`` = 0.5 × max(0, confidence − correctness)²: confident mistakes cost,
  where correctness is the weighted sum of the components before penalties.
- ``false_positive_penalty`` (multi-label) = 0.1 per predicted violation label with no similarity
  to any gold label, at most 0.3.
- ``political_penalty`` (threads) = 0.5 for ``remove`` on protected political speech.
The reward is clamped to [-1, 1]. A step whose ``content_id`` is not the served item scores -1.
The episode score is clamp(sum of rewards / steps of the task, 0, 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from moderation_env.items import GoldItem
from moderation_env.models import ModerationAction
from moderation_env.vocab import action_similarity, label_similarity

CALIBRATION_WEIGHT = 0.5
FALSE_POSITIVE_COST, FALSE_POSITIVE_CAP = 0.1, 0.3
POLITICAL_PENALTY = 0.5
WRONG_ITEM_REWARD = -1.0

STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just me more most my no nor not now of off on once only or other our
out over own same she should so some such than that the their them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your
""".split())
_TOKEN_RE = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> set[str]:
    """Lower-cased word tokens, stop words removed, a plural ``s`` folded (``threats`` = ``threat``)."""
    out = set()
    for t in _TOKEN_RE.findall(text.lower()):
        if t in STOP_WORDS:
            continue
        if len(t) > 3 and t.endswith("s") and not t.endswith("ss"):
            t = t[:-1]
        out.add(t)
    return out


def clamp(x: float, lo: float = -1.0, hi: float = 1.0) -> float:
    return max(lo, min(hi, x))


def single_label_score(predicted: list[str], gold: tuple[str, ...]) -> float:
    return label_similarity(predicted[0], gold[0]) if predicted else 0.0


def soft_f1(predicted: list[str], gold: tuple[str, ...]) -> float:
    if not predicted or not gold:
        return 0.0
    precision = sum(max(label_similarity(p, g) for g in gold) for p in predicted) / len(predicted)
    recall = sum(max(label_similarity(p, g) for p in predicted) for g in gold) / len(gold)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def false_positives(predicted: list[str], gold: tuple[str, ...]) -> int:
    return sum(1 for p in predicted if p != "clean" and max(label_similarity(p, g) for g in gold) == 0.0)


def citation_f1(cited: list[str], violated: tuple[str, ...]) -> float:
    c, v = set(cited), set(violated)
    if not c and not v:
        return 1.0
    hit = len(c & v)
    if hit == 0:
        return 0.0
    p, r = hit / len(c), hit / len(v)
    return 2 * p * r / (p + r)


def keyword_overlap(reasoning: str, keywords: tuple[str, ...]) -> float:
    wanted = tokens(" ".join(keywords))
    if not wanted:
        return 1.0
    return len(wanted & tokens(reasoning)) / len(wanted)


def calibration_penalty(confidence: float, correctness: float) -> float:
    return CALIBRATION_WEIGHT * max(0.0, confidence - correctness) ** 2


@dataclass
class StepGrade:
    reward: float
    components: dict[str, float] = field(default_factory=dict)


def _finish(correctness: float, action: ModerationAction, parts: dict[str, float], penalties: dict[str, float]) -> StepGrade:
    cal = calibration_penalty(action.confidence, correctness)
    reward = clamp(correctness - cal - sum(penalties.values()))
    comps = {**{k: round(v, 6) for k, v in parts.items()}, "correctness": round(correctness, 6),
             "calibration_penalty": round(cal, 6), **{k: round(v, 6) for k, v in penalties.items()},
             "reward": round(reward, 6)}
    return StepGrade(reward, comps)


def grade_single_label(action: ModerationAction, item: GoldItem) -> StepGrade:
    """single-label-classify: 0.6 × label (first label, near-miss credit) + 0.4 × action."""
    label = single_label_score(list(action.labels), item.gold.labels)
    act = action_similarity(action.action, item.gold.action)
    return _finish(0.6 * label + 0.4 * act, action, {"label": label, "action": act}, {})


def grade_multi_label(action: ModerationAction, item: GoldItem) -> StepGrade:
    """multi-label-classify: 0.6 × soft label F1 + 0.4 × action − false-positive penalty."""
    f1 = soft_f1(list(action.labels), item.gold.labels)
    act = action_similarity(action.action, item.gold.action)
    fp = min(FALSE_POSITIVE_CAP, FALSE_POSITIVE_COST * false_positives(list(action.labels), item.gold.labels))
    return _finish(0.6 * f1 + 0.4 * act, action, {"label": f1, "action": act}, {"false_positive_penalty": fp})


def grade_ad_policy(action: ModerationAction, item: GoldItem) -> StepGrade:
    """ad-policy-compliance: 0.35 × soft label F1 + 0.35 × citation F1 + 0.3 × action."""
    f1 = soft_f1(list(action.labels), item.gold.labels)
    cit = citation_f1(action.policy_citations, item.gold.violated_rules)
    act = action_similarity(action.action, item.gold.action)
    return _finish(0.35 * f1 + 0.35 * cit + 0.3 * act, action, {"label": f1, "citation": cit, "action": act}, {})


def grade_thread_message(action: ModerationAction, item: GoldItem) -> StepGrade:
    """thread-moderation-hard, one message: label F1 on this message and the thread's action so far
    (on the last message, the thread-level action); where policies conflict, reasoning too:
    0.4 × F1 + 0.3 × action + 0.3 × reasoning, else 0.55 × F1 + 0.45 × action;
    − 0.5 for removing protected political speech."""
    f1 = soft_f1(list(action.labels), item.gold.labels)
    act = action_similarity(action.action, item.gold.action)
    last = item.public.message_index == (item.public.thread_length or 0) - 1
    parts = {"label": f1, "thread_action" if last else "action": act}
    if item.is_conflict:
        reasoning = keyword_overlap(action.reasoning, item.gold.reasoning_keywords)
        parts["reasoning"] = reasoning
        correctness = 0.4 * f1 + 0.3 * act + 0.3 * reasoning
    else:
        correctness = 0.55 * f1 + 0.45 * act
    political = POLITICAL_PENALTY if item.gold.protected_political_speech and action.action == "remove" else 0.0
    return _finish(correctness, action, parts, {"political_penalty": political})


def episode_score(rewards: list[float], max_steps: int) -> float:
    return clamp(sum(rewards) / max_steps, 0.0, 1.0) if max_steps else 0.0
