"""Category specifications: definition, subtypes, signals, hard-negative guidance, contexts.

Kept as data (``resources/categories/<name>.yaml``): the offline generator takes its contexts
from them, and the LLM backends build their prompts from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from components.core.taxonomy import AUDIENCES, LABELS, SURFACES, category


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class WeightedContext:
    audience: str
    surface: str
    weight: float


@dataclass(frozen=True)
class CategorySpec:
    name: str
    severity: str
    description: str
    definition: str
    subtypes: tuple[dict, ...]
    signals: tuple[str, ...]
    hard_negative_guidance: tuple[str, ...]
    co_occurs_with: tuple[str, ...]
    contexts: tuple[WeightedContext, ...]
    examples: dict


def resource_text(relpath: str) -> str:
    return resources.files("components").joinpath("resources", relpath).read_text("utf-8")


@cache
def load_spec(name: str) -> CategorySpec:
    cat = category(name)
    where = f"components/resources/categories/{name}.yaml"
    try:
        raw = yaml.safe_load(resource_text(f"categories/{name}.yaml"))
    except FileNotFoundError:
        raise SpecError(f"{where}: missing; every category needs a specification file") from None
    contexts = []
    for c in raw.get("contexts") or [{"audience": "GENERAL", "surface": "GENERAL", "weight": 1}]:
        if c["audience"] not in AUDIENCES or c["surface"] not in SURFACES:
            raise SpecError(f"{where}: context {c} names an unknown audience or surface")
        contexts.append(WeightedContext(c["audience"], c["surface"], float(c.get("weight", 1))))
    co = tuple(raw.get("co_occurs_with") or ())
    unknown = [c for c in co if c not in LABELS]
    if unknown:
        raise SpecError(f"{where}: co_occurs_with names unknown categories {unknown}")
    return CategorySpec(
        name=name,
        severity=cat.severity,
        description=cat.description,
        definition=str(raw.get("definition", "")).strip(),
        subtypes=tuple(raw.get("subtypes") or ()),
        signals=tuple(raw.get("signals") or ()),
        hard_negative_guidance=tuple(raw.get("hard_negative_guidance") or ()),
        co_occurs_with=co,
        contexts=tuple(contexts),
        examples=dict(raw.get("examples") or {}),
    )
