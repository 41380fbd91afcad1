"""Getting the answers of planned requests: from the cache, else from the model.

Missing answers are fetched concurrently under the requests- and tokens-per-minute limits,
retried on transient failures (``components/llm``: one retry policy for every caller), cached
as they arrive; or, for Claude with ``use_batches``, through one Message Batch (``batches.py``).
What differs between Claude and a local server is a ``Dialect``: how a request is written and an
answer read, and what a failure means to the user; the shared transport does the rest.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from components.core.params import LLMParams
from components.generation.answers import Answer, validate_answer
from components.generation.base import Job
from components.generation.cache import ResponseCache
from components.generation.errors import GenerationError
from components.generation.prompts import Prompt
from components.llm.ratelimit import RateLimits
from components.llm.retry import RetryPolicy
from components.llm.usage import Price

log = logging.getLogger(__name__)


class Dialect:
    """One API as generation speaks it (``params``: its settings), over a shared transport
    (``api``: a components.llm AnthropicTransport or OpenAICompatibleTransport)."""

    name: str  # the records' metadata.source, and part of every cache key
    supports_batches: bool = False

    def __init__(self, params: LLMParams, api: Any):
        self.params = params
        self.model = params.model
        self.api = api
        self.endpoint = api.endpoint

    def request_body(self, prompt: Prompt, params: LLMParams) -> dict:
        """The request body of one prompt; what is sent, and so what the cache key addresses."""
        raise NotImplementedError

    def parse(self, raw: dict) -> Answer:
        """The examples (or refusal, or why malformed) and tokens of one raw answer."""
        raise NotImplementedError

    def unavailable(self, exc: BaseException, attempts: int) -> GenerationError:
        """The error for a transient failure that outlasted the retries."""
        raise NotImplementedError

    def fatal(self, exc: BaseException) -> GenerationError | None:
        """A clear error for a non-transient failure (None: raise it as it is)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Planned:
    """One request of a job: its index, words, body and cache key."""

    job: Job
    index: int
    prompt: Prompt
    body: dict
    key: str


@dataclass
class Fetcher:
    """Fetches and caches answers for one backend; remembers what this run fetched (``fresh``)
    and how many retries each job needed (``retries``)."""

    dialect: Dialect
    params: LLMParams
    cache: ResponseCache
    price: Price | None
    progress: bool | None = None
    fresh: set[str] = field(default_factory=set)
    retries: Counter = field(default_factory=Counter)

    @property
    def name(self) -> str:
        return self.dialect.name

    def fetch(self, planned: list[Planned]) -> dict[str, dict]:
        """Every planned request's cache entry: from the cache, else fetched (and cached as it arrives).
        A request that failed for good in a batch has no entry."""
        entries: dict[str, dict] = {}
        missing: dict[str, Planned] = {}
        for item in planned:
            entry = self.cache.get(item.key)
            if entry is not None:
                entries[item.key] = entry
            else:
                missing.setdefault(item.key, item)
        if missing:
            log.info("%s %s: %d requests (%d answers from the cache)", self.name, self.dialect.model,
                     len(missing), len(entries))
            if getattr(self.params, "use_batches", False) and self.dialect.supports_batches:
                from components.generation.batches import fetch_batches

                run_coroutine(fetch_batches(self, missing))
            else:
                run_coroutine(self._fetch_concurrently(list(missing.values())))
            for key in missing:
                entry = self.cache.get(key)
                if entry is not None:
                    entries[key] = entry
        return entries

    async def call(self, fn, job: Job | None = None):
        """``await fn()`` with the retries; a failure becomes a GenerationError that says what to do."""
        api = self.dialect.api
        policy = RetryPolicy.of(self.params)

        def count(_exc) -> None:
            if job is not None:
                self.retries[job] += 1

        try:
            return await policy.call(fn, api, name=self.name, on_retry=count)
        except GenerationError:
            raise
        except Exception as exc:
            if api.is_transient(exc):
                raise self.dialect.unavailable(exc, policy.attempts) from exc
            clear = self.dialect.fatal(exc)
            if clear is not None:
                raise clear from exc
            raise

    def bar(self, total: int, desc: str):
        """A progress bar (tqdm) in requests; hidden when ``progress`` is False or not a terminal."""
        return tqdm(total=total, desc=desc, unit="req", disable=None if self.progress is None else not self.progress,
                    dynamic_ncols=True, leave=True)

    def keep(self, key: str, entry: dict) -> None:
        """Cache an answer (or a final error) this run fetched."""
        self.cache.put(key, {"backend": self.name, "model": self.dialect.model, **entry})
        self.fresh.add(key)

    async def _fetch_concurrently(self, items: list[Planned]) -> None:
        limits = RateLimits.of(self.params)
        shown = {"examples": 0, "rejects": 0, "usd": 0.0, "seen": {}}
        bar = self.bar(len(items), f"{self.name} {self.dialect.model}")

        async with self.dialect.api.async_client() as client:
            async def attempt(item: Planned) -> dict:
                await limits.acquire(item.prompt.estimated_tokens())
                return await self.dialect.api.send(client, item.body)

            async def one(item: Planned) -> None:
                async with limits.in_flight:
                    raw = await self.call(lambda: attempt(item), item.job)
                self.keep(item.key, {"request": item.body, "response": raw})
                self._show(bar, item, raw, shown)

            try:
                async with asyncio.TaskGroup() as tg:
                    for item in items:
                        tg.create_task(one(item))
            except BaseExceptionGroup as eg:
                raise first_error(eg) from None
            finally:
                bar.close()

    def _show(self, bar, item: Planned, raw: dict, shown: dict) -> None:
        """Progress: requests, examples and rejects so far (validated in arrival order), spend."""
        answer = self.dialect.parse(raw)
        seen = shown["seen"].setdefault((item.job.kind, item.job.category), set())
        good, bad = validate_answer(answer, item.prompt, seen)
        shown["examples"] += len(good)
        shown["rejects"] += len(bad)
        if self.price is not None:
            shown["usd"] += self.price.cost(answer.usage)
        bar.set_postfix(examples=shown["examples"], rejects=shown["rejects"], usd=f"{shown['usd']:.4f}", refresh=False)
        bar.update(1)


def run_coroutine(coro):
    """asyncio.run, also from a thread whose event loop is already running (a Prefect task)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="llm-generate")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def first_error(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (a TaskGroup's failure)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
