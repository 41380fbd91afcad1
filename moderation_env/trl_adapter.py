"""The environment as a TRL ``environment_factory`` (GRPOTrainer): a no-argument class whose
``reset(**columns)`` starts an episode from a dataset row and whose one public method,
``moderate(...)``, is the tool the policy calls once per item.

    from trl import GRPOConfig, GRPOTrainer
    from moderation_env.trl_adapter import ModerationToolEnv, episode_reward, make_dataset

    trainer = GRPOTrainer(model="Qwen/Qwen3-0.6B", train_dataset=make_dataset(episodes_per_task=64),
                          reward_funcs=episode_reward, environment_factory=ModerationToolEnv,
                          args=GRPOConfig(max_completion_length=4096))

The episode's score (in [0, 1]; steps not taken count 0) is the reward.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import ValidationError

from moderation_env.agents import render_observation
from moderation_env.environment import DEFAULT_TASK, TASKS, ModerationEnvironment
from moderation_env.models import ModerationAction, ModerationObservation

PROMPT = ("You are a content moderator working through a queue. For each item shown, call the moderate tool "
          "once with your decision; after each call you get feedback and the next item. Stop when the queue is empty.")


class ModerationToolEnv:
    """One moderation episode per rollout; ``moderate`` is the model's tool."""

    def __init__(self) -> None:
        self._env = ModerationEnvironment()
        self._obs: Optional[ModerationObservation] = None

    def reset(self, **kwargs: Any) -> str:
        """Start an episode from a dataset row's columns: ``task`` and ``seed`` (others ignored)."""
        task = kwargs.get("task") or DEFAULT_TASK
        seed = kwargs.get("seed")
        self._obs = self._env.reset(task=task, seed=int(seed) if seed is not None else None)
        return render_observation(self._obs)

    def moderate(self, labels: list[str], action: str, confidence: float, reasoning: str,
                 policy_citations: list[str]) -> str:
        """Record the moderation decision for the item currently shown, and get the next item.

        Args:
            labels: Violation labels of the item (hate_speech, violence, nudity, spam, misinformation, harassment, self_harm, terrorism, scam), or ["clean"] if it violates nothing.
            action: One of approve, remove, escalate, restrict, request_review.
            confidence: How sure you are, from 0 to 1; confident mistakes are penalised.
            reasoning: Why, naming the rule that decides; graded where policies conflict.
            policy_citations: Ids of the policy rules applied, for example ["AD_AGE_001"]; [] if none.

        Returns:
            The reward of this decision and the next item, or the episode's score when the queue is empty.
        """
        if self._obs is None:
            raise ValueError("no episode: the trainer must call reset first")
        if self._obs.done:
            raise ValueError(f"the queue is empty; episode score {self._obs.episode_score}")
        try:
            decision = ModerationAction(content_id=self._obs.content.id, labels=labels, action=action,
                                        confidence=confidence, reasoning=reasoning, policy_citations=policy_citations)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"invalid decision, nothing recorded: {problems}") from None
        self._obs = self._env.step(decision)
        head = f"reward {self._obs.reward:+.3f} {self._obs.last_reward_components}"
        if self._obs.done:
            return f"{head}\nqueue empty; episode score {self._obs.episode_score:.3f}"
        return f"{head}\nnext item:\n{render_observation(self._obs)}"

    @property
    def score(self) -> float:
        """The episode score so far: sum of rewards / steps of the task, clamped to [0, 1]."""
        from moderation_env.graders import episode_score

        s = self._env.state
        return episode_score(s.rewards, s.max_steps) if s.max_steps else 0.0


def episode_reward(environments: list[ModerationToolEnv], **kwargs: Any) -> list[float]:
    """TRL reward function: each rollout's episode score."""
    return [env.score for env in environments]


def make_dataset(tasks: list[str] | None = None, episodes_per_task: int = 16, seed: int = 0):
    """A ``datasets.Dataset`` (or, without ``datasets`` installed, the list of rows): one row per
    episode with the prompt and the ``task``/``seed`` columns ``reset`` reads."""
    rows = [{"prompt": [{"role": "user", "content": PROMPT}], "task": task, "seed": seed * 100_000 + i}
            for task in (tasks or list(TASKS)) for i in range(episodes_per_task)]
    try:
        from datasets import Dataset
    except ImportError:
        return rows
    return Dataset.from_list(rows)
