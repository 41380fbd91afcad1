"""Reading an LLM's answer: what a transport makes of one response, and which examples are kept.

Every example is validated: refusals, malformed or off-category answers, duplicates (after
normalisation), empty and overlong texts are rejected with a reason, and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from components.core.contract import text_problem
from components.core.taxonomy import LABELS, split_prefix
from components.generation.prompts import Prompt
from components.llm.usage import Usage
from components.text.dedup import normalize

MAX_TEXT_CHARS = 1500
_REFUSAL_RE = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,? (but )?i (can|won|am|will)|i can(?:no|')?t (help|assist|create|write|generate|"
    r"provide|produce|comply|fulfil)|i'?m not (able|comfortable)|i am not (able|comfortable)|as an ai\b|i (must|have to) decline)",
    re.IGNORECASE,
)


@dataclass
class Answer:
    """What a transport reads from one raw response."""

    examples: list | None
    usage: Usage
    refusal: str | None = None
    malformed: str | None = None


@dataclass(frozen=True)
class Rejected:
    """Why an example (or a whole answer: ``examples_lost`` > 1) was not kept."""

    reason: str  # refusal | malformed | errored | off_category | duplicate | empty | invalid_text | too_long
    detail: str
    raw: Any = None
    examples_lost: int = 1


def looks_like_refusal(text: str) -> bool:
    """Whether a text opens like a refusal ("I'm sorry, but I can't ...", "As an AI ...")."""
    return bool(_REFUSAL_RE.match(text or ""))


def _clean_text(text: str) -> str:
    text = text.strip()
    try:
        _, text = split_prefix(text)  # a model that wrote the prefix anyway
    except ValueError:
        pass
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text


def validate_answer(answer: Answer, prompt: Prompt, seen: set[str]) -> tuple[list[tuple[str, str]], list[Rejected]]:
    """Accepted ``(text, subtype)`` pairs and rejects of one answer, in answer order.

    ``seen`` holds the normalised texts accepted so far (of the same kind and category) and is
    updated. A refused or malformed answer is one reject that loses ``prompt.count`` examples."""
    if answer.refusal is not None:
        return [], [Rejected("refusal", answer.refusal[:300], None, prompt.count)]
    if answer.malformed is not None or not isinstance(answer.examples, list):
        why = answer.malformed or f"examples is {type(answer.examples).__name__}, not a list"
        return [], [Rejected("malformed", why, None, prompt.count)]
    accepted: list[tuple[str, str]] = []
    rejects: list[Rejected] = []
    expected = set(prompt.expected)
    for ex in answer.examples:
        if not isinstance(ex, dict) or not isinstance(ex.get("text"), str):
            rejects.append(Rejected("malformed", "an example without a text string", ex))
            continue
        text = _clean_text(ex["text"])
        cats = ex.get("categories", [])
        if not text:
            rejects.append(Rejected("empty", "empty text", ex))
        elif problem := text_problem(text):  # the data contract's rule: valid UTF-8, something visible
            rejects.append(Rejected("invalid_text", problem, ex))
        elif len(text) > MAX_TEXT_CHARS:
            rejects.append(Rejected("too_long", f"{len(text)} characters > {MAX_TEXT_CHARS}", ex))
        elif looks_like_refusal(text):
            rejects.append(Rejected("refusal", "the example is a refusal", ex))
        elif not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            rejects.append(Rejected("malformed", "categories is not a list of names", ex))
        elif unknown := sorted(set(cats) - set(LABELS)):
            rejects.append(Rejected("off_category", f"unknown categories {unknown}", ex))
        elif set(cats) != expected:
            missing, extra = sorted(expected - set(cats)), sorted(set(cats) - expected)
            why = "; ".join(filter(None, [missing and f"not {', '.join(missing)}", extra and f"also {', '.join(extra)}"]))
            rejects.append(Rejected("off_category", why, ex))
        elif (norm := normalize(text)) in seen or not norm:
            rejects.append(Rejected("duplicate", "repeats an earlier example", ex))
        else:
            seen.add(norm)
            accepted.append((text, str(ex.get("subtype") or prompt.focus)))
    return accepted, rejects
