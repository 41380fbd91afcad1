"""The counters of one generation job, summed per category and in total for a step's statistics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from components.llm.usage import Usage



@dataclass
class Tally:
    """Counters of one job (summed per category and in total for the step's statistics)."""

    requests: int = 0  # answers fetched by this run
    cached: int = 0  # answers the cache served
    retries: int = 0
    asked: int = 0  # examples requested in the answers read
    returned: int = 0  # examples the model wrote
    accepted: int = 0
    kept: int = 0  # accepted and used (the rest are surplus)
    rejected: Counter = field(default_factory=Counter)
    examples_rejected: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0  # spent by this run
    cost_usd_with_cache: float = 0.0  # what the answers used cost when they were bought
    shortfall: int = 0

    def add(self, o: Tally) -> None:
        """Add ``o``'s counters to these, in place."""
        for k in ("requests", "cached", "retries", "asked", "returned", "accepted", "kept", "examples_rejected",
                  "cost_usd", "cost_usd_with_cache", "shortfall"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.rejected.update(o.rejected)
        self.usage.add(o.usage)

    @property
    def reject_fraction(self) -> float:
        """Rejected examples / (accepted + rejected); 0 when nothing was read."""
        total = self.accepted + self.examples_rejected
        return self.examples_rejected / total if total else 0.0

    def to_dict(self) -> dict:
        """The counters as the step's statistics write them (tokens, USD rounded to 6 places)."""
        return {
            "requests": self.requests, "cached": self.cached, "retries": self.retries,
            "examples_asked": self.asked, "examples_returned": self.returned, "accepted": self.accepted,
            "kept": self.kept, "shortfall": self.shortfall, "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "reject_fraction": round(self.reject_fraction, 4),
            "input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens,
            "cache_write_tokens": self.usage.cache_write_tokens, "cache_read_tokens": self.usage.cache_read_tokens,
            "cost_usd": round(self.cost_usd, 6), "cost_usd_with_cache": round(self.cost_usd_with_cache, 6),
        }

