"""Any OpenAI-compatible chat-completions server (llama.cpp server, vLLM, Ollama) over httpx.

The same prompts, JSON answer, cache, validation, retries and statistics as Claude (all in
``llm.py``); only the request and the answer's shape differ. A dead or slow server fails
after ``generate.local.retries`` retries with an error naming the URL and how to start one.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from pathlib import Path

import httpx

from components.generation.llm import (
    Answer, BackendUnavailableError, GenerationError, LLMBackend, Prompt, Usage, looks_like_refusal,
    parse_retry_after, prompt_data, tool_schema,
)
from components.core.params import LocalParams

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_START_HELP = (
    "start one (llama.cpp: `llama-server -m model.gguf --port 8080`; Ollama: `ollama serve`, base_url "
    "http://127.0.0.1:11434/v1; vLLM: `vllm serve MODEL`, base_url http://127.0.0.1:8000/v1) and point "
    "generate.local.base_url at it, or generate without a model: generate.backend: offline"
)


class LocalHTTPError(Exception):
    def __init__(self, status: int, body: str, headers: Mapping[str, str]):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status, self.body, self.headers = status, body, headers


class LocalTransport:
    name = "local_llm"
    supports_batches = False

    def __init__(self, params: LocalParams, api_key: str | None = None):
        self.params = params
        self.model = params.model
        self.endpoint = params.base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @contextlib.asynccontextmanager
    async def client(self):
        limits = httpx.Limits(max_connections=self.params.concurrency)
        async with httpx.AsyncClient(base_url=self.endpoint + "/", timeout=self.params.timeout_s, headers=self._headers,
                                     limits=limits) as client:
            yield client

    def request_body(self, prompt: Prompt, params: LocalParams) -> dict:
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

    async def send(self, client: httpx.AsyncClient, body: dict) -> dict:
        response = await client.post("chat/completions", json=body)
        if response.status_code >= 400:
            raise LocalHTTPError(response.status_code, response.text, response.headers)
        try:
            return response.json()
        except json.JSONDecodeError:
            # A server that answers 200 with a non-JSON body: keep it, the parser rejects it.
            return {"choices": [], "invalid_body": response.text[:2000]}

    def parse(self, raw: dict) -> Answer:
        u = raw.get("usage") or {}
        usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
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

    # -- errors

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, LocalHTTPError):
            return exc.status in (408, 409, 429) or exc.status >= 500
        return isinstance(exc, (httpx.TransportError, httpx.TimeoutException))

    def retry_after(self, exc: BaseException) -> float | None:
        return parse_retry_after(exc.headers) if isinstance(exc, LocalHTTPError) else None

    def unavailable(self, exc: BaseException, attempts: int) -> GenerationError:
        if isinstance(exc, httpx.TimeoutException):
            what = f"did not answer within generate.local.timeout_s={self.params.timeout_s:g}s"
        elif isinstance(exc, httpx.TransportError):
            what = f"could not be reached ({type(exc).__name__}: {exc or 'connection failed'})"
        else:
            what = f"kept failing ({exc})"
        return BackendUnavailableError(
            f"the local LLM server at {self.endpoint} {what}, {attempts} tries. Is it running? {_START_HELP}. "
            "Answers received so far are cached; nothing was written."
        )

    def fatal(self, exc: BaseException) -> GenerationError | None:
        if not isinstance(exc, LocalHTTPError):
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
    api_key = environ.get(params.api_key_env) if params.api_key_env else None
    if params.api_key_env and not api_key:
        raise GenerationError(f"generate.local.api_key_env names {params.api_key_env}, which is not set")
    return LLMBackend(LocalTransport(params, api_key), params, seed, cache_dir, progress)
