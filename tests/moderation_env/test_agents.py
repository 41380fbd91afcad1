"""The agents: Claude (anthropic SDK) and a local LLM (OpenAI-compatible, httpx) through the shared
transport (components/llm) against the stand-in servers on 127.0.0.1 (tests/standins.py), and, with a
tiny real model, the classifier agent and the benchmark-env step."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from components.llm import DEFAULT_CLAUDE_MODEL
from moderation_env.agents import ClaudeAgent, LocalLLMAgent, make_agent, parse_json_answer
from moderation_env.environment import TASKS
from moderation_env.runner import LocalSession, run_episode
from moderation_env.vocab import LABELS
from flows.cli.env import env_app
from tests.standins import AnthropicStandIn, OpenAIStandIn, anthropic_decision, chat_decision


@pytest.fixture
def anthropic_server():
    with AnthropicStandIn(answer=anthropic_decision) as server:
        yield server


@pytest.fixture
def openai_server():
    with OpenAIStandIn(answer=chat_decision) as server:
        yield server


def _check_sanitised(result, stand_in):
    for step in result.steps:
        assert set(step.labels) <= set(LABELS) and len(step.labels) == len(set(step.labels))
        assert 0.0 <= step.confidence <= 1.0 and step.error is None
    assert len(stand_in.log) == len(result.steps)


def test_claude_agent_through_the_sdk(anthropic_server):
    agent = ClaudeAgent(model="claude-test", api_key="sk-ant-test", base_url=anthropic_server.url)
    result = run_episode(LocalSession(), agent, "ad-policy-compliance", seed=42)
    _check_sanitised(result, anthropic_server)
    assert agent.failures == 0 and all(s.action == "restrict" for s in result.steps)
    req = anthropic_server.log[0]
    # the key travels as x-api-key or (this SDK version) as a bearer token
    assert "sk-ant-test" in (req["headers"].get("x-api-key", ""), req["headers"].get("authorization", "")[7:])
    assert req["body"]["model"] == "claude-test"
    assert req["body"]["tool_choice"] == {"type": "tool", "name": "moderate"}
    assert req["body"]["tools"][0]["input_schema"]["properties"]["labels"]["items"]["enum"] == list(LABELS)
    prompt = json.loads(req["body"]["messages"][0]["content"])
    assert prompt["content"]["type"] == "ad_copy" and any(r["id"] == "AD_AGE_001" for r in prompt["policy_excerpt"])
    assert "gold" not in req["body"]["messages"][0]["content"]
    # junk citations were dropped, real ones kept; the reward reflects it
    spam = run_episode(LocalSession(), agent, "multi-label-classify", seed=42)
    assert all(s.labels == ["spam"] and s.confidence == 1.0 for s in spam.steps)


def test_claude_agent_falls_back_when_the_answer_is_unusable(anthropic_server):
    agent = ClaudeAgent(model="broken-model", api_key="k", base_url=anthropic_server.url)
    result = run_episode(LocalSession(), agent, "single-label-classify", seed=1)
    assert agent.failures == 10 and all(s.action == "request_review" and s.confidence == 0.0 for s in result.steps)


def test_claude_agent_needs_a_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        ClaudeAgent()


def test_the_claude_agent_defaults_to_the_project_model_and_counts_tokens(anthropic_server):
    agent = ClaudeAgent(api_key="k", base_url=anthropic_server.url)
    result = run_episode(LocalSession(), agent, "single-label-classify", seed=1)
    assert {r["body"]["model"] for r in anthropic_server.log} == {DEFAULT_CLAUDE_MODEL}
    assert agent.usage.input_tokens == 100 * len(result.steps) and agent.usage.output_tokens == 20 * len(result.steps)


def test_local_llm_agent_over_httpx(openai_server):
    agent = LocalLLMAgent(base_url=openai_server.url + "/v1", model="qwen-test", api_key="tok")
    result = run_episode(LocalSession(), agent, "thread-moderation-hard", seed=4)
    _check_sanitised(result, openai_server)
    assert agent.failures == 0 and all(s.labels == ["spam"] for s in result.steps)
    req = openai_server.log[-1]
    assert req["headers"]["authorization"] == "Bearer tok" and req["body"]["model"] == "qwen-test"
    assert req["body"]["messages"][0]["role"] == "system" and req["body"]["response_format"] == {"type": "json_object"}
    assert json.loads(req["body"]["messages"][1]["content"])["thread_history"]
    assert agent.usage.input_tokens == 300 * len(result.steps)
    broken = LocalLLMAgent(base_url=openai_server.url + "/v1", model="broken")
    run_episode(LocalSession(), broken, "single-label-classify", seed=1)
    assert broken.failures == 10


def test_parse_json_answer():
    assert parse_json_answer('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_answer('Sure! {"a": 2} hope that helps') == {"a": 2}
    with pytest.raises(json.JSONDecodeError):
        parse_json_answer("no json")


def test_env_run_with_the_claude_and_local_agents(anthropic_server, openai_server, tmp_path):
    runner = CliRunner()
    r = runner.invoke(env_app, ["run", "--agent", "claude", "--task", "ad-policy-compliance", "--base-url",
                                anthropic_server.url, "--llm-model", "claude-test", "-o", str(tmp_path / "c.json")],
                      env={"ANTHROPIC_API_KEY": "sk-ant-x"})
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c.json").read_text())["agent"] == "claude"
    r = runner.invoke(env_app, ["run", "--agent", "local", "--task", "single-label-classify", "--base-url",
                                openai_server.url + "/v1", "-o", str(tmp_path / "l.json")])
    assert r.exit_code == 0, r.output
    assert len(openai_server.log) == 10


# --------------------------------------------------------------------------- with a real model


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    from tests.flows.test_cli_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-env"))["release"]


def test_classifier_agent_asks_for_review_of_a_language_it_cannot_read(tiny_release):
    agent = make_agent("classifier", model_folder=tiny_release)
    labels, action, confidence, why = agent.decide("Я знаю, где ты живёшь, и завтра я приду к тебе.", "text_post")
    assert (labels, action, confidence) == (["clean"], "request_review", 0.0)
    assert "'ru'" in why and "not judged" in why
    labels, action, _, why = agent.decide("😂😂 !!! 👍", "text_post")
    assert (labels, action) == (["clean"], "approve") and "no words" in why


@pytest.mark.slow
def test_classifier_agent_maps_categories_and_actions_through_the_table(tiny_release):
    from moderation_env.vocab import table
    from components.core.taxonomy import category

    agent = make_agent("classifier", model_folder=tiny_release)
    mapping = table()["category_to_labels"]
    result = run_episode(LocalSession(), agent, "multi-label-classify", seed=42)
    assert len(result.steps) == TASKS["multi-label-classify"].max_steps
    allowed = {label for labels in mapping.values() for label in labels} | {"clean"}
    for step in result.steps:
        assert set(step.labels) <= allowed and 0.0 <= step.confidence <= 1.0
    # a decision, checked against the table by hand
    model = agent.model
    text = "I will find you and kill you tomorrow at your house"
    labels, action, confidence, why = agent.decide(text, "text_post")
    flags = [f for f in model.flags(model.predict_proba([model.with_context(text)]))[0] if mapping.get(f.category)]
    if flags:
        top = flags[0]
        rule = table()["action_by_category"].get(top.category) or table()["action_by_severity"][top.severity]["actions"]
        sure = table()["action_by_severity"][category(top.category).severity]["sure"]
        assert action == (rule[0] if top.score >= sure else rule[1]) and confidence == round(top.score, 4)
        assert labels[0] in mapping[top.category]
    else:
        assert labels == ["clean"] and action == "approve"


@pytest.mark.slow
def test_benchmark_env_stage_writes_its_report(tiny_release, tmp_path):
    from components.core.params import Params
    from flows.stages import benchmark_env  # the step as dvc.yaml runs it: report written under reports/

    release = tmp_path / "models/moderation/release"
    shutil.copytree(tiny_release, release)
    stats = benchmark_env(tmp_path, Params())
    report = json.loads((tmp_path / "reports/benchmark_env.json").read_text())
    assert report == stats and report["seed"] == 42 and report["model"] == "models/moderation/release"
    assert set(report["scores"]) == {"classifier", "random", "approve-all"}
    assert set(report["scores"]["classifier"]) == set(TASKS) | {"mean"}
    episodes = json.loads((tmp_path / "reports/benchmark_env_episodes.json").read_text())
    assert len(episodes["classifier"]["episodes"]) == 4
    again = benchmark_env(tmp_path, Params())
    assert again["scores"] == stats["scores"]


@pytest.mark.slow
def test_env_run_with_the_classifier(tiny_release, tmp_path):
    r = CliRunner().invoke(env_app, ["run", "--agent", "classifier", "--model", str(tiny_release), "--task", "all",
                                     "--seed", "42", "-o", str(tmp_path / "clf.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "clf.json").read_text())["agent"] == "classifier"
