"""One transport for generation and the environment's agents: the same retries (retry-after
honoured), the same error classification, the same missing-key message, one default model.
Real anthropic SDK and httpx code against the stand-in servers on 127.0.0.1 (tests/standins.py)."""

from __future__ import annotations

import inspect
import logging
import socket
from pathlib import Path

import pytest
import yaml

from components.core.params import ClaudeParams, GenerateParams, LocalParams
from components.generation import make_backend
from components.generation.errors import BackendUnavailableError, MissingCredentialsError as GenerationKeyError
from components.llm import DEFAULT_CLAUDE_MODEL, DEFAULT_LOCAL_BASE_URL, DEFAULT_LOCAL_MODEL
from components.llm.errors import MissingCredentialsError
from moderation_env.agents import ClaudeAgent, LocalLLMAgent
from moderation_env.runner import LocalSession
from tests.conftest import ROOT
from tests.standins import AnthropicStandIn, OpenAIStandIn, anthropic_decision, chat_decision

FAST = dict(examples_per_request=10, backoff_base_s=0.01, backoff_max_s=0.05, requests_per_minute=0,
            tokens_per_minute=0, concurrency=1)
SHARED_KEY_SENTENCE = ("but no API key is set. Set one in the environment (export ANTHROPIC_API_KEY=sk-ant-...; "
                       "ANTHROPIC_BASE_URL points at another endpoint)")


def generation(backend: str, tmp_path: Path, url: str, **settings):
    """A generation backend on the stand-in at ``url``; ``ask()`` requests one answer (6 examples)."""
    settings = {**FAST, "cache_dir": str(tmp_path / "cache"), **settings}
    if backend == "local":
        settings["base_url"] = url + "/v1"
    params = GenerateParams(backend=backend, **{backend: settings})
    env = {"ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": url}
    return make_backend(params, root=tmp_path, progress=False, environ=env)


def observation():
    return LocalSession().reset("single-label-classify", 1)


def retry_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "components.llm.retry"]


def retried_after(server, path: str) -> float:
    """Seconds between the first failed request and the next try of the same body."""
    calls = server.requests(path)
    failed = next(c for c in calls if c["status"] != 200)
    again = next(c for c in calls if c["body"] == failed["body"] and c["time"] > failed["time"])
    return again["time"] - failed["time"]


@pytest.mark.parametrize("caller", ["generation", "agent"])
def test_claude_429_with_retry_after_is_waited_out_by_the_same_code(caller, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="components.llm.retry")
    with AnthropicStandIn(answer=anthropic_decision if caller == "agent" else None) as server:
        server.faults.extend(["429:1", "529"])
        if caller == "generation":
            backend = generation("claude", tmp_path, server.url)
            drafts = backend.positives("spam", 5)
            assert len(drafts) == 5 and all(d.labels == ("spam",) for d in drafts)
            retries = sum(st.tally.retries for st in backend._states.values())
        else:
            agent = ClaudeAgent(api_key="sk-ant-test", base_url=server.url, backoff_base_s=0.01)
            action = agent.act(observation())
            assert agent.failures == 0 and action.action == "remove" and action.labels == ["spam"]
            retries = agent.retries
        assert [c["status"] for c in server.log] == [429, 529, 200]
        assert retried_after(server, "/v1/messages") >= 0.9  # retry-after: 1, not the 0.01 s backoff
    assert retries == 2
    lines = retry_lines(caplog)
    assert len(lines) == 2 and "retry 1 after RateLimitError" in lines[0] and "retry 2 after" in lines[1]


@pytest.mark.parametrize("caller", ["generation", "agent"])
def test_a_rejected_key_is_not_retried_by_either(caller, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="components.llm.retry")
    with AnthropicStandIn(answer=anthropic_decision if caller == "agent" else None) as server:
        server.faults.extend(["401"] * 5)
        if caller == "generation":
            with pytest.raises(GenerationKeyError, match="rejected the key"):
                generation("claude", tmp_path, server.url).positives("spam", 5)
        else:
            agent = ClaudeAgent(api_key="sk-ant-test", base_url=server.url, backoff_base_s=0.01)
            action = agent.act(observation())
            assert agent.failures == 1 and action.action == "request_review" and "HTTP 401" in action.reasoning
        assert [c["status"] for c in server.log] == [401]
    assert retry_lines(caplog) == []


