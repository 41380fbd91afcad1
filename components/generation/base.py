"""What every generation backend returns, and the interface the generate steps drive.

The offline generator, Claude and local LLMs all produce ``Draft``s; the generate steps turn
drafts into contract records the same way whichever backend wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Draft:
    """One generated text before it becomes a record: raw text (no prefix), its context and labels."""

    text: str
    audience: str
    surface: str
    labels: tuple[str, ...]
    kind: str  # positive | hard_negative | context_flip | innocuous
    template: int | None = None
    extra: dict = field(default_factory=dict, compare=False)


class GenerationBackend(Protocol):
    name: str

    def positives(self, category: str, count: int, co_labels: tuple[str, ...] = ()) -> list[Draft]:
        """``count`` texts that are ``category`` (and every one of ``co_labels``)."""

    def negatives(self, category: str, count: int) -> list[Draft]:
        """``count`` hard negatives for ``category``: similar wording, no category at all."""

    def innocuous(self, count: int) -> list[Draft]:
        """``count`` everyday texts with no category."""


@dataclass(frozen=True)
class Job:
    """One volume a generate step asks a backend for: ``count`` drafts of one kind for one category."""

    kind: str  # positives | negatives | innocuous
    category: str | None
    count: int
    co_labels: tuple[str, ...] = ()
