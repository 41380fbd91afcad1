"""Token accounting and what the tokens cost.

Prices are USD per million tokens, from ``components/resources/prompts/pricing.yaml`` (the
longest model-name prefix that matches) unless a caller passes its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass
class Usage:
    """Tokens of one answer or a running total: input, output, prompt-cache writes and reads."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    def add(self, other: Usage) -> None:
        """Add ``other``'s tokens to these, in place."""
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


@cache
def pricing_table() -> dict:
    """``pricing.yaml``: ``models`` (rows of prefix, input, output[, cache_write, cache_read]) and ``multipliers``."""
    text = resources.files("components").joinpath("resources", "prompts", "pricing.yaml").read_text("utf-8")
    return yaml.safe_load(text)


@dataclass(frozen=True)
class Price:
    """USD per million tokens; ``batch`` multiplies the cost of a Message Batch answer."""

    input: float
    output: float
    cache_write: float
    cache_read: float
    batch: float

    def cost(self, usage: Usage, batch: bool = False) -> float:
        """USD of ``usage``; at the batch discount when ``batch``."""
        usd = (usage.input_tokens * self.input + usage.output_tokens * self.output
               + usage.cache_write_tokens * self.cache_write + usage.cache_read_tokens * self.cache_read) / 1e6
        return usd * (self.batch if batch else 1.0)


def price_for(model: str, override: dict[str, float] | None = None, table: dict | None = None) -> Price | None:
    """USD per million tokens: ``override`` (params) first, else the longest matching prefix of the
    table; None for a model the table does not know (its cost is then not counted)."""
    table = table or pricing_table()
    m = table.get("multipliers", {})
    row = dict(override) if override else None
    if row is None:
        rows = [r for r in table.get("models", []) if model.startswith(r["prefix"])]
        if not rows:
            return None
        row = max(rows, key=lambda r: len(r["prefix"]))
    inp = float(row.get("input", 0.0))
    return Price(inp, float(row.get("output", 0.0)), float(row.get("cache_write", inp * m.get("cache_write", 1.25))),
                 float(row.get("cache_read", inp * m.get("cache_read", 0.1))), float(m.get("batch", 0.5)))