@pytest.mark.parametrize("caller", ["generation", "agent"])
def test_local_server_busy_then_down_is_retried_alike(caller, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="components.llm.retry")
    with OpenAIStandIn(answer=chat_decision if caller == "agent" else None) as server:
        server.faults.extend(["429:0.5", "503"])
        if caller == "generation":
            backend = generation("local", tmp_path, server.url)
            assert len(backend.positives("spam", 5)) == 5
        else:
            agent = LocalLLMAgent(base_url=server.url + "/v1", backoff_base_s=0.01)
            assert agent.act(observation()).labels == ["spam"] and agent.failures == 0 and agent.retries == 2
        assert [c["status"] for c in server.log] == [429, 503, 200]
        assert retried_after(server, "/v1/chat/completions") >= 0.45
    assert len(retry_lines(caplog)) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_local_server_is_tried_retries_plus_one_times_by_both(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="components.llm.retry")
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(BackendUnavailableError, match="could not be reached .* 3 tries"):
        generation("local", tmp_path, url, retries=2).positives("spam", 5)
    agent = LocalLLMAgent(base_url=url + "/v1", retries=2, backoff_base_s=0.01)
    action = agent.act(observation())
    assert agent.failures == 1 and agent.retries == 2 and action.reasoning.startswith("agent error: ConnectError")
    assert len(retry_lines(caplog)) == 4  # two retries each, from the one retry module


def test_without_a_key_generation_and_the_agent_say_the_same_thing(tmp_path):
    with pytest.raises(MissingCredentialsError) as gen:
        make_backend(GenerateParams(backend="claude"), root=tmp_path, environ={})
    with pytest.raises(MissingCredentialsError) as agent:
        ClaudeAgent(environ={})
    for err, context, fix in ((gen, "generate.backend is claude", "generate.backend: offline"),
                              (agent, "the claude agent", "pick another agent")):
        message = str(err.value)
        assert isinstance(err.value, ValueError) and GenerationKeyError is MissingCredentialsError
        assert message.startswith(context) and SHARED_KEY_SENTENCE in message and fix in message
    assert not (tmp_path / "cache").exists()


def test_an_auth_token_alone_is_enough_for_both(tmp_path):
    with AnthropicStandIn(answer=anthropic_decision) as server:
        env = {"ANTHROPIC_AUTH_TOKEN": "tok-123", "ANTHROPIC_BASE_URL": server.url}
        ClaudeAgent(environ=env).act(observation())
        params = GenerateParams(backend="claude", claude={**FAST, "cache_dir": str(tmp_path / "c")})
    with AnthropicStandIn() as gen_server:
        env["ANTHROPIC_BASE_URL"] = gen_server.url
        make_backend(params, root=tmp_path, progress=False, environ=env).positives("spam", 3)
    for s in (server, gen_server):
        assert [c["headers"].get("authorization") for c in s.log] == ["Bearer tok-123"]
        assert "x-api-key" not in s.log[0]["headers"]


def test_one_default_model_for_generation_the_agent_and_params_yaml():
    agent_default = inspect.signature(ClaudeAgent).parameters["model"].default
    in_yaml = yaml.safe_load((ROOT / "params.yaml").read_text())["generate"]["claude"]["model"]
    assert DEFAULT_CLAUDE_MODEL == agent_default == ClaudeParams().model == in_yaml == "claude-sonnet-4-6"
    local = inspect.signature(LocalLLMAgent).parameters
    assert (local["base_url"].default, local["model"].default) == (DEFAULT_LOCAL_BASE_URL, DEFAULT_LOCAL_MODEL)
    assert (LocalParams().base_url, LocalParams().model) == (DEFAULT_LOCAL_BASE_URL, DEFAULT_LOCAL_MODEL)
