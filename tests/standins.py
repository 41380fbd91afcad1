"""Stand-in servers on 127.0.0.1 for the LLM backends' tests: real HTTP, canned answers.

``AnthropicStandIn`` speaks enough of the Anthropic Messages API (POST /v1/messages) and the
Message Batches API (POST /v1/messages/batches, GET /v1/messages/batches/{id}, GET .../results
as JSONL); ``OpenAIStandIn`` speaks OpenAI chat completions (POST /v1/chat/completions). The
real SDK and httpx code of the backends talk to them. Answers are built from the request (the
number of examples and the categories the prompt asks for), so they are valid unless a fault
is queued: ``server.faults.append("429:1")`` makes the next request a 429 with retry-after 1.
Other callers (the environment's agents) pass ``answer(body) -> JSON`` for the 200 answers;
faults are served the same way for them.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_COUNT = re.compile(r"Return exactly (\d+) examples")
_EXPECTED = re.compile(r"`categories` must be exactly: (\[[^\]]*\])")
_SUBTYPE = re.compile(r'subtype "([^"]+)"')


def asked(prompt: str) -> tuple[int, list[str]]:
    """How many examples a prompt asks for, and the categories each must carry."""
    count = int(_COUNT.search(prompt).group(1))
    m = _EXPECTED.search(prompt)
    return count, json.loads(m.group(1)) if m else []


def canned_examples(prompt: str, fault: str | None = None) -> list[dict]:
    """Valid examples for a prompt (distinct per prompt), or the kind of bad ones a fault names."""
    count, cats = asked(prompt)
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:10]
    subtype = (_SUBTYPE.search(prompt) or [None, "general"])[1]
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    out = [{"text": f"sample {tag} {words[i % 10]} {i} about {' and '.join(cats) or 'nothing much'}",
            "subtype": subtype, "categories": list(cats)} for i in range(count)]
    if fault == "duplicates":  # the second half repeats the first (case and punctuation changed)
        half = count // 2
        for i in range(half, count):
            out[i] = dict(out[i - half], text=out[i - half]["text"].upper() + "!!")
    elif fault == "off_category":  # every other example also labelled something else
        for ex in out[::2]:
            ex["categories"] = ex["categories"] + (["spam"] if "spam" not in ex["categories"] else ["threats"])
    elif fault == "empty":
        out[0]["text"] = "   "
    return out


# -- the environment's agents: a moderation decision for an observation


def decision_for(prompt: str) -> dict:
    """What the stand-in model answers: a plausible decision, plus junk the agent must drop."""
    content = json.loads(prompt)["content"]
    if content["type"] == "ad_copy":
        return {"labels": ["clean"], "action": "restrict", "confidence": 0.7, "reasoning": "age targeting",
                "policy_citations": ["AD_AGE_001", "XX_FAKE_001"]}
    return {"labels": ["spam", "profanity", "spam"], "action": "remove", "confidence": 7,
            "reasoning": "looks like bulk promotion", "policy_citations": ["CS_SPAM_001"]}


def anthropic_decision(body: dict) -> dict:
    """A Messages API answer of the environment's Claude agent: a ``moderate`` tool call (text for a model named *broken*)."""
    prompt = body["messages"][0]["content"]
    if "broken" in body["model"]:
        content = [{"type": "text", "text": "I'd rather not use tools."}]
    else:
        content = [{"type": "tool_use", "id": "toolu_01", "name": "moderate", "input": decision_for(prompt)}]
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": body["model"], "content": content,
            "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 20}}


