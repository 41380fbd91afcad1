"""Any OpenAI-compatible chat-completions server (llama.cpp server, vLLM, Ollama) over httpx.

One request is ``POST <base_url>/chat/completions``; an HTTP error answer raises ``HTTPStatusError``
(status, body, headers), a dead or slow server raises httpx's own errors.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from components.llm import DEFAULT_LOCAL_BASE_URL
from components.llm.errors import describe, is_transient_status
from components.llm.retry import parse_retry_after
from components.llm.usage import Usage

START_HELP = (
    "start one (llama.cpp: `llama-server -m model.gguf --port 8080`; Ollama: `ollama serve`, base_url "
    "http://127.0.0.1:11434/v1; vLLM: `vllm serve MODEL`, base_url http://127.0.0.1:8000/v1)"
)


class HTTPStatusError(Exception):
    """An HTTP error answer: ``status``, the body text and the response headers."""

    def __init__(self, status: int, body: str, headers: Mapping[str, str]):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status, self.body, self.headers = status, body, headers


@dataclass(frozen=True)
class OpenAICompatibleTransport:
    """One chat-completions server at ``base_url`` (ending in /v1). ``api_key``: a bearer token if
    the server wants one; ``timeout_s`` bounds one HTTP request; ``concurrency`` caps connections."""

    base_url: str = DEFAULT_LOCAL_BASE_URL
    api_key: str | None = None
    timeout_s: float = 300.0
    concurrency: int = 1

    @property
    def endpoint(self) -> str:
        """The base URL without a trailing slash, for messages."""
        return self.base_url.rstrip("/")

    def _options(self) -> dict:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return dict(base_url=self.endpoint + "/", timeout=self.timeout_s, headers=headers,
                    limits=httpx.Limits(max_connections=self.concurrency))

    @contextlib.asynccontextmanager
    async def async_client(self):
        """An ``httpx.AsyncClient`` for ``send`` (open it inside the event loop that uses it)."""
        async with httpx.AsyncClient(**self._options()) as client:
            yield client

    def sync_client(self) -> httpx.Client:
        """An ``httpx.Client`` for ``send_sync``."""
        return httpx.Client(**self._options())

    @staticmethod
    def _read(response: httpx.Response) -> dict:
        if response.status_code >= 400:
            raise HTTPStatusError(response.status_code, response.text, response.headers)
        try:
            return response.json()
        except json.JSONDecodeError:
            # A server that answers 200 with a non-JSON body: keep it, the caller's parser rejects it.
            return {"choices": [], "invalid_body": response.text[:2000]}

    async def send(self, client: httpx.AsyncClient, body: dict) -> dict:
        """POST chat/completions with ``body``; the answer as JSON. Raises ``HTTPStatusError`` on an
        HTTP error answer and httpx's ``TransportError`` (timeouts included) when the server is not there."""
        return self._read(await client.post("chat/completions", json=body))

    def send_sync(self, client: httpx.Client, body: dict) -> dict:
        """``send`` for the synchronous client."""
        return self._read(client.post("chat/completions", json=body))

    # -- reading answers and failures

    @staticmethod
    def usage(raw: dict) -> Usage:
        """The tokens of one answer (``prompt_tokens``, ``completion_tokens``)."""
        u = raw.get("usage") or {}
        return Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        """Connection errors and timeouts, 408, 409, 429 and every 5xx."""
        if isinstance(exc, HTTPStatusError):
            return is_transient_status(exc.status)
        return isinstance(exc, (httpx.TransportError, httpx.TimeoutException))

    @staticmethod
    def retry_after(exc: BaseException) -> float | None:
        """Seconds the server asked to wait (``retry-after``), if it said."""
        return parse_retry_after(exc.headers) if isinstance(exc, HTTPStatusError) else None

    @staticmethod
    def timed_out(exc: BaseException) -> bool:
        """The server did not answer within ``timeout_s``."""
        return isinstance(exc, httpx.TimeoutException)

    @staticmethod
    def unreachable(exc: BaseException) -> bool:
        """No answer at all: connection refused, reset, DNS (timeouts included)."""
        return isinstance(exc, httpx.TransportError)

    describe = staticmethod(describe)
