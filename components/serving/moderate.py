"""The one scoring path: texts in, moderation results out.

``moderate(model, texts, contexts)`` puts each text in its context (audience and surface), then
:class:`components.model.onnx_runtime.OnnxClassifier` normalises, windows and scores it
(``predict_proba``), identifies its language (``languages``) and flags the categories at their
tuned thresholds (``flags``); the recommended action comes from the policy table
``components/resources/policy.yaml``. ``predict``, ``showcase``, the moderation environment's
classifier agent, the MLflow model and the HTTP service all call this function; none of them
scores, flags or picks an action another way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

from components.text.normalize import normalize_text
from components.core.taxonomy import AUDIENCES, LABELS, ContextPrefix, category, place
from components.model.onnx_runtime import Flag, OnnxClassifier
from components.text.language import NO_CONTENT, LanguageVerdict


class PolicyError(ValueError):
    """The policy table names an unknown action, severity, audience or category."""


@dataclass(frozen=True)
class Policy:
    """The action table (``components/resources/policy.yaml``); see that file for the rule."""

    actions: tuple[str, ...]
    no_flags: str
    not_judged: str
    no_content: str
    by_severity: Mapping[str, str]
    by_category: Mapping[str, str] = field(default_factory=dict)
    by_context: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        wanted = [self.no_flags, self.not_judged, self.no_content, *self.by_severity.values(),
                  *self.by_category.values(), *(a for table in self.by_context.values() for a in table.values())]
        problems = [f"action {a!r}" for a in wanted if a not in self.actions]
        problems += [f"severity {s!r}" for s in self.by_severity if s not in {"critical", "high", "medium", "low"}]
        problems += [f"audience {a!r}" for a in self.by_context if a not in AUDIENCES]
        problems += [f"category {c!r}" for c in [*self.by_category, *(c for t in self.by_context.values() for c in t)]
                     if c not in LABELS]
        missing = {category(c).severity for c in LABELS} - set(self.by_severity)
        problems += [f"no action for severity {s!r}" for s in sorted(missing)]
        if problems:
            raise PolicyError(f"policy table: unknown {', '.join(problems)}; actions: {', '.join(self.actions)}; "
                              f"categories: components/resources/taxonomy.yaml")

    def action_for(self, flag: Flag, context: ContextPrefix) -> str:
        """The action one flag asks for in ``context``."""
        return (self.by_context.get(context.audience, {}).get(flag.category)
                or self.by_category.get(flag.category) or self.by_severity[flag.severity])

    def decide(self, flags: Sequence[Flag], context: ContextPrefix, language: LanguageVerdict) -> str:
        """The recommended action: the most severe any flag asks for (``no_flags``, ``not_judged``
        or ``no_content`` when there is none)."""
        if language.language == NO_CONTENT:
            return self.no_content
        if not language.judged:
            return self.not_judged
        asked = [self.action_for(f, context) for f in flags]
        return max(asked, key=self.actions.index) if asked else self.no_flags


@lru_cache(maxsize=1)
def default_policy() -> Policy:
    raw = yaml.safe_load(resources.files("components").joinpath("resources/policy.yaml").read_text("utf-8")) or {}
    try:
        return Policy(actions=tuple(raw["actions"]), no_flags=raw["no_flags"], not_judged=raw["not_judged"],
                      no_content=raw["no_content"], by_severity=dict(raw["by_severity"]),
                      by_category=dict(raw.get("by_category") or {}), by_context=dict(raw.get("by_context") or {}))
    except KeyError as exc:
        raise PolicyError(f"components/resources/policy.yaml: missing key {exc}") from None


@dataclass(frozen=True)
class Result:
    """One text's moderation: every category's score (``LABELS`` order in ``scores``), the flagged
    ones most severe first, the recommended action and the language verdict. ``input`` is the text
    with its context prefix, as the model read it before normalisation."""

    text: str
    input: str
    context: ContextPrefix
    scores: dict[str, float]
    flags: list[Flag]
    action: str
    language: LanguageVerdict

    def to_dict(self, include_text: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text} if include_text else {}
        out.update({
            "context": {"audience": self.context.audience, "surface": self.context.surface},
            "action": self.action,
            "flags": [{"category": f.category, "score": round(f.score, 6), "threshold": round(f.threshold, 6),
                       "severity": f.severity} for f in self.flags],
            "scores": {name: round(score, 6) for name, score in self.scores.items()},
            "language": {"code": self.language.language, "confidence": self.language.confidence,
                         "judged": self.language.judged},
        })
        return out


def moderate(model: OnnxClassifier, texts: Sequence[str],
             contexts: ContextPrefix | Sequence[ContextPrefix | None] | None = None, *,
             policy: Policy | None = None, batch_size: int = 32) -> list[Result]:
    """Moderate ``texts`` (``len(texts)`` results, same order).

    ``contexts``: one for all texts, one per text, or ``None``; a text without one is placed by
    :func:`components.core.taxonomy.place` (its own prefix, else GENERAL/GENERAL). Raises
    ValueError when a list of contexts does not match the texts, or for a malformed prefix.
    """
    if contexts is None or isinstance(contexts, ContextPrefix):
        contexts = [contexts] * len(texts)
    if len(contexts) != len(texts):
        raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts; give one per text or one for all")
    if not texts:
        return []
    policy = policy or default_policy()
    placed = [place(t, c) for t, c in zip(texts, contexts)]
    inputs = [p[0] for p in placed]
    normalized = [normalize_text(i) for i in inputs]  # once: the language verdict and the scores both read it
    verdicts = model.languages(normalized, normalized=True)
    probs = model.predict_proba(normalized, batch_size=batch_size, normalize=False)
    flags = model.flags(probs, verdicts)
    return [Result(text=t, input=inp, context=ctx, scores=dict(zip(LABELS, map(float, row))), flags=hits,
                   action=policy.decide(hits, ctx, verdict), language=verdict)
            for t, (inp, ctx), row, hits, verdict in zip(texts, placed, probs, flags, verdicts)]


def score_matrix(results: Sequence[Result]) -> np.ndarray:
    """The results' scores as ``[len(results), 18]`` float32 (``LABELS`` order), for metrics."""
    return np.array([[r.scores[name] for name in LABELS] for r in results], dtype=np.float32).reshape(-1, len(LABELS))
