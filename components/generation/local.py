"""An OpenAI-compatible chat-completions server (llama.cpp server, vLLM, Ollama) as generation speaks it.

The same prompts, JSON answer, cache, validation, retries and statistics as Claude; only the
request and the answer's shape differ. Sending, retries and the client are the shared
transport's (``components/llm/openai_compatible.py``). A dead or slow server fails after
``generate.local.retries`` retries with an error naming the URL and how to start one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from components.core.params import LocalParams
from components.generation.answers import Answer, looks_like_refusal
from components.generation.errors import BackendUnavailableError, GenerationError
from components.generation.fetch import Dialect
from components.generation.llm import LLMBackend
from components.generation.prompts import Prompt, prompt_data, tool_schema
from components.llm.openai_compatible import START_HELP, HTTPStatusError, OpenAICompatibleTransport

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_START_HELP = f"{START_HELP} and point generate.local.base_url at it, or generate without a model: generate.backend: offline"


class LocalDialect(Dialect):
    """Generation requests to a chat-completions server over ``api`` (an ``OpenAICompatibleTransport``)."""

    name = "local_llm"

    def request_body(self, prompt: Prompt, params: LocalParams) -> dict:
        """The chat-completions body: one system message (prompt blocks + JSON instructions), the user turn."""
        d = prompt_data()
        system = "\n\n".join((*prompt.system, d["json_instructions"].strip()))
        body = {
            "model": params.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt.user}],
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
        }
        if params.response_format == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": d["tool"]["name"], "strict": True, "schema": tool_schema()}}
        elif params.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def parse(self, raw: dict) -> Answer:
        """The examples of the first choice's JSON (bare or fenced), or why there are none."""
        usage = self.api.usage(raw)
        choices = raw.get("choices") or []
        if not choices:
            return Answer(None, usage, malformed=f"no choices in the answer: {str(raw)[:200]}")
        choice = choices[0]
        message = choice.get("message") or {}
        if message.get("refusal"):
            return Answer(None, usage, refusal=str(message["refusal"]))
        content = (message.get("content") or "").strip()
        fenced = _FENCE.match(content)
        if fenced:
            content = fenced.group(1)
        try:
            obj = json.loads(content)
        except json.JSONDecodeError as exc:
            if looks_like_refusal(content):
                return Answer(None, usage, refusal=content)
            why = "truncated at max_tokens" if choice.get("finish_reason") == "length" else f"not JSON ({exc.msg})"
            return Answer(None, usage, malformed=f"{why}: {content[:200]!r}")
        if isinstance(obj, list):
            obj = {"examples": obj}
        if not isinstance(obj, dict) or not isinstance(obj.get("examples"), list):
            return Answer(None, usage, malformed=f"no examples list: {content[:200]!r}")
        return Answer(obj["examples"], usage)

    def unavailable(self, exc: BaseException, attempts: int) -> GenerationError:
        if self.api.timed_out(exc):
            what = f"did not answer within generate.local.timeout_s={self.params.timeout_s:g}s"
        elif self.api.unreachable(exc):
            what = f"could not be reached ({type(exc).__name__}: {exc or 'connection failed'})"
        else:
            what = f"kept failing ({exc})"
        return BackendUnavailableError(
            f"the local LLM server at {self.endpoint} {what}, {attempts} tries. Is it running? {_START_HELP}. "
            "Answers received so far are cached; nothing was written."
        )

    def fatal(self, exc: BaseException) -> GenerationError | None:
        if not isinstance(exc, HTTPStatusError):
            return None
        hint = ""
        if exc.status == 404:
            hint = " (is generate.local.base_url right? it usually ends in /v1)"
        elif exc.status == 400 and self.params.response_format != "none":
            hint = " (if the server does not support response_format, set generate.local.response_format: json_object or none)"
        elif exc.status in (401, 403):
            hint = " (set generate.local.api_key_env to the variable that holds the server's key)"
        return GenerationError(f"the local LLM server at {self.endpoint} refused the request: {exc}{hint}")


def local_backend(params: LocalParams, seed: int, cache_dir: str | Path, environ: Mapping[str, str],
                  progress: bool | None = None) -> LLMBackend:
    """The local backend; its bearer token from ``environ[params.api_key_env]`` when that is set.
    Raises GenerationError when ``api_key_env`` names a variable that is not set."""
    api_key = environ.get(params.api_key_env) if params.api_key_env else None
    if params.api_key_env and not api_key:
        raise GenerationError(f"generate.local.api_key_env names {params.api_key_env}, which is not set")
    api = OpenAICompatibleTransport(params.base_url, api_key, params.timeout_s, params.concurrency)
    return LLMBackend(LocalDialect(params, api), params, seed, cache_dir, progress)
