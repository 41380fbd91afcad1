"""Claude through the ``anthropic`` SDK: credentials, clients, one request, Message Batches.

The SDK's own retries are off (``max_retries=0``): every caller retries through ``retry``, so a
429, a 529 "overloaded" or a timeout is handled the same way everywhere and counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import anthropic

from components.llm.errors import MissingCredentialsError, describe, is_transient_status
from components.llm.retry import parse_retry_after
from components.llm.usage import Usage

DEFAULT_ENDPOINT = "https://api.anthropic.com"
TRANSIENT_BATCH_ERRORS = frozenset({"api_error", "overloaded_error", "rate_limit_error", "timeout_error"})


def missing_key_message(who: str, otherwise: str) -> str:
    """The message for a missing key: ``"<who> but no API key is set. Set one in the environment
    (export ANTHROPIC_API_KEY=...; ANTHROPIC_BASE_URL ...), <otherwise>."``"""
    return (f"{who} but no API key is set. Set one in the environment (export ANTHROPIC_API_KEY=sk-ant-...; "
            f"ANTHROPIC_BASE_URL points at another endpoint), {otherwise}.")


@dataclass(frozen=True)
class AnthropicTransport:
    """One Claude endpoint. ``api_key`` (sent as x-api-key) or ``auth_token`` (a bearer token);
    ``base_url`` None means the public API; ``timeout_s`` bounds one HTTP request."""

    api_key: str | None = None
    auth_token: str | None = None
    base_url: str | None = None
    timeout_s: float = 120.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, who: str, otherwise: str, api_key: str | None = None,
                     base_url: str | None = None, timeout_s: float = 120.0) -> AnthropicTransport:
        """Credentials from the arguments, else ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_AUTH_TOKEN`` /
        ``ANTHROPIC_BASE_URL`` in ``environ``. Raises ``MissingCredentialsError`` (its message made
        by ``missing_key_message(who, otherwise)``) before any request when there is no key."""
        key = api_key or environ.get("ANTHROPIC_API_KEY") or None
        token = None if key else environ.get("ANTHROPIC_AUTH_TOKEN") or None
        if not (key or token):
            raise MissingCredentialsError(missing_key_message(who, otherwise))
        return cls(key, token, base_url or environ.get("ANTHROPIC_BASE_URL") or None, timeout_s)

    @property
    def endpoint(self) -> str:
        """The API's base URL, for messages."""
        return self.base_url or DEFAULT_ENDPOINT

    def _options(self) -> dict:
        credentials = {"api_key": self.api_key} if self.api_key else {"auth_token": self.auth_token}
        return dict(**credentials, base_url=self.base_url, max_retries=0, timeout=self.timeout_s)

    @contextlib.asynccontextmanager
    async def async_client(self):
        """An ``anthropic.AsyncAnthropic`` for ``send`` (open it inside the event loop that uses it)."""
        client = anthropic.AsyncAnthropic(**self._options())
        try:
            yield client
        finally:
            await client.close()

    def sync_client(self) -> anthropic.Anthropic:
        """An ``anthropic.Anthropic`` for ``send_sync``."""
        return anthropic.Anthropic(**self._options())

    @staticmethod
    def _split(body: dict) -> tuple[dict, dict | None]:
        # The SDK (API version 2026-10-21) has no sampling parameters; one a caller sets goes as is.
        body = dict(body)
        return body, ({"temperature": body.pop("temperature")} if "temperature" in body else None)

    async def send(self, client: anthropic.AsyncAnthropic, body: dict) -> dict:
        """POST /v1/messages with ``body`` (the Messages API's fields); the message as JSON.
        Raises the SDK's errors (``anthropic.APIError`` and subclasses)."""
        body, extra = self._split(body)
        message = await client.messages.create(**body, extra_body=extra)
        return message.to_dict()

    def send_sync(self, client: anthropic.Anthropic, body: dict) -> dict:
        """``send`` for the synchronous client."""
        body, extra = self._split(body)
        return client.messages.create(**body, extra_body=extra).to_dict()

    # -- reading answers and failures

    @staticmethod
    def usage(raw: dict) -> Usage:
        """The tokens of one message (JSON), prompt-cache writes and reads included."""
        u = raw.get("usage") or {}
        return Usage(int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0),
                     int(u.get("cache_creation_input_tokens") or 0), int(u.get("cache_read_input_tokens") or 0))

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        """Connection errors and timeouts, 408, 409, 429 and every 5xx (529 overloaded included)."""
        if isinstance(exc, anthropic.APIConnectionError):
            return True
        return isinstance(exc, anthropic.APIStatusError) and is_transient_status(exc.status_code)

    @staticmethod
    def retry_after(exc: BaseException) -> float | None:
        """Seconds the server asked to wait (``retry-after``), if it said."""
        response = getattr(exc, "response", None)
        return parse_retry_after(response.headers) if response is not None else None

    @staticmethod
    def rejected_key(exc: BaseException) -> bool:
        """The endpoint refused the credentials (HTTP 401)."""
        return isinstance(exc, anthropic.AuthenticationError)

    @staticmethod
    def unknown_model(exc: BaseException) -> bool:
        """HTTP 404: usually a model the key cannot use."""
        return isinstance(exc, anthropic.NotFoundError)

    @staticmethod
    def refused(exc: BaseException) -> bool:
        """Any other HTTP error answer (a request the API will not take as written)."""
        return isinstance(exc, anthropic.APIStatusError)

    describe = staticmethod(describe)

    # -- Message Batches

    async def submit_batch(self, client: anthropic.AsyncAnthropic, items: list[tuple[str, dict]]) -> str:
        """Submit ``(custom_id, body)`` requests as one Message Batch; its id."""
        batch = await client.messages.batches.create(requests=[{"custom_id": k, "params": body} for k, body in items])
        return batch.id

    async def batch_status(self, client: anthropic.AsyncAnthropic, batch_id: str) -> dict:
        """``{"status": "in_progress" | "canceling" | "ended", "counts": {processing, succeeded, ...}}``."""
        batch = await client.messages.batches.retrieve(batch_id)
        counts = batch.request_counts.to_dict() if batch.request_counts else {}
        return {"status": batch.processing_status, "counts": counts}

    async def batch_results(self, client: anthropic.AsyncAnthropic, batch_id: str) -> list[tuple[str, str, dict | None]]:
        """``(custom_id, succeeded | errored | canceled | expired, message or error JSON or None)`` per request."""
        out = []
        async for row in await client.messages.batches.results(batch_id):
            result = row.result
            if result.type == "succeeded":
                out.append((row.custom_id, "succeeded", result.message.to_dict()))
            elif result.type == "errored":
                out.append((row.custom_id, "errored", result.error.to_dict()))
            else:
                out.append((row.custom_id, result.type, None))
        return out

    @staticmethod
    def is_transient_batch_error(payload: dict | None) -> bool:
        """Whether an errored batch result is worth resubmitting (overloaded, rate limit, server error)."""
        error = (payload or {}).get("error") or {}
        return error.get("type") in TRANSIENT_BATCH_ERRORS
