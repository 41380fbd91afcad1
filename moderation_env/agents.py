"""Moderators that play the environment: the pipeline's classifier, Claude, a local LLM, and two
baselines. Each turns an observation into a ``ModerationAction``; none ever sees gold. The
classifier agent is :mod:`moderation_env.classifier_agent`.

The LLM agents talk to their models through the project's one LLM transport layer
(``components/llm``: clients, retries, error classification, token accounting, the default Claude
model), the same code the generation backends use. They fill ``content_id`` from the observation
themselves (a model never has to copy an id), keep only valid labels and rule ids from what the
model answers, and fall back to ``request_review`` with confidence 0 when an answer cannot be used
(counted in ``failures``).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Protocol

from components.llm import DEFAULT_CLAUDE_MODEL, DEFAULT_LOCAL_BASE_URL, DEFAULT_LOCAL_MODEL
from components.llm.errors import describe
from components.llm.retry import RetryPolicy
from components.llm.usage import Usage
from moderation_env.classifier_agent import ClassifierAgent
from moderation_env.models import ModerationAction, ModerationObservation
from moderation_env.vocab import ACTIONS, LABELS

AGENTS = ("classifier", "claude", "local", "random", "approve-all")


class Agent(Protocol):
    name: str

    def act(self, obs: ModerationObservation) -> ModerationAction: ...


class ApproveAllAgent:
    """Baseline: everything is clean."""

    name = "approve-all"

    def act(self, obs: ModerationObservation) -> ModerationAction:
        return ModerationAction(content_id=obs.content.id, labels=["clean"], action="approve", confidence=0.5,
                                reasoning="approve everything baseline")


class RandomAgent:
    """Baseline: a random label (or two), action, confidence and citation, seeded."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def act(self, obs: ModerationObservation) -> ModerationAction:
        labels = self.rng.sample([x for x in LABELS if x != "clean"], 2) if self.rng.random() < 0.3 \
            else [self.rng.choice(LABELS)]
        rules = [r.id for r in obs.policy_rules]
        cites = self.rng.sample(rules, min(len(rules), self.rng.randint(0, 2)))
        return ModerationAction(content_id=obs.content.id, labels=labels, action=self.rng.choice(ACTIONS),
                                confidence=round(self.rng.random(), 3), reasoning="random baseline",
                                policy_citations=cites)


# --------------------------------------------------------------------------- LLM agents

SYSTEM_PROMPT = (
    "You are a trust-and-safety content moderator. Apply the policy excerpt you are given to the content "
    "item, using its context (content type, region, author history, ad targeting, earlier thread messages). "
    "Where rules conflict, say which one wins and why. Answer with the moderate tool only."
)
TOOL_NAME = "moderate"


def decision_schema() -> dict:
    """The JSON schema an LLM fills in: the action without content_id (the agent adds it)."""
    return {
        "type": "object",
        "properties": {
            "labels": {"type": "array", "items": {"type": "string", "enum": list(LABELS)}, "minItems": 1,
                       "description": "violation labels, or [\"clean\"]"},
            "action": {"type": "string", "enum": list(ACTIONS)},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "reasoning": {"type": "string", "description": "short justification naming the deciding rule"},
            "policy_citations": {"type": "array", "items": {"type": "string"}, "description": "rule ids applied"},
        },
        "required": ["labels", "action", "confidence", "reasoning", "policy_citations"],
    }


def render_observation(obs: ModerationObservation) -> str:
    """The observation as the prompt an LLM reads (no reward bookkeeping)."""
    data = {
        "task": obs.task, "instructions": obs.instructions,
        "content": obs.content.model_dump(exclude_none=True) if obs.content else None,
        "thread_history": [m.model_dump() for m in obs.thread_history],
        "conflicting_policies": list(obs.conflicting_policies),
        "policy_excerpt": [{"id": r.id, "title": r.title, "labels": r.labels, "action": r.action, "text": r.text}
                           for r in obs.policy_rules],
    }
    return json.dumps(data, ensure_ascii=False, indent=1)


def to_action(obs: ModerationObservation, answer: Any) -> ModerationAction:
    """A model's answer (dict) to a valid action for the served item; raises ValueError if unusable."""
    if not isinstance(answer, dict):
        raise ValueError(f"answer is not an object: {str(answer)[:200]}")
    labels = [x for x in answer.get("labels") or [] if x in LABELS]
    labels = [x for x in dict.fromkeys(labels) if x != "clean"] or ["clean"]
    action = answer.get("action")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    try:
        confidence = min(1.0, max(0.0, float(answer.get("confidence", 0.5))))
    except (TypeError, ValueError):
        confidence = 0.5
    known = {r.id for r in obs.policy_rules}
    cites = [c for c in dict.fromkeys(answer.get("policy_citations") or []) if isinstance(c, str) and c in known]
    return ModerationAction(content_id=obs.content.id, labels=labels, action=action, confidence=confidence,
                            reasoning=str(answer.get("reasoning", ""))[:4000], policy_citations=cites[:20])


def _fallback(obs: ModerationObservation, why: str) -> ModerationAction:
    return ModerationAction(content_id=obs.content.id, labels=["clean"], action="request_review", confidence=0.0,
                            reasoning=f"agent error: {why}"[:4000])


_FENCE_RE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def parse_json_answer(text: str) -> Any:
    """JSON from a chat answer: bare, fenced, or the first {...} in the text."""
    text = _FENCE_RE.sub("", text.strip())
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        if start >= 0 and end > start:
            return json.loads(text[start:end + 1])
        raise


