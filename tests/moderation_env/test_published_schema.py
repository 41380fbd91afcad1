"""The environment speaks the published schema of the environment it reimplements
(pratap-nitjsr/meta-content-moderation-env: README "API Usage" and server/models.py), against a real
uvicorn server on 127.0.0.1: its curl sequence (health, reset, step, state) replayed with a cookie
jar, its agent loop played to the end, and its one shared episode not copied."""

from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.moderation_env.serving import serve_in_thread
from moderation_env.environment import TASKS
from moderation_env.server import EPISODE_HEADER, create_moderation_app


# The published models, as its README and server/models.py give them (only the fields they name).
class PubItem(BaseModel):
    content_id: str
    content_type: str
    text: str
    author_region: str
    language: str
    author_history: list[str]


class PubObservation(BaseModel):
    step: int = Field(ge=0)
    content_item: PubItem
    policy_excerpt: str
    thread_history: list[dict[str, Any]]
    conflicting_policies: list[str]
    task_name: str
    instructions: str


class PubStepResult(BaseModel):
    observation: dict[str, Any]
    reward: float
    done: bool
    info: dict[str, Any]


class PubState(BaseModel):
    model_config = ConfigDict(extra="allow")

    task_name: str
    episode_id: str
    current_step: int
    max_steps: int
    done: bool
    cumulative_reward: float
    items_seen: int
    items_remaining: int
    decisions_log: list[dict[str, Any]]
    score: float = Field(ge=0.0, le=1.0)


@pytest.fixture(scope="module")
def base_url():
    with serve_in_thread(create_moderation_app()) as url:
        yield url


def decision(obs: dict) -> dict:
    """The README's bare action for the item shown."""
    return {"content_id": obs["content_item"]["content_id"], "labels": ["clean"], "action": "approve",
            "confidence": 0.9, "reasoning": "", "policy_citations": []}


def test_the_published_curl_sequence(base_url):
    with httpx.Client(base_url=base_url) as curl:  # curl -b jar -c jar
        r = curl.get("/health")
        assert r.status_code == 200 and r.json()["status"]
        r = curl.post("/reset", json={"task": "single-label-classify", "seed": 42},
                      headers={"Content-Type": "application/json"})
        assert r.status_code == 200
        obs = PubObservation.model_validate(r.json()).model_dump()
        assert obs["step"] == 0 and obs["task_name"] == "single-label-classify"
        assert obs["policy_excerpt"].startswith("[CS_")
        assert obs["content_item"]["content_type"] in ("text_post", "image_description")
        assert r.json()["observation"]["content"]["id"] == obs["content_item"]["content_id"]  # ours beside
        r = curl.post("/step", json=decision(obs), headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        result = PubStepResult.model_validate(r.json())
        nxt = PubObservation.model_validate(result.observation)
        assert nxt.step == 1 and not result.done and result.info["step"] == 1
        r = curl.get("/state")
        assert r.status_code == 200
        state = PubState.model_validate(r.json())
        assert state.current_step == state.items_seen == 1 and state.items_remaining == 9 and state.max_steps == 10
        assert state.cumulative_reward == pytest.approx(result.reward)
        assert state.decisions_log[0]["content_id"] == obs["content_item"]["content_id"]
        assert state.episode_id == r.json()["episode_id"] == result.info["episode_id"]


def test_the_published_agent_loop_plays_every_task_to_the_end(base_url):
    for task in TASKS:
        with httpx.Client(base_url=base_url) as client:
            obs, rewards = client.post("/reset", json={"task": task, "seed": 7}).json(), []
            for _ in range(TASKS[task].max_steps):
                result = client.post("/step", json=decision(obs)).json()
                rewards.append(float(result["reward"]))
                if result["done"]:
                    break
                obs = result["observation"]
                assert obs["thread_history"] == [] or "text" in obs["thread_history"][-1]
            state = client.get("/state").json()
        assert result["done"] and len(rewards) == TASKS[task].max_steps
        assert state["score"] == pytest.approx(state["episode_score"]) and state["done"] is True
        assert state["task_name"] == task and all(isinstance(c, str) for c in obs["conflicting_policies"])


def test_episodes_are_not_shared_between_clients_as_in_the_published_one(base_url):
    with httpx.Client(base_url=base_url) as a, httpx.Client(base_url=base_url) as b, \
            httpx.Client(base_url=base_url) as stranger:
        obs_a = a.post("/reset", json={"task": "ad-policy-compliance", "seed": 1}).json()
        obs_b = b.post("/reset", json={"task": "thread-moderation-hard", "seed": 1}).json()
        assert a.post("/step", json=decision(obs_a)).status_code == 200
        r = stranger.post("/step", json=decision(obs_b))
        assert r.status_code == 422 and "episode_id is required" in r.json()["detail"]
        assert b.get("/state").json()["current_step"] == 0 and a.get("/state").json()["current_step"] == 1
        # the header names an episode as well as the cookie does
        eid = a.get("/state").json()["episode_id"]
        r = stranger.get("/state", headers={EPISODE_HEADER: eid})
        assert r.json()["task_name"] == "ad-policy-compliance"
