"""The agents: Claude (anthropic SDK) and a local LLM (OpenAI-compatible, httpx) through the shared
transport (components/llm) against the stand-in servers on 127.0.0.1 (tests/standins.py), and, with a
tiny real model, the classifier agent and the benchmark-env step. The classifier's policy step is
checked on readings made of real flags (what the tiny model flags is not fixed), its whole play on
real episodes."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from components.llm import DEFAULT_CLAUDE_MODEL
from moderation_env.agents import ClaudeAgent, LocalLLMAgent, make_agent, parse_json_answer
from moderation_env.environment import TASKS, ModerationEnvironment
from moderation_env.models import ThreadMessage
from moderation_env.policy import policy_book
from moderation_env.runner import LocalSession, run_episode
from moderation_env.vocab import ACTION_PRECEDENCE, LABELS, table
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


@pytest.fixture(scope="module")
def classifier(tiny_release):
    return make_agent("classifier", model_folder=tiny_release)


def _reading(agent, *categories, score=0.95):
    """The reading the model gives when it flags ``categories`` (real flags, as ``OnnxClassifier.flags`` makes)."""
    from components.core.taxonomy import category
    from components.model.onnx_runtime import Flag

    return agent.reading([Flag(c, score, 0.5, category(c).severity) for c in categories])


def _observation(content_type, text, history=(), conflicting=()):
    """A real observation of the environment's tasks, showing ``text`` as the item (and ``history`` before it)."""
    task = {"ad_copy": "ad-policy-compliance", "whatsapp_message": "thread-moderation-hard"}.get(
        content_type, "single-label-classify")
    env, seed = ModerationEnvironment(), 1
    while (obs := env.reset(task=task, seed=seed)).content.type != content_type:
        seed += 1  # single-label mixes posts and image descriptions
    history = [ThreadMessage(content_id=f"h{i}", sender="a", text=t) for i, t in enumerate(history)]
    return obs.model_copy(update={
        "content": obs.content.model_copy(update={"text": text, "alt_text": None}), "thread_history": history,
        "conflicting_policies": list(conflicting)})


def test_classifier_agent_asks_for_review_of_a_language_it_cannot_read(classifier):
    reading = classifier.read("Я знаю, где ты живёшь, и завтра я приду к тебе.", "text_post")
    assert reading.labels == ("clean",) and "'ru'" in reading.not_judged and "not judged" in reading.not_judged
    action = classifier.act(_observation("text_post", "Я знаю, где ты живёшь, и завтра я приду к тебе."))
    assert (action.labels, action.action, action.confidence) == (["clean"], "request_review", 0.0)
    emoji = classifier.act(_observation("text_post", "😂😂 !!! 👍"))
    assert (emoji.labels, emoji.action, emoji.policy_citations) == (["clean"], "approve", [])
    assert emoji.reasoning.startswith("no words to judge")


@pytest.mark.parametrize("categories, content_type, labels, action, cited", [
    (["spam"], "text_post", ("spam",), "remove", ["CS_SPAM_001"]),            # was restrict by severity
    (["adult_content"], "text_post", ("nudity",), "restrict", ["CS_NUDE_001"]),
    (["ncii"], "text_post", ("nudity", "harassment"), "escalate", ["CS_NUDE_002"]),   # escalate before remove
    (["threats"], "text_post", ("violence",), "remove", ["CS_VIOL_001"]),     # remove before CS_VIOL_002's restrict
    (["self_harm"], "whatsapp_message", ("self_harm",), "escalate", ["CS_SELF_002"]),
    (["sextortion"], "text_post", ("harassment", "scam"), "remove", ["CS_SCAM_001", "CS_HARASS_001"]),
    (["spam"], "ad_copy", ("spam",), "remove", ["AD_SPAM_001"]),
    (["scam_patterns"], "ad_copy", ("scam",), "remove", ["CS_SCAM_001", "AD_FIN_001"]),
])
def test_the_action_follows_the_excerpts_rule_precedence(classifier, categories, content_type, labels, action,
                                                         cited):
    rules = policy_book().excerpt(content_type)
    reading = _reading(classifier, *categories)
    decided, deciding, why = classifier.judge(reading, rules)
    assert reading.labels == labels and decided == action and [r.id for r in deciding] == cited
    for rule_id in cited:
        assert rule_id in " ".join(why) and policy_book()[rule_id].title in " ".join(why)