def _send(agent, body: dict) -> dict:
    """One request of an LLM agent through its transport, with the shared retry policy; the answer JSON."""

    def count(_exc) -> None:
        agent.retries += 1

    return agent.retry.call_sync(lambda: agent.transport.send_sync(agent.client, body), agent.transport,
                                 name=f"{agent.name} agent", on_retry=count)


class ClaudeAgent:
    """Claude through the shared transport (``components/llm``), forced to answer with the ``moderate``
    tool (this API version takes no sampling parameters, so no temperature is sent).

    The key comes from ``api_key`` or ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN (``environ``, default
    the process environment), the endpoint from ``base_url`` or ANTHROPIC_BASE_URL; no key raises
    ``MissingCredentialsError`` (a ValueError). Transient failures (429, 5xx, overloaded, timeouts)
    are retried ``retries`` times as in generation, ``retry-after`` honoured (``self.retries`` counts
    them); ``usage`` sums the tokens of every answer, ``failures`` counts the items that fell back to
    ``request_review``."""

    name = "claude"

    def __init__(self, model: str = DEFAULT_CLAUDE_MODEL, api_key: Optional[str] = None,
                 base_url: Optional[str] = None, max_tokens: int = 1024, timeout_s: float = 60.0, retries: int = 2,
                 backoff_base_s: float = 1.0, environ: Optional[Mapping[str, str]] = None):
        from components.llm.anthropic_client import AnthropicTransport

        self.transport = AnthropicTransport.from_environ(
            os.environ if environ is None else environ, who="the claude agent talks to the Claude API",
            otherwise="or pick another agent (local, classifier, random, approve-all)", api_key=api_key,
            base_url=base_url, timeout_s=timeout_s)
        self.client = self.transport.sync_client()
        self.retry = RetryPolicy(retries, backoff_base_s, 30.0)
        self.model, self.max_tokens, self.failures, self.retries, self.usage = model, max_tokens, 0, 0, Usage()

    def act(self, obs: ModerationObservation) -> ModerationAction:
        """Ask Claude for a decision on ``obs``; the fallback action when that fails or is unusable."""
        body = {"model": self.model, "max_tokens": self.max_tokens, "system": SYSTEM_PROMPT,
                "tools": [{"name": TOOL_NAME, "description": "Record the moderation decision for the item.",
                           "input_schema": decision_schema()}],
                "tool_choice": {"type": "tool", "name": TOOL_NAME},
                "messages": [{"role": "user", "content": render_observation(obs)}]}
        try:
            raw = _send(self, body)
            self.usage.add(self.transport.usage(raw))
            calls = [b for b in raw.get("content") or [] if b.get("type") == "tool_use" and b.get("name") == TOOL_NAME]
            if not calls:
                raise ValueError(f"no {TOOL_NAME} tool call (stop_reason {raw.get('stop_reason')})")
            return to_action(obs, calls[0].get("input"))
        except Exception as exc:  # any API or parse failure: a cautious fallback, counted
            self.failures += 1
            return _fallback(obs, describe(exc))


class LocalLLMAgent:
    """Any OpenAI-compatible chat server (llama.cpp, vLLM, Ollama) through the shared transport
    (``components/llm``), asked for JSON. ``api_key``: a bearer token if the server wants one.
    Retries, ``retries``, ``usage`` and ``failures`` as for ``ClaudeAgent``."""

    name = "local"

    def __init__(self, base_url: str = DEFAULT_LOCAL_BASE_URL, model: str = DEFAULT_LOCAL_MODEL,
                 api_key: Optional[str] = None, timeout_s: float = 120.0, retries: int = 2,
                 backoff_base_s: float = 1.0):
        from components.llm.openai_compatible import OpenAICompatibleTransport

        self.transport = OpenAICompatibleTransport(base_url, api_key, timeout_s)
        self.client = self.transport.sync_client()
        self.retry = RetryPolicy(retries, backoff_base_s, 30.0)
        self.model, self.failures, self.retries, self.usage = model, 0, 0, Usage()

    def act(self, obs: ModerationObservation) -> ModerationAction:
        """Ask the server for a JSON decision on ``obs``; the fallback action when that fails or is unusable."""
        schema = json.dumps(decision_schema()["properties"])
        body = {"model": self.model, "temperature": 0.0, "response_format": {"type": "json_object"},
                "messages": [{"role": "system", "content": f"{SYSTEM_PROMPT} Reply with one JSON object with the "
                                                           f"keys of this schema and nothing else: {schema}"},
                             {"role": "user", "content": render_observation(obs)}]}
        try:
            raw = _send(self, body)
            self.usage.add(self.transport.usage(raw))
            content = raw["choices"][0]["message"]["content"]
            return to_action(obs, parse_json_answer(content))
        except Exception as exc:
            self.failures += 1
            return _fallback(obs, describe(exc))


def make_agent(name: str, *, seed: int = 0, model_folder: Optional[Path] = None, **options: Any) -> Agent:
    """An agent by name; ``options`` go to the LLM agents (model, base_url, api_key)."""
    if name == "approve-all":
        return ApproveAllAgent()
    if name == "random":
        return RandomAgent(seed)
    if name == "classifier":
        if model_folder is None:
            raise ValueError("the classifier agent needs an exported model folder (--model)")
        return ClassifierAgent(model_folder, **options)
    if name == "claude":
        return ClaudeAgent(**{k: v for k, v in options.items() if v is not None})
    if name == "local":
        return LocalLLMAgent(**{k: v for k, v in options.items() if v is not None})
    raise ValueError(f"unknown agent {name!r}; agents: {', '.join(AGENTS)}")
