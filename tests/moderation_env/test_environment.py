"""The moderation environment in process: tasks, seeds, the served-item rule, the item bank,
gold never leaving the server, the TRL adapter and the `env run` command."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from moderation_env.agents import ApproveAllAgent, RandomAgent
from moderation_env.build_items import build, unsafe
from moderation_env.environment import TASKS, EpisodeError, ModerationEnvironment
from moderation_env.items import ItemBank, ItemBankError, default_bank, parse_item
from moderation_env.models import ContentItem, ModerationAction
from moderation_env.policy import policy_book
from moderation_env.runner import LocalSession, expand_tasks, run_episode, run_tasks
from moderation_env.trl_adapter import ModerationToolEnv, episode_reward, make_dataset
from flows.cli.env import env_app

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT.parent / "shared" / "datasets"
GOLD_KEYS = {"gold", "violated_rules", "reasoning_keywords", "protected_political_speech", "source"}


def walk_keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from walk_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_keys(v)


def test_tasks_have_the_documented_lengths():
    assert {n: t.max_steps for n, t in TASKS.items()} == {
        "single-label-classify": 10, "multi-label-classify": 12, "ad-policy-compliance": 10,
        "thread-moderation-hard": 15}
    env = ModerationEnvironment()
    for name, task in TASKS.items():
        result = run_episode(LocalSession(env), ApproveAllAgent(), name, seed=3)
        assert len(result.steps) == task.max_steps and 0.0 <= result.score <= 1.0


def test_task_content_types():
    env = ModerationEnvironment()
    types = {"single-label-classify": {"text_post", "image_description"},
             "multi-label-classify": {"text_post", "image_description"},
             "ad-policy-compliance": {"ad_copy"}, "thread-moderation-hard": {"whatsapp_message"}}
    for name, allowed in types.items():
        result = run_episode(LocalSession(env), ApproveAllAgent(), name, seed=11)
        assert {s.content_type for s in result.steps} <= allowed


def test_a_seed_reproduces_the_episode_and_another_seed_does_not():
    def play(seed, task):
        env = ModerationEnvironment()
        r = run_episode(LocalSession(env), RandomAgent(seed=7), task, seed)
        return [s.content_id for s in r.steps], [s.reward for s in r.steps], r.score

    for task in TASKS:
        assert play(42, task) == play(42, task)
    assert play(42, "multi-label-classify")[0] != play(43, "multi-label-classify")[0]


def test_unseeded_reset_records_its_seed_so_it_can_be_replayed():
    env = ModerationEnvironment()
    env.reset(task="ad-policy-compliance")
    seed, served = env.state.seed, env.state.served_ids[:1]
    assert isinstance(seed, int)
    assert ModerationEnvironment().reset(task="ad-policy-compliance", seed=seed).content.id == served[0]


def test_thread_episodes_serve_whole_threads_in_order_with_growing_history():
    env = ModerationEnvironment()
    obs = env.reset(task="thread-moderation-hard", seed=5)
    seen = 0
    while not obs.done:
        c = obs.content
        assert c.type == "whatsapp_message" and c.message_index == len(obs.thread_history)
        if c.message_index == 0:
            seen += 1
        else:
            assert obs.thread_history[-1].content_id == f"wa-{c.thread_id}-{c.message_index - 1}"
        obs = env.step(ModerationAction(content_id=c.id, labels=["clean"], action="approve", confidence=0.1))
    assert env.state.step_count == 15 and seen >= 3


def test_the_grader_uses_the_served_item_and_a_wrong_id_scores_minus_one():
    env = ModerationEnvironment()
    obs = env.reset(task="single-label-classify", seed=1)
    served = obs.content.id
    other = next(i for i in default_bank().items if i != served)
    obs = env.step(ModerationAction(content_id=other, labels=["clean"], action="approve", confidence=0.0))
    assert obs.reward == -1.0 and obs.last_reward_components == {"content_id_error": 1.0, "reward": -1.0}
    assert served in obs.last_error and other in obs.last_error
    assert env.state.errors == 1 and env.state.step_count == 1 and obs.content.id != served


def test_step_before_reset_and_after_done_are_errors():
    env = ModerationEnvironment()
    action = ModerationAction(content_id="x", labels=["clean"], action="approve", confidence=0.5)
    with pytest.raises(EpisodeError, match="reset"):
        env.step(action)
    run_episode(LocalSession(env), ApproveAllAgent(), "single-label-classify", seed=2)
    with pytest.raises(EpisodeError, match="over"):
        env.step(action)
    with pytest.raises(ValueError, match="unknown task"):
        env.reset(task="nope")


def test_invalid_actions_are_rejected_by_the_model():
    base = dict(content_id="x", labels=["spam"], action="remove", confidence=0.5)
    for bad in ({"labels": ["profanity"]}, {"action": "delete"}, {"confidence": 1.5}, {"labels": []},
                {"labels": ["clean", "spam"]}, {"labels": ["spam", "spam"]}, {"gold": 1}):
        with pytest.raises(ValidationError):
            ModerationAction(**{**base, **bad})


def test_no_gold_in_any_observation_or_state_over_whole_episodes():
    env = ModerationEnvironment()
    for task in TASKS:
        obs = env.reset(task=task, seed=9)
        dumps = [obs.model_dump(), env.state.model_dump()]
        agent = RandomAgent(seed=1)
        while not obs.done:
            assert set(obs.content.model_dump()) == set(ContentItem.model_fields)
            obs = env.step(agent.act(obs))
            dumps += [obs.model_dump(), env.state.model_dump()]
        keys = set().union(*(set(walk_keys(d)) for d in dumps))
        assert not keys & GOLD_KEYS, keys & GOLD_KEYS


def test_the_item_bank_is_valid_modest_and_safe():
    bank = default_bank()
    counts = {t: len(v) for t, v in bank.by_type.items()}
    assert set(counts) == {"text_post", "image_description", "ad_copy", "whatsapp_message"}
    assert 200 <= len(bank.items) <= 600 and len(bank.threads) >= 10
    path = ROOT / "moderation_env/resources/items.jsonl"
    assert path.stat().st_size < 2_000_000
    book = policy_book()
    labels_seen = set()
    for item in bank.items.values():
        assert not unsafe(item.public.text), item.id
        labels_seen |= set(item.gold.labels)
        assert all(r in book.rules for r in item.gold.violated_rules + item.conflicting_policies)
        if item.gold.protected_political_speech:
            assert item.gold.action == "approve" and item.gold.labels == ("clean",)
    assert labels_seen == {"hate_speech", "violence", "nudity", "spam", "misinformation", "harassment",
                           "self_harm", "terrorism", "scam", "clean"}
    assert any(i.is_conflict for i in bank.by_type["whatsapp_message"])


def test_bank_validation_names_the_problem():
    row = json.loads((ROOT / "moderation_env/resources/items.jsonl").read_text("utf-8").splitlines()[0])
    with pytest.raises(ItemBankError, match="unknown labels, actions or rules"):
        parse_item({**row, "gold": {**row["gold"], "violated_rules": ["CS_NOPE_009"]}})
    with pytest.raises(ItemBankError, match="unknown fields"):
        parse_item({**row, "secret": 1})
    with pytest.raises(ItemBankError, match="repeat"):
        ItemBank([parse_item(row), parse_item(row)], "x")


@pytest.mark.skipif(not DATASETS.is_dir(), reason="../shared/datasets not present")
def test_build_items_reproduces_the_committed_bank(tmp_path):
    out = tmp_path / "items.jsonl"
    stats = build(DATASETS, out)
    assert out.read_bytes() == (ROOT / "moderation_env/resources/items.jsonl").read_bytes()
    assert stats["items"] == len(default_bank().items)


def test_runner_reports_every_task():
    report = run_tasks(LocalSession(), RandomAgent(seed=42), expand_tasks("all"), 42)
    assert list(report["scores"]) == list(TASKS)
    assert all(0.0 <= s <= 1.0 for s in report["scores"].values())
    with pytest.raises(ValueError, match="unknown task"):
        expand_tasks("everything")


def test_trl_adapter_plays_an_episode_through_its_tool():
    from transformers.utils import get_json_schema

    env = ModerationToolEnv()
    schema = get_json_schema(env.moderate)["function"]
    assert schema["name"] == "moderate"
    assert set(schema["parameters"]["required"]) == {"labels", "action", "confidence", "reasoning", "policy_citations"}
    assert [m for m in dir(env) if not m.startswith("_") and callable(getattr(env, m))] == ["moderate", "reset"]
    rows = make_dataset(["ad-policy-compliance"], episodes_per_task=2, seed=1)
    rows = list(rows)
    first = env.reset(**rows[0])
    assert "ad_copy" in first and "AD_AGE_001" in first
    with pytest.raises(ValueError, match="invalid decision"):
        env.moderate(["not-a-label"], "approve", 0.5, "", [])
    text = ""
    for _ in range(10):
        text = env.moderate(["clean"], "approve", 0.5, "looks compliant", [])
    assert "queue empty" in text
    other = ModerationToolEnv()
    other.reset(**rows[0])
    assert episode_reward([env, other]) == [env.score, 0.0]
    with pytest.raises(ValueError, match="queue is empty"):
        env.moderate(["clean"], "approve", 0.5, "", [])


def test_env_run_prints_steps_and_scores_and_writes_a_report(tmp_path):
    out = tmp_path / "run.json"
    result = CliRunner().invoke(env_app, ["run", "--agent", "approve-all", "--task", "all", "--seed", "42",
                                          "--output", str(out)])
    assert result.exit_code == 0, result.output
    step_lines = [line for line in result.output.splitlines() if line.startswith("[")]
    assert len(step_lines) == sum(t.max_steps for t in TASKS.values())
    report = json.loads(out.read_text())
    assert report["agent"] == "approve-all" and report["seed"] == 42 and list(report["scores"]) == list(TASKS)
    for task, score in report["scores"].items():
        assert task in result.output and f"{score:.3f}" in result.output
    bad = CliRunner().invoke(env_app, ["run", "--agent", "oracle"])
    assert bad.exit_code == 1 and "unknown agent" in bad.output
    missing = CliRunner().invoke(env_app, ["run", "--agent", "classifier", "--model", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no such model folder" in missing.output


@pytest.mark.skipif(not DATASETS.is_dir(), reason="../shared/datasets not present")
def test_research_only_sets_are_read_at_run_time_never_committed(tmp_path):
    from moderation_env.build_items import extended_bank

    committed = (ROOT / "moderation_env/resources/items.jsonl").read_text("utf-8")
    bank = extended_bank(DATASETS)
    extra = [i for i in bank.items.values() if i.id not in default_bank().items]
    assert {i.source.split()[0] for i in extra} == {"liar", "sdcnl", "cyberbullying"}
    assert not any(i.id in committed or i.public.text in committed for i in extra)
    assert not any(unsafe(i.public.text) for i in extra)
    assert {"misinformation", "self_harm", "harassment"} <= {x for i in extra for x in i.gold.labels}
    assert bank.version.endswith("+research-sets") and extended_bank(DATASETS).version == bank.version
    out = tmp_path / "r.json"
    result = CliRunner().invoke(env_app, ["run", "--agent", "random", "--task", "single-label-classify",
                                          "--datasets", str(DATASETS), "-q", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["bank_version"] == bank.version
    bad = CliRunner().invoke(env_app, ["run", "--datasets", str(tmp_path)])
    assert bad.exit_code == 1 and "not found" in bad.output


def test_benchmark_env_params_validate_without_importing_openenv():
    import subprocess
    import sys

    from components.core.params import BENCHMARK_TASKS, BenchmarkEnvParams

    assert BENCHMARK_TASKS == tuple(TASKS)  # the pipeline's copy of the task names is the environment's
    p = BenchmarkEnvParams()
    assert p.seed == 42 and p.tasks == list(TASKS) and p.baselines == ["random", "approve-all"]
    with pytest.raises(ValidationError, match="unknown task"):
        BenchmarkEnvParams(tasks=["everything"])
    with pytest.raises(ValidationError):
        BenchmarkEnvParams(seeds=1)
    code = "import sys, components.core.params; print('openenv' in sys.modules or 'moderation_env' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr
