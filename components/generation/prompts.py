"""The words of an LLM generation request, from the prompt data and the category specifications.

``components/resources/prompts/generation.yaml`` holds every template (one copy for both
backends); ``build_prompt`` fills it for request ``index`` of a job, deterministically for
(job, index, seed): each request gets a context, a subtype or look-alike to focus on and its
index, so no two prompts are alike. What is sent decides the cache key: a change here asks again.
"""

from __future__ import annotations

import json
import math
import random
import string
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from components.core.taxonomy import AUDIENCES, LABELS, SURFACES, category as taxonomy_category
from components.generation.base import Job
from components.generation.specs import load_spec, resource_text

# Output tokens one example costs, for the tokens-per-minute budget (a short text in JSON).
_TOKENS_PER_EXAMPLE = 80


@cache
def prompt_data() -> dict:
    """``resources/prompts/generation.yaml``: system, tasks, blocks, rules, the answer tool."""
    return yaml.safe_load(resource_text("prompts/generation.yaml"))


def tool_schema() -> dict:
    """The answer's JSON schema, with the category names filled in."""
    text = json.dumps(prompt_data()["tool"]["input_schema"]).replace('"CATEGORY_NAMES"', json.dumps(list(LABELS)))
    return json.loads(text)


def tool_name() -> str:
    """The name of the answer tool (Claude) / JSON schema (local servers)."""
    return prompt_data()["tool"]["name"]


def _fill(template: str, **values: Any) -> str:
    return string.Template(template).substitute({k: str(v) for k, v in values.items()}).strip()


def _bullets(items) -> str:
    return "\n".join(f"- {i}" for i in items) or "- (none)"


@cache
def _general_block() -> str:
    d = prompt_data()
    taxonomy = "\n".join(f"- {c}: {taxonomy_category(c).severity} - {taxonomy_category(c).description}" for c in LABELS)
    return _fill(d["system"], n_categories=len(LABELS), taxonomy=taxonomy, audiences=", ".join(AUDIENCES),
                 surfaces=", ".join(SURFACES), rules=_bullets(d["rules"]), tool_name=tool_name())


@cache
def _category_block(name: str | None) -> str:
    d = prompt_data()
    if name is None:
        return d["innocuous_block"].strip()
    spec = load_spec(name)
    rules = (d.get("category_rules") or {}).get(name)
    return _fill(
        d["category_block"], name=name, severity=spec.severity, description=spec.description,
        definition=spec.definition,
        subtypes=_bullets(f"{s['name']}: {s.get('description', '')}" for s in spec.subtypes),
        signals=_bullets(spec.signals), hard_negative_guidance=_bullets(spec.hard_negative_guidance),
        co_occurs_with=", ".join(spec.co_occurs_with) or "(none)",
        examples_positive=_bullets(spec.examples.get("positives") or ()),
        examples_negative=_bullets(spec.examples.get("negatives") or ()),
        category_rules=("\n" + rules.strip()) if rules else "",
    )


@dataclass(frozen=True)
class Prompt:
    """One request's words and what its answer must hold."""

    system: tuple[str, ...]  # blocks; the last carries the prompt-cache breakpoint
    user: str
    count: int
    expected: tuple[str, ...]  # the categories every example must carry, exactly
    kind: str  # positive | hard_negative | context_flip | innocuous (Draft.kind)
    audience: str
    surface: str
    focus: str  # the subtype, look-alike or theme asked for

    def estimated_tokens(self) -> int:
        """Input (about 4 characters a token) plus the expected output: for the tokens-per-minute budget."""
        chars = sum(len(s) for s in self.system) + len(self.user) + 1200  # the schema
        return chars // 4 + self.count * _TOKENS_PER_EXAMPLE


def _context_flip(name: str) -> dict | None:
    """Which look-alikes are the category's own words in an allowed context (one table: the offline lexicon)."""
    from components.generation.offline import load_lexicon

    flip = load_lexicon(name).context_flip
    return flip if flip and float(flip.get("fraction", 0)) > 0 else None


def _is_flip(index: int, fraction: float) -> bool:
    """Spread a fraction of request indices evenly (index 0 is never one)."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


def build_prompt(job: Job, index: int, count: int, seed: int) -> Prompt:
    """The request ``index`` of ``job``: deterministic for (job, index, seed)."""
    d = prompt_data()
    rng = random.Random(f"{seed}|{job.kind}|{job.category}|{','.join(job.co_labels)}|{index}")
    common = dict(count=count, index=index + 1, tool_name=tool_name())
    if job.kind == "innocuous":
        audience = rng.choice(AUDIENCES) if rng.random() < 0.3 else "GENERAL"
        surface = rng.choice(SURFACES)
        theme = d["innocuous_themes"][index % len(d["innocuous_themes"])]
        user = _fill(d["tasks"]["innocuous"], audience=audience, surface=surface,
                     surface_hint=d["surface_hints"][surface], theme=theme, **common)
        return Prompt((_general_block(), _category_block(None)), user, count, (), "innocuous", audience, surface, theme)

    name = job.category
    spec = load_spec(name)
    ctx = rng.choices(spec.contexts, weights=[c.weight for c in spec.contexts])[0]
    audience, surface = ctx.audience, ctx.surface
    system = (_general_block(), _category_block(name))
    values = dict(name=name, surface_hint=d["surface_hints"][surface], **common)
    if job.kind == "positives":
        subtype = spec.subtypes[index % len(spec.subtypes)] if spec.subtypes else {"name": name, "description": spec.description}
        expected = tuple(sorted({name, *job.co_labels}, key=LABELS.index))
        values.update(subtype=subtype["name"], subtype_description=subtype.get("description", ""),
                      expected=json.dumps(list(expected)))
        if job.co_labels:
            co_defs = "\n".join(f"{c}: {load_spec(c).description}. {load_spec(c).definition}" for c in job.co_labels)
            user = _fill(d["tasks"]["positive_multi"], audience=audience, surface=surface,
                         co_names=" and ".join(job.co_labels), co_definitions=co_defs, **values)
        else:
            user = _fill(d["tasks"]["positive"], audience=audience, surface=surface, **values)
        return Prompt(system, user, count, expected, "positive", audience, surface, subtype["name"])

    if job.kind != "negatives":
        raise ValueError(f"unknown job kind {job.kind!r}")
    flip = _context_flip(name)
    if flip and _is_flip(index, float(flip["fraction"])):
        audience = flip["audience"]
        subtype = spec.subtypes[index % len(spec.subtypes)]
        user = _fill(d["tasks"]["context_flip"], audience=audience, surface=surface, subtype=subtype["name"],
                     subtype_description=subtype.get("description", ""), **values)
        return Prompt(system, user, count, (), "context_flip", audience, surface, subtype["name"])
    guidance = spec.hard_negative_guidance[index % len(spec.hard_negative_guidance)]
    user = _fill(d["tasks"]["negative"], audience=audience, surface=surface, guidance=guidance, **values)
    return Prompt(system, user, count, (), "hard_negative", audience, surface, guidance)

