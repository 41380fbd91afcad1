"""Play episodes: an agent against the environment, in process or against a server over
WebSocket. What the CLI, the benchmark stage and the benchmark script all call."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Optional

from moderation_env.agents import Agent
from moderation_env.environment import TASKS, ModerationEnvironment
from moderation_env.models import ModerationAction, ModerationObservation


class LocalSession:
    """The environment in this process."""

    def __init__(self, env: Optional[ModerationEnvironment] = None):
        self.env = env or ModerationEnvironment()

    def reset(self, task: str, seed: int) -> ModerationObservation:
        return self.env.reset(task=task, seed=seed)

    def step(self, action: ModerationAction) -> ModerationObservation:
        return self.env.step(action)

    def close(self) -> None:
        pass


class RemoteSession:
    """A served environment, through the typed WebSocket client (one session for all episodes)."""

    def __init__(self, base_url: str):
        from moderation_env.client import ModerationEnvClient

        self.client = ModerationEnvClient(base_url=base_url).sync()
        self.client.connect()

    def reset(self, task: str, seed: int) -> ModerationObservation:
        return self.client.reset(task=task, seed=seed).observation

    def step(self, action: ModerationAction) -> ModerationObservation:
        return self.client.step(action).observation

    def close(self) -> None:
        self.client.close()


@dataclass
class StepRecord:
    step: int
    content_id: str
    content_type: str
    labels: list[str]
    action: str
    confidence: float
    reward: float
    components: dict[str, float]
    error: Optional[str] = None


@dataclass
class EpisodeResult:
    task: str
    seed: int
    agent: str
    episode_id: Optional[str]
    score: float
    total_reward: float
    seconds: float
    steps: list[StepRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def run_episode(session, agent: Agent, task: str, seed: int,
                on_step: Callable[[StepRecord], None] | None = None) -> EpisodeResult:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    started = time.perf_counter()
    obs = session.reset(task, seed)
    result = EpisodeResult(task, seed, agent.name, obs.episode_id, 0.0, 0.0, 0.0)
    while not obs.done:
        item = obs.content
        action = agent.act(obs)
        obs = session.step(action)
        record = StepRecord(obs.step, item.id, item.type, list(action.labels), action.action,
                            action.confidence, float(obs.reward or 0.0), dict(obs.last_reward_components),
                            obs.last_error)
        result.steps.append(record)
        if on_step:
            on_step(record)
    result.score = float(obs.episode_score or 0.0)
    result.total_reward = round(sum(s.reward for s in result.steps), 6)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def expand_tasks(spec: str | list[str]) -> list[str]:
    names = list(TASKS) if spec == "all" or spec == ["all"] else ([spec] if isinstance(spec, str) else list(spec))
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task {unknown}; tasks: all, {', '.join(TASKS)}")
    return names


def run_tasks(session, agent: Agent, tasks: list[str], seed: int,
              on_step: Callable[[str, StepRecord], None] | None = None) -> dict:
    """Every task once with the same seed; a report with per-task scores and step lines."""
    episodes = []
    for task in tasks:
        episodes.append(run_episode(session, agent, task, seed,
                                    (lambda rec, t=task: on_step(t, rec)) if on_step else None))
    scores = {e.task: round(e.score, 4) for e in episodes}
    return {"agent": agent.name, "seed": seed, "scores": scores,
            "mean_score": round(sum(scores.values()) / len(scores), 4) if scores else 0.0,
            "agent_failures": getattr(agent, "failures", 0),
            "episodes": [e.to_dict() for e in episodes]}
