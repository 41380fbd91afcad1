"""The moderation taxonomy: categories in canonical order, severities, context prefixes.

Everything reads the one table in ``resources/taxonomy.yaml``; nothing else lists categories.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class Category:
    name: str
    severity: str
    description: str
    index: int


@cache
def _table() -> dict:
    text = resources.files("components").joinpath("resources/taxonomy.yaml").read_text("utf-8")
    return yaml.safe_load(text)


@cache
def categories() -> tuple[Category, ...]:
    return tuple(
        Category(name=c["name"], severity=c["severity"], description=c["description"], index=i)
        for i, c in enumerate(_table()["categories"])
    )


LABELS: tuple[str, ...] = tuple(c.name for c in categories())
SEVERITIES: tuple[str, ...] = tuple(_table()["severities"])
AUDIENCES: tuple[str, ...] = tuple(_table()["context"]["audiences"])
SURFACES: tuple[str, ...] = tuple(_table()["context"]["surfaces"])


def category(name: str) -> Category:
    """Look a category up by name, with an error that lists the valid names."""
    for c in categories():
        if c.name == name:
            return c
    raise UnknownCategoryError(name)


class UnknownCategoryError(ValueError):
    def __init__(self, name: str):
        super().__init__(f"unknown category {name!r}; valid categories: {', '.join(LABELS)}")
        self.name = name


_PREFIX_RE = re.compile(r"^\[([A-Z]+)\]\[([A-Z]+)\]\s?")


@dataclass(frozen=True)
class ContextPrefix:
    """Where a text was posted: the audience (GENERAL/ADULT) and the surface (BIO, MESSAGE, ...)."""

    audience: str = "GENERAL"
    surface: str = "GENERAL"

    def __post_init__(self) -> None:
        if self.audience not in AUDIENCES:
            raise ValueError(f"unknown audience {self.audience!r}; valid: {', '.join(AUDIENCES)}")
        if self.surface not in SURFACES:
            raise ValueError(f"unknown surface {self.surface!r}; valid: {', '.join(SURFACES)}")

    def render(self) -> str:
        return f"[{self.audience}][{self.surface}]"

    def apply(self, text: str) -> str:
        """Prefix raw text; text that already carries a prefix is re-prefixed, never doubled."""
        _, raw = split_prefix(text)
        return f"{self.render()} {raw}"

    @classmethod
    def parse(cls, spec: str) -> "ContextPrefix":
        """Parse ``ADULT/MESSAGE``, ``adult/message`` or ``[ADULT][MESSAGE]``."""
        s = spec.strip().upper()
        m = _PREFIX_RE.match(s)
        if m:
            return cls(m.group(1), m.group(2))
        parts = [p for p in re.split(r"[/,:\s]+", s) if p]
        if len(parts) != 2:
            raise ValueError(
                f"context {spec!r} is not AUDIENCE/SURFACE; for example GENERAL/MESSAGE or ADULT/LISTING"
            )
        return cls(parts[0], parts[1])


def split_prefix(text: str) -> tuple[ContextPrefix | None, str]:
    """Split ``[ADULT][MESSAGE] hi`` into its prefix and raw text; (None, text) when absent.

    A bracketed start that looks like a prefix but names an unknown audience or surface
    raises ValueError, so a typo never silently becomes part of the text.
    """
    m = _PREFIX_RE.match(text)
    if not m:
        return None, text
    return ContextPrefix(m.group(1), m.group(2)), text[m.end():]


def place(text: str, context: ContextPrefix | None = None) -> tuple[str, ContextPrefix]:
    """``text`` as the model reads it, with its context prefix, and that context: ``context`` when
    given, else the text's own ``[AUDIENCE][SURFACE]`` prefix, else GENERAL/GENERAL. Raises
    ValueError for a prefix naming an unknown audience or surface (see :func:`split_prefix`)."""
    own, raw = split_prefix(text)
    chosen = context or own or ContextPrefix()
    return f"{chosen.render()} {raw}", chosen
