"""Claude as generation speaks it: forced tool use and a cached system prompt.

Only how a generation request is written and its answer read, and what a failure means to
the user, live here. The client, sending, retries, rate limits and token accounting are the
shared transport's (``components/llm``); prompts, validation, the cache and cost are the
generation modules' (``llm.py`` and its neighbours), shared with the local backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from components.core.params import ClaudeParams
from components.generation.answers import Answer, looks_like_refusal
from components.generation.errors import BackendUnavailableError, GenerationError, MissingCredentialsError
from components.generation.fetch import Dialect
from components.generation.llm import LLMBackend
from components.generation.prompts import Prompt, prompt_data, tool_schema
from components.llm.anthropic_client import AnthropicTransport, missing_key_message
from components.llm.errors import describe

KEY_WHO = "generate.backend is claude"
KEY_OTHERWISE = "or generate without a network: generate.backend: offline in params.yaml (or --backend offline)"
KEY_HELP = missing_key_message(KEY_WHO, KEY_OTHERWISE)


class ClaudeDialect(Dialect):
    """Generation requests to Claude over ``api`` (an ``AnthropicTransport``)."""

    name = "claude"
    supports_batches = True

    def request_body(self, prompt: Prompt, params: ClaudeParams) -> dict:
        """The Messages API body: system blocks (the last one cached), the forced answer tool, the user turn."""
        tool = prompt_data()["tool"]
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

    def parse(self, raw: dict) -> Answer:
        """The examples of the tool call in a message (JSON), or why there are none."""
        usage = self.api.usage(raw)
        name = prompt_data()["tool"]["name"]
        blocks = raw.get("content") or []
        text = " ".join(b.get("text", "") for b in blocks if b.get("type") == "text").strip()
        calls = [b for b in blocks if b.get("type") == "tool_use" and b.get("name") == name]
        if raw.get("stop_reason") == "refusal":
            return Answer(None, usage, refusal=text or "stop_reason refusal")
        if not calls:
            if looks_like_refusal(text):
                return Answer(None, usage, refusal=text)
            return Answer(None, usage, malformed=f"no {name} tool call (stop_reason "
                                                 f"{raw.get('stop_reason')}): {text[:200]!r}")
        tool_input = calls[0].get("input")
        if not isinstance(tool_input, Mapping) or not isinstance(tool_input.get("examples"), list):
            why = "truncated at max_tokens" if raw.get("stop_reason") == "max_tokens" else "no examples list"
            return Answer(None, usage, malformed=f"tool input has {why}: {str(tool_input)[:200]}")
        return Answer(list(tool_input["examples"]), usage)

    def unavailable(self, exc: BaseException, attempts: int) -> GenerationError:
        return BackendUnavailableError(
            f"the Claude API at {self.endpoint} still failed after {attempts} tries: {describe(exc)}. Everything "
            "answered so far is cached; rerun the step later to continue, or lower generate.claude."
            "requests_per_minute / tokens_per_minute / concurrency."
        )

    def fatal(self, exc: BaseException) -> GenerationError | None:
        if self.api.rejected_key(exc):
            return MissingCredentialsError(f"the Claude API rejected the key ({describe(exc)}); check ANTHROPIC_API_KEY")
        if self.api.unknown_model(exc):
            return GenerationError(f"the Claude API does not know model {self.model!r} ({describe(exc)}); "
                                   "set generate.claude.model to a model your key can use")
        if self.api.refused(exc):
            hint = ""
            if self.params.temperature is not None and "temperature" in describe(exc):
                hint = "; remove generate.claude.temperature (this API version takes no sampling parameters)"
            return GenerationError(f"the Claude API refused the request: {describe(exc)}{hint}")
        return None


def claude_backend(params: ClaudeParams, seed: int, cache_dir: str | Path, environ: Mapping[str, str],
                   progress: bool | None = None) -> LLMBackend:
    """The Claude backend, its key from ``environ`` (ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN,
    ANTHROPIC_BASE_URL). Raises MissingCredentialsError before any work when no key is set."""
    api = AnthropicTransport.from_environ(environ, who=KEY_WHO, otherwise=KEY_OTHERWISE, timeout_s=params.timeout_s)
    return LLMBackend(ClaudeDialect(params, api), params, seed, cache_dir, progress)
