"""Client-side pacing: requests and tokens per minute (aiolimiter) and requests in flight.

The limits are yours (your organisation's API tier); the server's own 429s are handled by
``retry``. A limit of 0 means none.
"""

from __future__ import annotations

import asyncio

from aiolimiter import AsyncLimiter


class RateLimits:
    """``requests_per_minute`` and ``tokens_per_minute`` leaky buckets over ``period_s`` seconds
    (60; shorter only in tests) and at most ``concurrency`` requests at once. Create it inside
    the event loop that uses it."""

    def __init__(self, requests_per_minute: int = 0, tokens_per_minute: int = 0, concurrency: int = 1,
                 period_s: float = 60.0):
        self.rpm = AsyncLimiter(requests_per_minute, period_s) if requests_per_minute else None
        self.tpm = AsyncLimiter(tokens_per_minute, period_s) if tokens_per_minute else None
        self.in_flight = asyncio.Semaphore(concurrency)

    @classmethod
    def of(cls, params) -> RateLimits:
        """From any settings object with ``requests_per_minute``, ``tokens_per_minute``, ``concurrency``."""
        return cls(params.requests_per_minute, params.tokens_per_minute, params.concurrency)

    async def acquire(self, tokens: int) -> None:
        """Wait until one more request of about ``tokens`` tokens (input + expected output) fits
        both budgets; a request bigger than the whole token budget takes all of it."""
        if self.rpm:
            await self.rpm.acquire()
        if self.tpm:
            await self.tpm.acquire(min(tokens, self.tpm.max_rate))