def test_labels_no_rule_covers_fall_back_to_the_severity_table(classifier):
    from moderation_env.vocab import table

    rules = policy_book().excerpt("ad_copy")          # no ad rule covers harassment
    action, deciding, why = classifier.judge(_reading(classifier, "harassment", score=0.95), rules)
    assert table()["action_by_severity"]["medium"]["actions"][0] == action == "restrict"
    assert deciding == [] and "no rule of the excerpt covers harassment" in " ".join(why)


def test_what_the_categories_cannot_express_is_named_not_guessed(classifier):
    ad = classifier.judge(_reading(classifier), policy_book().excerpt("ad_copy"))
    assert ad[0] == "request_review" and ad[1] == []        # targeting and disclaimers: a person checks
    for rule_id in ("AD_AGE_001", "AD_AGE_002", "AD_REGION_001", "AD_POL_001", "AD_CLAIM_001"):
        assert rule_id in " ".join(ad[2])
    post = classifier.judge(_reading(classifier), policy_book().excerpt("text_post"))
    assert post[0] == "approve"
    reason = " ".join(post[2])
    assert all(r in reason for r in ("CS_MISINFO_001", "CS_MISINFO_002", "CS_TERR_001"))
    assert "misinformation, terrorism" in reason and "AD_" not in reason
    # a flagged ad still takes its rule's action; the form rules are named all the same
    spam = classifier.judge(_reading(classifier, "spam"), policy_book().excerpt("ad_copy"))
    assert spam[0] == "remove" and "AD_POL_001" in " ".join(spam[2])
    # confidence shrinks with the share of the excerpt the categories cannot judge
    clean = _reading(classifier)
    assert classifier.confidence(clean, "approve", policy_book().excerpt("text_post")) == round(10 / 13, 4)
    assert classifier.confidence(clean, "request_review", policy_book().excerpt("ad_copy")) == round(
        6 / 11 / 2, 4)


def test_a_protection_in_conflict_is_not_overruled_by_a_flag(classifier):
    rules = policy_book().excerpt("text_post")
    book = policy_book()
    action, deciding, why = classifier.judge(_reading(classifier, "hate_speech"), rules,
                                             [book["CS_HATE_001"], book["CS_HATE_002"]])
    assert (action, deciding) == ("request_review", [])
    assert "CS_HATE_001" in why[-2] and "CS_HATE_002 (Counter-speech and reclaimed terms)" in why[-2]
    action, _, why = classifier.judge(_reading(classifier), rules, [book["CS_HARASS_001"], book["CS_POL_001"]])
    assert action == "approve" and "CS_POL_001 (Protected political speech) stands" in " ".join(why)
    action, deciding, why = classifier.judge(_reading(classifier, "self_harm"), rules,
                                             [book["CS_SELF_001"], book["CS_SELF_002"]])
    assert action == "escalate" and [r.id for r in deciding] == ["CS_SELF_002"]
    assert "CS_SELF_002 (People at risk) wins by precedence (escalate)" in " ".join(why)


def test_the_thread_action_is_the_strongest_so_far(classifier):
    obs = _observation("whatsapp_message", "😂😂 !!! 👍", history=["👍👍", "Я знаю, где ты живёшь."])
    action = classifier.act(obs)
    assert (action.labels, action.action) == (["clean"], "request_review")   # message h1 could not be read
    assert "thread so far: request_review, from message h1" in action.reasoning


@pytest.mark.slow
def test_classifier_agent_plays_every_task_by_the_excerpt(classifier):
    mapping = table()["category_to_labels"]
    allowed = {label for labels in mapping.values() for label in labels} | {"clean"}
    rank = {a: i for i, a in enumerate(reversed(ACTION_PRECEDENCE))}
    env = ModerationEnvironment()
    for task in TASKS:
        obs, thread = env.reset(task=task, seed=42), []
        while not obs.done:
            action = classifier.act(obs)
            assert set(action.labels) <= allowed and 0.0 <= action.confidence <= 1.0
            for rule_id in action.policy_citations:  # the deciding rules: cover the labels, ask for the action
                rule = policy_book()[rule_id]
                assert set(rule.labels) <= set(action.labels) and rule.action == action.action \
                    or "thread so far" in action.reasoning
            if obs.content.type == "ad_copy":
                assert "not judged: AD_AGE_001" in action.reasoning and action.action != "approve"
            if obs.content.message_index:            # a thread's action never weakens
                assert rank[action.action] >= rank[thread[-1]]
            thread = thread + [action.action] if obs.content.message_index else [action.action]
            obs = env.step(action)


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
