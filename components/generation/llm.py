"""The LLM generation backend: one copy of the logic for every model (Claude: ``claude.py``;
OpenAI-compatible local servers: ``local.py``, each a ``Dialect`` over ``components/llm``).

How a step runs on an LLM:

1. Each ``Job`` (a category's positives with given co-labels, its hard negatives, innocuous
   text) becomes requests of about ``examples_per_request`` examples (``prompts.py``).
2. A request is keyed by the sha256 of what is sent and the seed (``cache.py``). An answer
   already in the cache is never asked for again.
3. Missing answers are fetched concurrently under rate limits with retries, or through one
   Message Batch (``fetch.py``, ``batches.py``).
4. Answers are read in request order and every example is validated (``answers.py``). Jobs
   still short get top-up rounds (new indices) up to ``max_rounds``; a job with too many
   rejects or too short fails the step (``TooManyLLMRejectsError``). Counters: ``tally.py``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from components.core.params import LLMParams
from components.generation.answers import Rejected, validate_answer
from components.generation.base import Draft, Job
from components.generation.cache import ResponseCache, request_key
from components.generation.errors import TooManyLLMRejectsError
from components.generation.fetch import Dialect, Fetcher, Planned
from components.generation.prompts import build_prompt
from components.generation.tally import Tally
from components.llm.usage import price_for

log = logging.getLogger(__name__)


@dataclass
class _JobState:
    job: Job
    next_index: int = 0
    drafts: list = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    rejects: list = field(default_factory=list)


class LLMBackend:
    """A generation backend (``GenerationBackend``) over any ``Dialect``. ``params``: the
    backend's settings (``generate.claude`` or ``generate.local``); ``cache_dir``: the answer
    cache; ``progress``: show progress bars (None: when on a terminal)."""

    def __init__(self, dialect: Dialect, params: LLMParams, seed: int, cache_dir: str | Path,
                 progress: bool | None = None):
        self.dialect = dialect
        self.params = params
        self.seed = seed
        self.name = dialect.name
        self.price = price_for(dialect.model, params.pricing or None)
        self.fetcher = Fetcher(dialect, params, ResponseCache(cache_dir), self.price, progress)
        self.cache = self.fetcher.cache
        self._states: dict[Job, _JobState] = {}

    # -- the GenerationBackend protocol

    def positives(self, category: str, count: int, co_labels: tuple[str, ...] = ()) -> list[Draft]:
        return self._drafts(Job("positives", category, count, tuple(co_labels)))

    def negatives(self, category: str, count: int) -> list[Draft]:
        return self._drafts(Job("negatives", category, count))

    def innocuous(self, count: int) -> list[Draft]:
        return self._drafts(Job("innocuous", None, count))

    def prefetch(self, jobs: list[Job]) -> None:
        """Fetch every job of a step together (one batch, or one pool of concurrent requests)."""
        self._run([j for j in jobs if j.count > 0 and j not in self._states])

    def llm_meta(self) -> dict:
        """What the step's ``llm`` statistics say of this backend besides its counters."""
        return {"backend": self.name, "model": self.dialect.model, "cache_dir": str(self.cache.root),
                "priced": self.price is not None}

    def tallies(self, jobs: list[Job]) -> tuple[dict[str, Tally], list[dict]]:
        """The counters of the jobs this backend ran, per category (``innocuous`` for the innocuous
        job), and one row per rejected example or answer, in job order."""
        per_category: dict[str, Tally] = {}
        rejects = []
        for job in jobs:
            st = self._states.get(job)
            if st is None:
                continue
            per_category.setdefault(job.category or "innocuous", Tally()).add(st.tally)
            rejects.extend(st.rejects)
        return per_category, rejects

    # -- rounds

    def _drafts(self, job: Job) -> list[Draft]:
        if job.count <= 0:
            return []
        if job not in self._states:
            self._run([job])
        return list(self._states[job].drafts)

    def _plan(self, st: _JobState, need: int, first: bool) -> list[Planned]:
        per = self.params.examples_per_request
        ask = math.ceil(need * (1 + self.params.overshoot)) if first else max(need, 1)
        planned = []
        while ask > 0:
            n = min(per, ask)
            prompt = build_prompt(st.job, st.next_index, n, self.seed)
            body = self.dialect.request_body(prompt, self.params)
            planned.append(Planned(st.job, st.next_index, prompt, body, request_key(self.name, body, self.seed)))
            st.next_index += 1
            ask -= n
        return planned

    def _run(self, jobs: list[Job]) -> None:
        states = [self._states.setdefault(j, _JobState(j)) for j in jobs]
        accepted: dict[Job, list] = {st.job: [] for st in states}
        seen: dict[tuple, set[str]] = {}
        for rnd in range(self.params.max_rounds):
            planned = []
            for st in states:
                need = st.job.count - len(accepted[st.job])
                if need > 0:
                    planned.extend(self._plan(st, need, first=rnd == 0))
            if not planned:
                break
            if rnd:
                log.info("%s: top-up round %d, %d requests", self.name, rnd + 1, len(planned))
            answers = self.fetcher.fetch(planned)
            for item in planned:
                st = self._states[item.job]
                self._read(st, item, answers.get(item.key), accepted[item.job],
                           seen.setdefault((item.job.kind, item.job.category), set()))
        for st in states:
            st.tally.retries += self.fetcher.retries.pop(st.job, 0)
            got = accepted[st.job]
            st.drafts = got[: st.job.count]
            st.tally.kept = len(st.drafts)
            st.tally.shortfall = max(0, st.job.count - len(st.drafts))
        self._check(states)

    def _read(self, st: _JobState, item: Planned, entry: dict | None, accepted: list, seen: set[str]) -> None:
        t = st.tally
        fresh = item.key in self.fetcher.fresh
        if entry is None:  # a batch request that failed for good
            self._reject(st, item, Rejected("errored", "no answer (the request failed)", None, item.prompt.count))
            return
        if "error" in entry:
            t.requests += fresh
            self._reject(st, item, Rejected("errored", json.dumps(entry["error"])[:300], None, item.prompt.count))
            return
        answer = self.dialect.parse(entry["response"])
        t.requests += fresh
        t.cached += not fresh
        t.asked += item.prompt.count
        t.returned += len(answer.examples) if isinstance(answer.examples, list) else 0
        t.usage.add(answer.usage)
        if self.price is not None:
            usd = self.price.cost(answer.usage, batch=bool(entry.get("batch")))
            t.cost_usd_with_cache += usd
            t.cost_usd += usd if fresh else 0.0
        good, bad = validate_answer(answer, item.prompt, seen)
        t.accepted += len(good)
        for r in bad:
            self._reject(st, item, r)
        for text, subtype in good:
            accepted.append(Draft(
                text, item.prompt.audience, item.prompt.surface, labels=item.prompt.expected, kind=item.prompt.kind,
                extra={"subtype": subtype, "model": self.dialect.model, "request": item.key[:16]},
            ))

    def _reject(self, st: _JobState, item: Planned, r: Rejected) -> None:
        st.tally.rejected[r.reason] += 1
        st.tally.examples_rejected += r.examples_lost
        st.rejects.append({
            "category": item.job.category, "kind": item.prompt.kind, "co_labels": list(item.job.co_labels),
            "request": item.key[:16], "index": item.index, "reason": r.reason, "detail": r.detail, "raw": r.raw,
        })

    def _check(self, states: list[_JobState]) -> None:
        p = self.params
        for st in states:
            t, job = st.tally, st.job
            what = f"{job.kind} of {job.category or 'innocuous'}" + (f" with {'+'.join(job.co_labels)}" if job.co_labels else "")
            if t.reject_fraction > p.max_reject_fraction:
                top = ", ".join(f"{k} {v}" for k, v in t.rejected.most_common(3))
                raise TooManyLLMRejectsError(
                    f"{what}: {t.reject_fraction:.0%} of the examples were rejected ({top}) > allowed "
                    f"{p.max_reject_fraction:.0%} (generate.{self._section}.max_reject_fraction); the reasons are in "
                    "the step's _rejects.jsonl. Fix the prompt data (components/resources/prompts) or the model; "
                    "the answers stay cached."
                )
            if t.shortfall > job.count * p.max_shortfall:
                raise TooManyLLMRejectsError(
                    f"{what}: only {t.kept} of {job.count} examples after {p.max_rounds} rounds (rejects: "
                    f"{dict(t.rejected)}); raise generate.{self._section}.max_rounds or .overshoot and rerun "
                    "(answers so far are cached)."
                )
            if t.shortfall:
                log.warning("%s: %d of %d examples (short by %d)", what, t.kept, job.count, t.shortfall)

    @property
    def _section(self) -> str:
        return "claude" if self.name == "claude" else "local"
