"""Bounded retries of transient failures, one policy for every caller of a model API.

A failure is retried when the transport calls it transient (``is_transient``); the wait before
the next try is the server's ``retry-after`` (or ``retry-after-ms``) when it sent one, capped at
``MAX_RETRY_AFTER_S``, else exponential backoff with full jitter (tenacity). After the last try
the failure is raised as it is: the caller decides what message it becomes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 600.0
T = TypeVar("T")


class Classifier(Protocol):
    """What the retry loop asks of a transport about one failure."""

    def is_transient(self, exc: BaseException) -> bool: ...

    def retry_after(self, exc: BaseException) -> float | None: ...


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date);
    None when neither is there or readable. May be negative for a date in the past."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None


class WaitRetryAfter:
    """tenacity wait: ``read(exc)`` seconds when the server said (clamped to 0..MAX_RETRY_AFTER_S),
    else ``fallback(retry_state)``."""

    def __init__(self, read: Callable[[BaseException], float | None], fallback):
        self.read, self.fallback = read, fallback

    def __call__(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        after = self.read(exc) if exc is not None else None
        if after is not None:
            return min(max(after, 0.0), MAX_RETRY_AFTER_S)
        return self.fallback(retry_state)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more tries after the first (so ``retries + 1`` in all); backoff
    ``backoff_base_s * 2^attempt`` seconds with full jitter, at most ``backoff_max_s``."""

    retries: int = 2
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0

    @classmethod
    def of(cls, params: Any) -> RetryPolicy:
        """From any settings object with ``retries``, ``backoff_base_s`` and ``backoff_max_s`` (e.g. LLMParams)."""
        return cls(params.retries, params.backoff_base_s, params.backoff_max_s)

    @property
    def attempts(self) -> int:
        """Tries in all: the first and the retries."""
        return self.retries + 1

    def _settings(self, classifier: Classifier, name: str, on_retry: Callable[[BaseException | None], None] | None):
        def before_sleep(state) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("%s: retry %d after %s", name, state.attempt_number, type(exc).__name__ if exc else "?")
            if on_retry is not None:
                on_retry(exc)

        return dict(
            retry=retry_if_exception(classifier.is_transient),
            stop=stop_after_attempt(self.attempts),
            wait=WaitRetryAfter(classifier.retry_after,
                                wait_random_exponential(multiplier=self.backoff_base_s, max=self.backoff_max_s)),
            before_sleep=before_sleep,
            reraise=True,
        )

    async def call(self, fn: Callable[[], Awaitable[T]], classifier: Classifier, *, name: str = "llm",
                   on_retry: Callable[[BaseException | None], None] | None = None) -> T:
        """``await fn()``, retried while ``classifier.is_transient``; the last failure is re-raised.
        ``on_retry(exc)`` runs before each wait (for counting); ``name`` labels the log lines."""
        async for attempt in AsyncRetrying(**self._settings(classifier, name, on_retry)):
            with attempt:
                return await fn()
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    def call_sync(self, fn: Callable[[], T], classifier: Classifier, *, name: str = "llm",
                  on_retry: Callable[[BaseException | None], None] | None = None) -> T:
        """``fn()`` with the same retries as ``call``, for synchronous clients."""
        return Retrying(**self._settings(classifier, name, on_retry))(fn)