def chat_decision(body: dict) -> dict:
    """A chat-completions answer of the environment's local agent: fenced JSON (no JSON for model ``broken``)."""
    if body["model"] == "broken":
        text = "sorry, no JSON today"
    else:
        text = "```json\n" + json.dumps(decision_for(body["messages"][-1]["content"])) + "\n```"
    return {"id": "c1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 30}}


class _StandIn:
    def __init__(self, answer: Callable[[dict], dict] | None = None):
        self.answer = answer  # the 200 answer to a request body; None: canned generation examples
        self.faults: deque[str] = deque()
        self.log: list[dict] = []  # every request: method, path, body, time, status
        self.lock = threading.Lock()
        self.ok_limit: int | None = None  # after this many good answers, every request fails (a dying server)
        self.ok = 0
        self.delay_s = 0.0
        self.in_flight = 0  # requests being answered now, and the most at once (for the fan-out benchmark)
        self.max_in_flight = 0
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def requests(self, path_prefix: str, method: str = "POST") -> list[dict]:
        return [r for r in self.log if r["path"].startswith(path_prefix) and r["method"] == method]

    def reset(self) -> None:
        with self.lock:
            self.log.clear()
            self.faults.clear()
            self.ok_limit, self.ok, self.delay_s = None, 0, 0.0

    def _next_fault(self) -> str | None:
        with self.lock:
            if self.ok_limit is not None and self.ok >= self.ok_limit:
                return "500"
            return self.faults.popleft() if self.faults else None

    def _count_ok(self) -> None:
        with self.lock:
            self.ok += 1

    def route(self, method: str, path: str, body: dict | None):  # -> (status, payload, headers)
        raise NotImplementedError

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                entry = {"method": method, "path": self.path, "body": body, "time": time.monotonic(),
                         "headers": {k.lower(): v for k, v in self.headers.items()}}
                with standin.lock:
                    standin.log.append(entry)
                    standin.in_flight += 1
                    standin.max_in_flight = max(standin.max_in_flight, standin.in_flight)
                try:
                    if standin.delay_s:
                        time.sleep(standin.delay_s)
                    status, payload, headers = standin.route(method, self.path, body)
                finally:
                    with standin.lock:
                        standin.in_flight -= 1
                entry["status"] = status
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    ctype = "application/binary" if isinstance(payload, bytes) else "application/json"
                    self.send_header("content-type", ctype)
                    self.send_header("content-length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):
                self._serve("POST")

            def do_GET(self):
                self._serve("GET")

        return Handler


def _error(status: int, kind: str, message: str, headers: dict | None = None):
    return status, {"type": "error", "error": {"type": kind, "message": message}}, headers or {}


class AnthropicStandIn(_StandIn):
    """POST /v1/messages and the Message Batches endpoints."""

    def __init__(self, batch_polls: int = 1, answer: Callable[[dict], dict] | None = None):
        super().__init__(answer)
        self.batches: dict[str, dict] = {}
        self.batch_polls = batch_polls  # GETs of a batch before it has ended
        self.fail_batch_polls = False
        self.batch_result_faults: dict[int, str] = {}  # request index in a batch -> errored | expired

    def message(self, body: dict, fault: str | None = None) -> dict:
        prompt = body["messages"][-1]["content"]
        system = body.get("system") or []
        cached = any("cache_control" in b for b in system if isinstance(b, dict))
        usage = {"input_tokens": 120, "output_tokens": 40 * asked(prompt)[0],
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2000 if cached else 0}
        base = {"id": "msg_" + hashlib.sha256(prompt.encode()).hexdigest()[:20], "type": "message", "role": "assistant",
                "model": body["model"], "stop_sequence": None, "usage": usage}
        if fault == "refusal":
            return {**base, "stop_reason": "refusal",
                    "content": [{"type": "text", "text": "I'm sorry, but I can't help with creating that content."}]}
        if fault == "text_only":
            return {**base, "stop_reason": "end_turn", "content": [{"type": "text", "text": "Here you go: lots of examples"}]}
        if fault == "malformed":
            tool_input = {"examples": "the examples are below"}
        else:
            tool_input = {"examples": canned_examples(prompt, fault)}
        return {**base, "stop_reason": "tool_use",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": body["tool_choice"]["name"], "input": tool_input}]}

    def route(self, method: str, path: str, body: dict | None):
        if method == "POST" and path == "/v1/messages":
            fault = self._next_fault()
            if fault and fault.startswith("429"):
                after = fault.partition(":")[2] or "0"
                return _error(429, "rate_limit_error", "rate limited", {"retry-after": after})
            if fault == "529":
                return _error(529, "overloaded_error", "Overloaded")
            if fault == "500":
                return _error(500, "api_error", "Internal server error")
            if fault == "401":
                return _error(401, "authentication_error", "invalid x-api-key")
            self._count_ok()
            return 200, self.answer(body) if self.answer else self.message(body, fault), {}
        if method == "POST" and path == "/v1/messages/batches":
            fault = self._next_fault()
            if fault == "500":
                return _error(500, "api_error", "Internal server error")
            batch_id = f"msgbatch_{len(self.batches) + 1:04d}"
            self.batches[batch_id] = {"requests": body["requests"], "polls": 0}
            return 200, self._batch(batch_id), {}
        m = re.fullmatch(r"/v1/messages/batches/([\w-]+)(/results)?", path)
        if method == "GET" and m:
            batch_id, results = m.group(1), m.group(2)
            if batch_id not in self.batches:
                return _error(404, "not_found_error", f"no batch {batch_id}")
            if self.fail_batch_polls:
                return _error(500, "api_error", "Internal server error")
            if results:
                return 200, self._results(batch_id), {}
            self.batches[batch_id]["polls"] += 1
            return 200, self._batch(batch_id), {}
        return _error(404, "not_found_error", f"{method} {path}")

    def _batch(self, batch_id: str) -> dict:
        b = self.batches[batch_id]
        ended = b["polls"] >= self.batch_polls
        n = len(b["requests"])
        return {
            "id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": 0 if ended else n, "succeeded": n if ended else 0, "errored": 0,
                               "canceled": 0, "expired": 0},
            "created_at": "2025-01-01T00:00:00Z", "expires_at": "2025-01-02T00:00:00Z", "ended_at": None,
            "archived_at": None, "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }

    def _results(self, batch_id: str) -> bytes:
        lines = []
        for i, req in enumerate(self.batches[batch_id]["requests"]):
            fault = self.batch_result_faults.pop(i, None)
            if fault == "errored":
                result = {"type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}}
            elif fault == "expired":
                result = {"type": "expired"}
            else:
                result = {"type": "succeeded", "message": self.message(req["params"])}
            lines.append(json.dumps({"custom_id": req["custom_id"], "result": result}))
        return ("\n".join(lines) + "\n").encode()


class OpenAIStandIn(_StandIn):
    """POST /v1/chat/completions of an OpenAI-compatible server (llama.cpp, vLLM, Ollama)."""

    def route(self, method: str, path: str, body: dict | None):
        if not (method == "POST" and path == "/v1/chat/completions"):
            return 404, {"error": {"message": f"{method} {path} not found"}}, {}
        fault = self._next_fault()
        if fault and fault.startswith("429"):
            return 429, {"error": {"message": "busy"}}, {"retry-after": fault.partition(":")[2] or "0"}
        if fault in ("500", "503"):
            return int(fault), {"error": {"message": "server error"}}, {}
        if fault == "401":
            return 401, {"error": {"message": "invalid token"}}, {}
        self._count_ok()
        if self.answer:
            return 200, self.answer(body), {}
        prompt = body["messages"][-1]["content"]
        message: dict = {"role": "assistant"}
        if fault == "refusal":
            message.update(content=None, refusal="I can't help with that.")
        elif fault == "malformed":
            message["content"] = '{"examples": [{"text": "cut off'
        else:
            content = json.dumps({"examples": canned_examples(prompt, fault)})
            message["content"] = f"```json\n{content}\n```" if fault == "fenced" else content
        usage = {"prompt_tokens": 900, "completion_tokens": 35 * asked(prompt)[0]}
        return 200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                     "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}, {}
