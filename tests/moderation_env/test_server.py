"""The served environment: the HTTP session layer, OpenEnv's endpoints, 32 concurrent WebSocket
sessions, `openenv validate --url` against a real uvicorn server, and no gold on the wire."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.moderation_env.serving import serve_in_thread
from moderation_env.agents import RandomAgent
from moderation_env.client import ModerationEnvClient
from moderation_env.environment import TASKS
from moderation_env.items import ItemBank
from moderation_env.runner import LocalSession, run_episode
from moderation_env.server import create_moderation_app
from flows.cli.env import env_app

ROOT = Path(__file__).resolve().parents[2]
BANK = ROOT / "moderation_env/resources/items.jsonl"
SENTINEL = "qqgoldsentinelqq"


def sentinel_bank() -> ItemBank:
    """The real bank with a marker in every gold field that holds free text."""
    rows = []
    for line in BANK.read_text("utf-8").splitlines():
        row = json.loads(line)
        row["gold"]["reasoning_keywords"] = [*row["gold"]["reasoning_keywords"], SENTINEL]
        row["source"] = f"{row['source']} {SENTINEL}"
        rows.append(json.dumps(row))
    return ItemBank.from_lines(rows, "sentinel")


@pytest.fixture(scope="module")
def http():
    return TestClient(create_moderation_app(bank=sentinel_bank()))


@pytest.fixture(scope="module")
def server():
    """A real uvicorn server on 127.0.0.1 serving the sentinel bank, in a thread."""
    with serve_in_thread(create_moderation_app(bank=sentinel_bank(), max_concurrent_envs=40),
                         ws_max_size=16 * 1024 * 1024) as url:
        yield url


def action_for(obs: dict, **over) -> dict:
    return {"content_id": obs["content"]["id"], "labels": ["clean"], "action": "approve", "confidence": 0.5, **over}


def test_http_session_sequence_reset_step_state(http):
    r = http.post("/reset", json={"task": "ad-policy-compliance", "seed": 42})
    assert r.status_code == 200
    obs = r.json()["observation"]
    eid = obs["episode_id"]
    assert obs["task"] == "ad-policy-compliance" and obs["step"] == 0 and obs["content"]["type"] == "ad_copy"
    assert any(rule["id"] == "AD_AGE_001" for rule in obs["policy_rules"])
    assert "[AD_AGE_001]" in obs["policy_excerpt"]
    assert r.headers["x-episode-id"] == eid and http.cookies["moderation_episode"] == eid
    first = obs["content"]["id"]
    r = http.post("/step", json={"episode_id": eid, "action": action_for(obs)})
    assert r.status_code == 200
    body = r.json()
    assert body["observation"]["step"] == 1 and body["reward"] == body["observation"]["last_reward_components"]["reward"]
    state = http.get("/state", params={"episode_id": eid}).json()
    assert state["episode_id"] == eid and state["step_count"] == 1 and state["task"] == "ad-policy-compliance"
    assert state["seed"] == 42 and state["served_ids"][0] == first and len(state["rewards"]) == 1
    # the sequence is the in-process episode with the same seed
    local = LocalSession().reset("ad-policy-compliance", 42)
    assert local.content.id == first
    # a second episode over HTTP does not disturb the first
    other = http.post("/reset", json={"task": "single-label-classify", "seed": 1}).json()["observation"]
    assert other["episode_id"] != eid
    assert http.get("/state", params={"episode_id": eid}).json()["step_count"] == 1
    obs = body["observation"]
    while not obs.get("episode_score") and obs["content"]:
        obs = http.post("/step", json={"episode_id": eid, "action": action_for(obs)}).json()["observation"]
    assert http.get("/state", params={"episode_id": eid}).json()["done"] is True
    r = http.post("/step", json={"episode_id": eid, "action": action_for(other)})
    assert r.status_code == 409 and "over" in r.json()["detail"]
    assert http.delete(f"/sessions/{eid}").status_code == 200
    assert http.get("/state", params={"episode_id": eid}).status_code == 404


def test_http_errors_say_what_to_do(http):
    obs = http.post("/reset", json={"seed": 3}).json()["observation"]
    http.cookies.clear()
    r = http.post("/step", json={"action": action_for(obs)})
    assert r.status_code == 422 and "episode_id is required" in r.json()["detail"]
    r = http.post("/step", json={"episode_id": "nope", "action": action_for(obs)})
    assert r.status_code == 404 and "POST /reset" in r.json()["detail"]
    r = http.post("/reset", json={"task": "nope"})
    assert r.status_code == 422 and "unknown task 'nope'" in r.json()["detail"]
    r = http.post("/step", json={"episode_id": obs["episode_id"],
                                 "action": action_for(obs, labels=["profanity"], confidence=2, action="delete")})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail["message"].startswith("invalid action: labels.0: Input should be 'hate_speech'")
    assert {tuple(e["loc"]) for e in detail["errors"]} == {("labels", 0), ("confidence",), ("action",)}
    r = http.post("/step", json={"episode_id": obs["episode_id"], "action": {**action_for(obs), "gold": ["x"]}})
    assert r.status_code == 422 and "gold" in r.json()["detail"]["message"]
    # the invalid actions consumed nothing
    assert http.get("/state", params={"episode_id": obs["episode_id"]}).json()["step_count"] == 0


def test_openenv_endpoints(http):
    assert http.get("/health").json()["status"] == "healthy"
    meta = http.get("/metadata").json()
    assert meta["name"] == "content-moderation" and "ad-policy-compliance" in meta["description"]
    schema = http.get("/schema").json()
    assert set(schema["action"]["properties"]) >= {"content_id", "labels", "action", "confidence", "reasoning",
                                                   "policy_citations"}
    assert "episode_id" in schema["observation"]["properties"]
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/reset", "/step", "/state", "/health", "/schema", "/metadata", "/mcp"} <= set(paths)
    assert http.get("/docs").status_code == 200
    http.cookies.clear()
    assert http.get("/state").json()["step_count"] == 0  # no episode named: a fresh environment, as in OpenEnv


def test_no_gold_in_any_http_response_over_whole_episodes(http):
    texts = []
    for task in TASKS:
        r = http.post("/reset", json={"task": task, "seed": 8})
        texts.append(r.text)
        obs, eid = r.json()["observation"], r.json()["observation"]["episode_id"]
        agent = RandomAgent(seed=3)
        from moderation_env.models import ModerationObservation

        while obs["content"]:
            action = agent.act(ModerationObservation.model_validate(obs)).model_dump(exclude={"metadata"})
            r = http.post("/step", json={"episode_id": eid, "action": action})
            texts += [r.text, http.get("/state", params={"episode_id": eid}).text]
            obs = r.json()["observation"]
    texts += [http.get(p).text for p in ("/schema", "/metadata", "/openapi.json")]
    for t in texts:
        assert SENTINEL not in t
        assert not any(f'"{k}"' in t for k in ("gold", "violated_rules", "reasoning_keywords",
                                               "protected_political_speech"))


async def _ws_episode(base_url: str, task: str, seed: int) -> tuple[list[str], list[float], str, list[str]]:
    agent, raw = RandomAgent(seed=seed), []
    async with ModerationEnvClient(base_url=base_url) as env:
        result = await env.reset(task=task, seed=seed)
        served, rewards = [], []
        while not result.done:
            served.append(result.observation.content.id)
            raw.append(result.observation.model_dump_json())
            result = await env.step(agent.act(result.observation))
            rewards.append(result.reward)
            await asyncio.sleep(0)  # interleave the clients
        state = await env.state()
        raw += [result.observation.model_dump_json(), state.model_dump_json()]
        assert state.served_ids == served and state.step_count == len(served)
        return served, rewards, state.episode_id, raw


def test_32_concurrent_websocket_sessions_are_isolated(server):
    tasks = list(TASKS)
    jobs = [(tasks[i % 4], 100 + i) for i in range(32)]

    async def main():
        return await asyncio.gather(*(_ws_episode(server, t, s) for t, s in jobs))

    results = asyncio.run(main())
    assert len({r[2] for r in results}) == 32
    for (task, seed), (served, rewards, _, raw) in zip(jobs, results):
        alone = run_episode(LocalSession(), RandomAgent(seed=seed), task, seed)
        assert served == [s.content_id for s in alone.steps]
        assert rewards == pytest.approx([s.reward for s in alone.steps])
        assert not any(SENTINEL in r for r in raw)


def test_openenv_validate_url_passes(server):
    openenv = Path(sys.executable).parent / "openenv"
    proc = subprocess.run([str(openenv), "validate", "--url", server], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["passed"] is True and report["mode"] == "simulation"
    assert {c["id"] for c in report["criteria"] if c["passed"]} >= {
        "openapi_version_available", "health_endpoint", "metadata_endpoint", "schema_endpoint", "mcp_endpoint",
        "mode_endpoint_consistency"}


def test_env_run_against_a_served_environment(server, tmp_path):
    out = tmp_path / "remote.json"
    result = CliRunner().invoke(env_app, ["run", "--agent", "random", "--task", "single-label-classify",
                                          "--seed", "42", "--url", server, "--output", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    remote = json.loads(out.read_text())
    local = run_episode(LocalSession(), RandomAgent(seed=42), "single-label-classify", 42)
    assert remote["url"] == server and remote["scores"]["single-label-classify"] == round(local.score, 4)


def test_sync_client_as_in_the_readme(server):
    from moderation_env.models import ModerationAction

    with ModerationEnvClient(base_url=server).sync() as env:
        result = env.reset(task="thread-moderation-hard", seed=42)
        steps = 0
        while not result.done:
            obs = result.observation
            result = env.step(ModerationAction(content_id=obs.content.id, labels=["clean"], action="approve",
                                               confidence=0.5, reasoning="", policy_citations=[]))
            steps += 1
        state = env.state()
    assert steps == 15 and 0.0 <= result.observation.episode_score <= 1.0
    assert state.done and state.episode_score == result.observation.episode_score
