"""The transport's parts on their own: retry-after parsing, the retry policy's bounds, how each
client classifies and describes real failures (the SDK's and httpx's own exceptions from the
stand-in servers), token accounting, and the rate limits."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import anthropic
import httpx
import pytest

from components.llm.anthropic_client import AnthropicTransport
from components.llm.errors import describe, is_transient_status
from components.llm.openai_compatible import HTTPStatusError, OpenAICompatibleTransport
from components.llm.ratelimit import RateLimits
from components.llm.retry import MAX_RETRY_AFTER_S, RetryPolicy, parse_retry_after
from tests.standins import AnthropicStandIn, OpenAIStandIn, anthropic_decision, chat_decision

BODY = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": '{"content": {"type": "text_post"}}'}],
        "tool_choice": {"type": "tool", "name": "moderate"}}


def test_parse_retry_after_reads_seconds_milliseconds_and_dates():
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    in_30s = parse_retry_after({"retry-after": formatdate(time.time() + 30, usegmt=True)})
    assert 28 <= in_30s <= 31
    assert parse_retry_after({"retry-after": "whenever"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_transient_statuses():
    assert [s for s in (400, 401, 403, 404, 408, 409, 422, 429, 500, 503, 529) if is_transient_status(s)] == [
        408, 409, 429, 500, 503, 529]


class Flaky(Exception):
    def __init__(self, after: float | None = None, transient: bool = True):
        super().__init__("flaky")
        self.after, self.transient = after, transient


class ByAttribute:
    """A classifier for ``Flaky``: what a transport says about its own exceptions."""

    @staticmethod
    def is_transient(exc):
        return isinstance(exc, Flaky) and exc.transient

    @staticmethod
    def retry_after(exc):
        return exc.after if isinstance(exc, Flaky) else None


def failing(times: int, **flaky):
    calls = []

    def fn():
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise Flaky(**flaky)
        return len(calls)

    return fn, calls


def test_retry_policy_bounds_tries_and_reraises_the_last_failure():
    policy = RetryPolicy(retries=2, backoff_base_s=0.001, backoff_max_s=0.01)
    fn, calls = failing(2)
    assert policy.call_sync(fn, ByAttribute) == 3
    fn, calls = failing(5)
    with pytest.raises(Flaky):
        policy.call_sync(fn, ByAttribute)
    assert len(calls) == policy.attempts == 3
    fn, calls = failing(5, transient=False)
    with pytest.raises(Flaky):
        policy.call_sync(fn, ByAttribute)
    assert len(calls) == 1


def test_retry_after_is_honoured_and_capped():
    policy = RetryPolicy(retries=1, backoff_base_s=5, backoff_max_s=5)  # backoff alone would wait up to 5 s
    fn, calls = failing(1, after=0.3)
    seen = []
    assert asyncio.run(policy.call(lambda: asyncio.sleep(0, fn()), ByAttribute, on_retry=seen.append)) == 2
    assert 0.29 <= calls[1] - calls[0] < 2 and len(seen) == 1 and isinstance(seen[0], Flaky)
    from components.llm.retry import WaitRetryAfter

    class State:
        class outcome:
            @staticmethod
            def exception():
                return Flaky(after=10_000)

    assert WaitRetryAfter(ByAttribute.retry_after, lambda s: 1.0)(State) == MAX_RETRY_AFTER_S
    State.outcome.exception = staticmethod(lambda: Flaky(after=-5))
    assert WaitRetryAfter(ByAttribute.retry_after, lambda s: 1.0)(State) == 0.0


@pytest.mark.parametrize("fault,transient,status,after", [
    ("429:7", True, 429, 7.0), ("529", True, 529, None), ("500", True, 500, None), ("401", False, 401, None)])
def test_anthropic_failures_are_classified_from_the_sdk_errors(fault, transient, status, after):
    with AnthropicStandIn(answer=anthropic_decision) as server:
        api = AnthropicTransport(api_key="k", base_url=server.url, timeout_s=5)
        server.faults.append(fault)
        with pytest.raises(anthropic.APIStatusError) as err:
            api.send_sync(api.sync_client(), BODY)
        assert len(server.log) == 1  # the SDK's own retries are off
    exc = err.value
    assert api.is_transient(exc) is transient and api.retry_after(exc) == after
    assert api.rejected_key(exc) is (status == 401) and describe(exc).startswith(f"HTTP {status}: ")


def test_anthropic_answer_tokens_and_an_unreachable_endpoint():
    with AnthropicStandIn(answer=anthropic_decision) as server:
        api = AnthropicTransport(api_key="k", base_url=server.url)
        raw = api.send_sync(api.sync_client(), BODY)
        headers = server.log[0]["headers"]  # x-api-key, or (this SDK version) a bearer token
        assert "k" in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    usage = api.usage({**raw, "usage": {**raw["usage"], "cache_read_input_tokens": 5}})
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (100, 20, 5)
    with pytest.raises(anthropic.APIConnectionError) as err:
        asyncio.run(_send_async(api))  # the server is gone
    assert api.is_transient(err.value) and describe(err.value).startswith("APIConnectionError")


async def _send_async(api: AnthropicTransport):
    async with api.async_client() as client:
        return await api.send(client, BODY)


@pytest.mark.parametrize("fault,transient,after", [("429:3", True, 3.0), ("503", True, None), ("401", False, None)])
def test_openai_compatible_failures_are_classified(fault, transient, after):
    with OpenAIStandIn(answer=chat_decision) as server:
        api = OpenAICompatibleTransport(server.url + "/v1", api_key="tok", timeout_s=5)
        server.faults.append(fault)
        with pytest.raises(HTTPStatusError) as err:
            api.send_sync(api.sync_client(), {"model": "m", "messages": BODY["messages"]})
        assert server.log[0]["headers"]["authorization"] == "Bearer tok"
    assert api.is_transient(err.value) is transient and api.retry_after(err.value) == after
    assert describe(err.value) == str(err.value) and str(err.value).startswith(f"HTTP {fault[:3]}: ")


def test_openai_compatible_tokens_timeouts_and_a_200_that_is_not_json():
    with OpenAIStandIn(answer=chat_decision) as server:
        api = OpenAICompatibleTransport(server.url + "/v1", timeout_s=0.2)
        raw = api.send_sync(api.sync_client(), {"model": "m", "messages": BODY["messages"]})
        assert (api.usage(raw).input_tokens, api.usage(raw).output_tokens) == (300, 30)
        server.delay_s = 0.6
        with pytest.raises(httpx.TimeoutException) as err:
            api.send_sync(api.sync_client(), {"model": "m", "messages": BODY["messages"]})
    assert api.is_transient(err.value) and api.timed_out(err.value) and api.unreachable(err.value)
    assert api._read(httpx.Response(200, text="<html>")) == {"choices": [], "invalid_body": "<html>"}


def test_rate_limits_pace_requests_and_tokens():
    async def three(limits: RateLimits, tokens: int) -> float:
        start = time.monotonic()
        for _ in range(3):
            await limits.acquire(tokens)
        return time.monotonic() - start

    assert asyncio.run(three(RateLimits(period_s=0.4), 10)) < 0.05  # no limits
    assert asyncio.run(three(RateLimits(requests_per_minute=2, period_s=0.4), 1)) >= 0.15
    assert asyncio.run(three(RateLimits(tokens_per_minute=100, period_s=0.4), 50)) >= 0.15
    assert asyncio.run(three(RateLimits(tokens_per_minute=100, period_s=0.4), 10_000)) >= 0.3  # capped at the budget
