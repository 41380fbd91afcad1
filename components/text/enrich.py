"""Multi-label enrichment: rules, kept as data, that add labels a source did not set.

Public sets and generators label one thing at a time; a scam message that also carries a
phone number is contact_info as well. The rules live in ``resources/enrichment_rules.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

import phonenumbers
import yaml

from components.core.taxonomy import LABELS, split_prefix

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_URL = re.compile(
    r"(?i)\b(?:https?://\S+|www\.[\w-]+\.\S+|[a-z0-9-]+\.(?:com|net|org|io|xyz|co|info|site|online|me|ly|gg|app|link|biz)(?:/\S*)?)(?![\w.])"
)
_HANDLE = re.compile(r"(?<![\w@])@([A-Za-z0-9_](?:[A-Za-z0-9_.]{0,28}[A-Za-z0-9_])?)")
_PLACEHOLDER_HANDLES = {"user"}


def find_contact_details(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) for each phone number, e-mail, URL or social handle in ``text``."""
    _, raw = split_prefix(text)
    found: list[tuple[str, str]] = []
    emails = list(_EMAIL.finditer(raw))
    found += [("email", m.group(0)) for m in emails]
    masked = _EMAIL.sub(" ", raw)
    found += [("url", m.group(0)) for m in _URL.finditer(masked)]
    found += [("handle", m.group(0)) for m in _HANDLE.finditer(masked) if m.group(1).lower() not in _PLACEHOLDER_HANDLES]
    phones: dict[str, None] = {}
    for region in ("US", "GB"):
        for match in phonenumbers.PhoneNumberMatcher(masked, region):
            phones[match.raw_string] = None
    return found + [("phone", p) for p in phones]


_DETECTORS: dict[str, Callable[[str], list]] = {"contact_details": find_contact_details}


@dataclass(frozen=True)
class Rule:
    name: str
    sets: str
    test: Callable[[str], bool]


class RuleError(ValueError):
    pass


@cache
def load_rules() -> tuple[Rule, ...]:
    where = "components/resources/enrichment_rules.yaml"
    raw = yaml.safe_load(resources.files("components").joinpath("resources/enrichment_rules.yaml").read_text("utf-8"))
    rules = []
    for r in raw.get("rules", []):
        if r.get("sets") not in LABELS:
            raise RuleError(f"{where}: rule {r.get('name')!r} sets unknown label {r.get('sets')!r}")
        if "detector" in r:
            if r["detector"] not in _DETECTORS:
                raise RuleError(f"{where}: rule {r['name']!r}: unknown detector {r['detector']!r}; known: {list(_DETECTORS)}")
            detect = _DETECTORS[r["detector"]]
            rules.append(Rule(r["name"], r["sets"], lambda t, d=detect: bool(d(t))))
        elif "words" in r:
            pattern = re.compile(r"(?i)(?<![\w*])(?:" + "|".join(r["words"]) + r")(?![\w*])")
            rules.append(Rule(r["name"], r["sets"], lambda t, p=pattern: bool(p.search(split_prefix(t)[1]))))
        else:
            raise RuleError(f"{where}: rule {r.get('name')!r} needs a detector or a words list")
    return tuple(rules)


def enrich(text: str, labels: dict[str, int]) -> tuple[dict[str, int], list[str]]:
    """Labels after every rule has run, and the names of the rules that added one."""
    labels = dict(labels)
    fired = []
    for rule in load_rules():
        if not labels[rule.sets] and rule.test(text):
            labels[rule.sets] = 1
            fired.append(rule.name)
    return labels, fired
