"""The policy book as data (``resources/policy_book.yaml``): rules with ids, text and the labels
they cover. An observation carries the excerpt for its item's content type."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from moderation_env.models import PolicyRule
from moderation_env.vocab import ACTIONS, CONTENT_TYPES, LABELS


class PolicyBookError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    labels: tuple[str, ...]
    applies_to: tuple[str, ...]
    action: str
    text: str

    def public(self) -> PolicyRule:
        return PolicyRule(id=self.id, title=self.title, labels=list(self.labels), action=self.action, text=self.text)


class PolicyBook:
    def __init__(self, raw: dict):
        self.version = str(raw.get("version", ""))
        self.rules: dict[str, Rule] = {}
        for entry in raw.get("rules", []):
            rule = Rule(id=entry["id"], title=entry["title"], labels=tuple(entry.get("labels", [])),
                        applies_to=tuple(entry["applies_to"]), action=entry["action"], text=entry["text"].strip())
            problems = [f"label {x!r}" for x in rule.labels if x not in LABELS]
            problems += [f"content type {x!r}" for x in rule.applies_to if x not in CONTENT_TYPES]
            problems += [f"action {rule.action!r}"] if rule.action not in ACTIONS else []
            if problems:
                raise PolicyBookError(f"rule {rule.id}: unknown {', '.join(problems)}")
            if rule.id in self.rules:
                raise PolicyBookError(f"rule {rule.id} is defined twice")
            self.rules[rule.id] = rule
        self._excerpts = {t: tuple(r.public() for r in self.rules.values() if t in r.applies_to) for t in CONTENT_TYPES}

    def __getitem__(self, rule_id: str) -> Rule:
        try:
            return self.rules[rule_id]
        except KeyError:
            raise PolicyBookError(f"unknown rule {rule_id!r}; rules: {', '.join(self.rules)}") from None

    def excerpt(self, content_type: str) -> list[PolicyRule]:
        """Every rule that governs this content type (a superset of what any one item violates)."""
        return list(self._excerpts[content_type])


@cache
def policy_book() -> PolicyBook:
    text = resources.files("moderation_env").joinpath("resources/policy_book.yaml").read_text("utf-8")
    return PolicyBook(yaml.safe_load(text))
