"""Claude through the ``anthropic`` SDK: forced tool use, a cached system prompt, Message Batches.

Only how a request is written, sent and read lives here; prompts, validation, the cache, rate
limits, retries and cost are ``llm.py``'s, shared with the local backend. The SDK's own retries
are off (``max_retries=0``): ``llm.py`` retries every request once, with the rate limiter in
the loop and ``retry-after`` honoured, and counts the retries in the statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import anthropic

from components.generation.llm import (
    Answer, BackendUnavailableError, GenerationError, LLMBackend, MissingCredentialsError, Prompt, Usage,
    looks_like_refusal, parse_retry_after, tool_schema,
)
from components.generation.llm import prompt_data as _prompt_data
from components.core.params import ClaudeParams

KEY_HELP = (
    "generate.backend is claude but no API key is set. Set one in the environment "
    "(export ANTHROPIC_API_KEY=sk-ant-...; ANTHROPIC_BASE_URL points at another endpoint), "
    "or generate without a network: generate.backend: offline in params.yaml (or --backend offline)."
)
_TRANSIENT_BATCH_ERRORS = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}


class ClaudeTransport:
    name = "claude"
    supports_batches = True

    def __init__(self, params: ClaudeParams, api_key: str | None, base_url: str | None = None,
                 auth_token: str | None = None):
        self.params = params
        self.model = params.model
        self._credentials = {"api_key": api_key} if api_key else {"auth_token": auth_token}
        self._base_url = base_url
        self.endpoint = base_url or "https://api.anthropic.com"

    @contextlib.asynccontextmanager
    async def client(self):
        client = anthropic.AsyncAnthropic(**self._credentials, base_url=self._base_url, max_retries=0,
                                          timeout=self.params.timeout_s)
        try:
            yield client
        finally:
            await client.close()

    def request_body(self, prompt: Prompt, params: ClaudeParams) -> dict:
        tool = _prompt_data()["tool"]
        *head, last = prompt.system
        system = [{"type": "text", "text": t} for t in head]
        system.append({"type": "text", "text": last, "cache_control": {"type": "ephemeral"}})
        body = {
            "model": params.model,
            "max_tokens": params.max_tokens,
            "system": system,
            "tools": [{"name": tool["name"], "description": tool["description"], "input_schema": tool_schema()}],
            "tool_choice": {"type": "tool", "name": tool["name"]},
            "messages": [{"role": "user", "content": prompt.user}],
        }
        if params.temperature is not None:
            body["temperature"] = params.temperature
        return body

    async def send(self, client: anthropic.AsyncAnthropic, body: dict) -> dict:
        body = dict(body)
        # The SDK (API version 2026-10-21) has no sampling parameters; one set in params goes as is.
        extra = {"temperature": body.pop("temperature")} if "temperature" in body else None
        message = await client.messages.create(**body, extra_body=extra)
        return message.to_dict()

    def parse(self, raw: dict) -> Answer:
        u = raw.get("usage") or {}
        usage = Usage(int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0),
                      int(u.get("cache_creation_input_tokens") or 0), int(u.get("cache_read_input_tokens") or 0))
        blocks = raw.get("content") or []
        text = " ".join(b.get("text", "") for b in blocks if b.get("type") == "text").strip()
        calls = [b for b in blocks if b.get("type") == "tool_use" and b.get("name") == _prompt_data()["tool"]["name"]]
        if raw.get("stop_reason") == "refusal":
            return Answer(None, usage, refusal=text or "stop_reason refusal")
        if not calls:
            if looks_like_refusal(text):
                return Answer(None, usage, refusal=text)
            return Answer(None, usage, malformed=f"no {_prompt_data()['tool']['name']} tool call (stop_reason "
                                                 f"{raw.get('stop_reason')}): {text[:200]!r}")
        tool_input = calls[0].get("input")
        if not isinstance(tool_input, Mapping) or not isinstance(tool_input.get("examples"), list):
            why = "truncated at max_tokens" if raw.get("stop_reason") == "max_tokens" else "no examples list"
            return Answer(None, usage, malformed=f"tool input has {why}: {str(tool_input)[:200]}")
        return Answer(list(tool_input["examples"]), usage)

    # -- errors

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, (anthropic.APIConnectionError, anthropic.RateLimitError, anthropic.InternalServerError)):
            return True
        return isinstance(exc, anthropic.APIStatusError) and exc.status_code in (408, 409, 429) or (
            isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 500)

    def retry_after(self, exc: BaseException) -> float | None:
        response = getattr(exc, "response", None)
        return parse_retry_after(response.headers) if response is not None else None

    def unavailable(self, exc: BaseException, attempts: int) -> GenerationError:
        return BackendUnavailableError(
            f"the Claude API at {self.endpoint} still failed after {attempts} tries: {_describe(exc)}. Everything "
            "answered so far is cached; rerun the step later to continue, or lower generate.claude."
            "requests_per_minute / tokens_per_minute / concurrency."
        )

    def fatal(self, exc: BaseException) -> GenerationError | None:
        if isinstance(exc, anthropic.AuthenticationError):
            return MissingCredentialsError(f"the Claude API rejected the key ({_describe(exc)}); check ANTHROPIC_API_KEY")
        if isinstance(exc, anthropic.NotFoundError):
            return GenerationError(f"the Claude API does not know model {self.model!r} ({_describe(exc)}); "
                                   "set generate.claude.model to a model your key can use")
        if isinstance(exc, anthropic.APIStatusError):
            hint = ""
            if self.params.temperature is not None and "temperature" in _describe(exc):
                hint = "; remove generate.claude.temperature (this API version takes no sampling parameters)"
            return GenerationError(f"the Claude API refused the request: {_describe(exc)}{hint}")
        return None

    # -- Message Batches

    async def submit_batch(self, client: anthropic.AsyncAnthropic, items: list[tuple[str, dict]]) -> str:
        batch = await client.messages.batches.create(requests=[{"custom_id": k, "params": body} for k, body in items])
        return batch.id

    async def batch_status(self, client: anthropic.AsyncAnthropic, batch_id: str) -> dict:
        batch = await client.messages.batches.retrieve(batch_id)
        counts = batch.request_counts.to_dict() if batch.request_counts else {}
        return {"status": batch.processing_status, "counts": counts}

    async def batch_results(self, client: anthropic.AsyncAnthropic, batch_id: str) -> list[tuple[str, str, dict | None]]:
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

    def is_transient_batch_error(self, payload: dict | None) -> bool:
        error = (payload or {}).get("error") or {}
        return error.get("type") in _TRANSIENT_BATCH_ERRORS


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "api_message", None) or getattr(exc, "message", None) or str(exc)
    return f"HTTP {status}: {message}" if status else f"{type(exc).__name__}: {message}"


def claude_backend(params: ClaudeParams, seed: int, cache_dir: str | Path, environ: Mapping[str, str],
                   progress: bool | None = None) -> LLMBackend:
    """The Claude backend; stops before any work when no key is set."""
    api_key, auth_token = environ.get("ANTHROPIC_API_KEY"), environ.get("ANTHROPIC_AUTH_TOKEN")
    if not (api_key or auth_token):
        raise MissingCredentialsError(KEY_HELP)
    transport = ClaudeTransport(params, api_key, environ.get("ANTHROPIC_BASE_URL") or None, auth_token)
    return LLMBackend(transport, params, seed, cache_dir, progress)
