"""The pipeline's classifier as a moderator of the environment: the model reads the text (through
``components.serving.moderate``), the observation's policy excerpt decides the action. See
:class:`ClassifierAgent` for the rule and for what it does not judge."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from moderation_env.models import ModerationAction, ModerationObservation, PolicyRule
from moderation_env.vocab import strongest_action, table

# The surface a content type is posted on, in the classifier's context prefix.
SURFACE = {"text_post": "GENERAL", "image_description": "GENERAL", "ad_copy": "LISTING",
           "whatsapp_message": "MESSAGE"}


@dataclass(frozen=True)
class Reading:
    """What the classifier makes of one text: environment labels (``("clean",)`` when no mapped
    category is flagged), the flags behind them (most severe first), the highest mapped score, why
    the text was not judged ("" when it was) and a note for a text with nothing to judge."""

    labels: tuple[str, ...]
    flags: tuple = ()
    top_score: float = 0.0
    not_judged: str = ""
    note: str = ""


def applicable_rules(rules, labels) -> list[PolicyRule]:
    """The prohibiting rules (action other than approve) all of whose labels are among ``labels``."""
    have = set(labels)
    return [r for r in rules if r.action != "approve" and r.labels and set(r.labels) <= have]


def _named(rules) -> str:
    return ", ".join(f"{r.id} ({r.title})" for r in rules)


def _texts(rules) -> str:
    return " ".join(r.text for r in rules).rstrip(".")


class ClassifierAgent:
    """The pipeline's exported model reads the text; the observation's policy excerpt decides.

    - Labels: the 18 categories over their thresholds, mapped by ``labels.yaml: category_to_labels``.
    - Action: a prohibiting rule of the excerpt applies when all its labels are predicted; the action
      is the first of ``action_precedence`` an applicable rule asks for (as the environment defines
      a gold action); the citations are the applicable rules that ask for it. Labels no rule of the
      excerpt covers take ``action_by_severity`` / ``action_by_category`` instead.
    - Threads: the action is the strongest over the thread so far, each message of
      ``thread_history`` read and judged the same way (what the task asks for).

    What the 18 categories cannot express the agent says, naming the rule ids, instead of guessing:
    - content rules with a label no category maps to (misinformation, terrorism): it approves what
      it finds clean, since reviewing every post for what it cannot see would review them all;
    - form rules (no labels: ad age and region targeting, political-ad disclaimers) bind every item
      of the type and no category reads them: an item no content rule acts on goes to
      ``request_review`` (the policy's own action for an unverified political ad);
    - a protection named in ``conflicting_policies`` (counter-speech, news reporting, political
      speech) turns on intent: when a prohibiting rule of the conflict applies, ``request_review``
      instead of its action; when none does, the protection stands;
    - a language the model is not trained on: ``request_review`` at confidence 0.

    Confidence: the top flag's score (for "clean", 1 − the highest mapped score) times the share of
    the excerpt's prohibiting rules the categories can judge, halved for a review request (the
    agent hands the decision on)."""

    name = "classifier"

    def __init__(self, model_folder: str | os.PathLike, variant: Optional[str] = None, threads: Optional[int] = None):
        from components.model.onnx_runtime import OnnxClassifier

        self.model = OnnxClassifier(model_folder, variant=variant, threads=threads)
        t = table()
        self.category_map: dict[str, list[str]] = t["category_to_labels"]
        self.by_severity, self.by_category = t["action_by_severity"], t["action_by_category"]
        self.seen = {label for labels in self.category_map.values() for label in labels}
        self._readings: dict[tuple[str, str], Reading] = {}

    def read(self, text: str, content_type: str) -> Reading:
        """The classifier's reading of a text (remembered: thread messages come back as history)."""
        key = (text, content_type)
        if key not in self._readings:
            if len(self._readings) >= 4096:
                self._readings.clear()
            self._readings[key] = self._read(text, content_type)
        return self._readings[key]

    def _read(self, text: str, content_type: str) -> Reading:
        from components.core.taxonomy import ContextPrefix
        from components.serving.moderate import moderate
        from components.text.language import NO_CONTENT

        result = moderate(self.model, [text], ContextPrefix("GENERAL", SURFACE[content_type]))[0]
        if result.language.language == NO_CONTENT:
            return Reading(("clean",), note="no words to judge (emoji or punctuation only)")
        if not result.language.judged:  # its scores would be noise: a person who reads the language decides
            return Reading(("clean",), not_judged=(
                f"language {result.language.language!r} is not one the classifier is trained on "
                f"({', '.join(self.model.config.languages)}): not judged"))
        flags = [f for f in result.flags if self.category_map.get(f.category)]
        mapped = [score for name, score in result.scores.items() if self.category_map.get(name)]
        return self.reading(flags, max(mapped, default=0.0))

    def reading(self, flags, top_score: float = 0.0) -> Reading:
        """A reading from mapped flags (most severe first): their labels, in order, without repeats;
        with none, "clean" and ``top_score``, the highest mapped score."""
        if not flags:
            return Reading(("clean",), top_score=top_score)
        labels = tuple(dict.fromkeys(label for f in flags for label in self.category_map[f.category]))
        return Reading(labels, tuple(flags), flags[0].score)

    def blind_rules(self, rules) -> tuple[list[PolicyRule], list[PolicyRule]]:
        """The excerpt's prohibiting rules the categories cannot judge: content rules with a label
        no category maps to, and form rules (no labels)."""
        prohibiting = [r for r in rules if r.action != "approve"]
        return ([r for r in prohibiting if r.labels and not set(r.labels) <= self.seen],
                [r for r in prohibiting if not r.labels])

    def judge(self, reading: Reading, rules, conflicting=()) -> tuple[str, list[PolicyRule], list[str]]:
        """The action for a reading under the excerpt ``rules`` and the ``conflicting`` ones, the
        rules that decided it (the citations) and the sentences of the reasoning."""
        if reading.not_judged:
            why = [reading.not_judged] + ([f"conflict not weighed: {_named(conflicting)}"] if conflicting else [])
            return "request_review", [], why
        why = [("classifier flags: " + ", ".join(f"{f.category} {f.score:.2f} ({f.severity})" for f in reading.flags))
               if reading.flags else reading.note or "no category over its threshold"]
        applicable = applicable_rules(rules, reading.labels)
        if applicable:
            action = strongest_action(r.action for r in applicable)
            why.append(f"applies: {_named(applicable)}; the first action any of them asks for: {action}")
        elif reading.flags:
            top = reading.flags[0]
            choice = self.by_category.get(top.category) or self.by_severity[top.severity]["actions"]
            action = choice[0] if top.score >= self.by_severity[top.severity]["sure"] else choice[1]
            why.append(f"no rule of the excerpt covers {', '.join(reading.labels)}: {action} by severity")
        else:
            action = "approve"
        if conflicting:
            protections = [r for r in conflicting if r.action == "approve"]
            contested = [r for r in conflicting if r.id in {a.id for a in applicable}]
            if contested and protections:
                action = "request_review"
                why.append(f"conflict: {_named(contested)} against {_named(protections)}; whether the content is "
                           "what the protection allows turns on intent the categories do not express: not judged")
            elif protections:
                prohibiting = [r for r in conflicting if r.action != "approve"]
                why.append(f"conflict: nothing flagged under {_named(prohibiting)}, so {_named(protections)} "
                           "stands: " + _texts(protections))
            elif contested:
                won = [r for r in contested if r.action == action]
                why.append(f"conflict: {_named(won)} wins by precedence ({action}): " + _texts(won))
            else:
                why.append(f"conflict: nothing flagged under {_named(conflicting)}, none applies")
        content, form = self.blind_rules(rules)
        if content:
            missing = sorted({x for r in content for x in r.labels} - self.seen)
            why.append(f"not judged: {_named(content)}, no category expresses {', '.join(missing)}")
        if form:
            why.append(f"not judged: {_named(form)}, they turn on the product, the targeting or a disclaimer, "
                       "which no category reads")
            if not applicable:
                action = strongest_action([action, "request_review"])
        return action, [r for r in applicable if r.action == action], why

    def confidence(self, reading: Reading, action: str, rules) -> float:
        if reading.not_judged:
            return 0.0
        content, form = self.blind_rules(rules)
        share = 1.0 - (len(content) + len(form)) / max(1, sum(r.action != "approve" for r in rules))
        score = reading.top_score if reading.flags else 1.0 - reading.top_score
        return round(score * share * (0.5 if action == "request_review" else 1.0), 4)

    def act(self, obs: ModerationObservation) -> ModerationAction:
        item, rules = obs.content, list(obs.policy_rules)
        by_id = {r.id: r for r in rules}
        reading = self.read(item.alt_text or item.text, item.type)
        action, deciding, why = self.judge(reading, rules, [by_id[r] for r in obs.conflicting_policies if r in by_id])
        for m in obs.thread_history:
            earlier, by, _ = self.judge(self.read(m.text, m.content_type), rules)
            if strongest_action([action, earlier]) != action:
                action = earlier
                why.append(f"thread so far: {earlier}, from message {m.content_id}" + (f": {_named(by)}" if by else ""))
        return ModerationAction(content_id=item.id, labels=list(reading.labels), action=action,
                                confidence=self.confidence(reading, action, rules), reasoning=". ".join(why)[:4000],
                                policy_citations=[r.id for r in deciding])
