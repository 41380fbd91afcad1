"""The moderation environment (OpenEnv ``Environment``): four tasks over the item bank.

Each instance is one episode at a time and shares nothing mutable with other instances (the
item bank and policy book are read-only), so every WebSocket or HTTP session gets its own.
The grader always scores the item this instance served; an action naming another
``content_id`` is an error for that step (reward −1), never graded against that other item.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import EnvironmentMetadata

from moderation_env import graders
from moderation_env.items import GoldItem, ItemBank, default_bank
from moderation_env.models import (ModerationAction, ModerationObservation, ModerationState, PolicyRule,
                                   PublishedItem, ThreadMessage)
from moderation_env.policy import policy_book
from components.core.params import BENCHMARK_TASKS
from moderation_env.vocab import ACTIONS, LABELS

ENV_NAME = "content-moderation"
ENV_VERSION = "1.0.0"
DEFAULT_TASK = "single-label-classify"


class EpisodeError(RuntimeError):
    """A call that does not fit the episode's state (step before reset, step after done)."""


_COMMON = (
    f"Labels: {', '.join(LABELS)} (use ['clean'] alone for no violation). Actions: {', '.join(ACTIONS)}. "
    "Send {content_id (the id of the item shown), labels, action, confidence 0..1, reasoning, policy_citations}. "
    "Overconfident mistakes are penalised quadratically."
)


@dataclass(frozen=True)
class Task:
    name: str
    max_steps: int
    grader: Callable
    pick: Callable[[ItemBank, random.Random, int], list[GoldItem]]
    instructions: str


def _stratified(items: list[GoldItem], rng: random.Random, n: int, key: Callable[[GoldItem], Any]) -> list[GoldItem]:
    """n items spread over the groups of ``key`` (round robin over groups in a seeded order)."""
    groups: dict[Any, list[GoldItem]] = defaultdict(list)
    for item in sorted(items, key=lambda i: i.id):
        groups[key(item)].append(item)
    order = sorted(groups, key=str)
    rng.shuffle(order)
    for g in order:
        rng.shuffle(groups[g])
    picked: list[GoldItem] = []
    while len(picked) < n and any(groups.values()):
        for g in order:
            if groups[g] and len(picked) < n:
                picked.append(groups[g].pop())
    rng.shuffle(picked)
    return picked


def _posts(bank: ItemBank) -> list[GoldItem]:
    return bank.by_type["text_post"] + bank.by_type["image_description"]


def _pick_single(bank: ItemBank, rng: random.Random, n: int) -> list[GoldItem]:
    pool = [i for i in _posts(bank) if len(i.gold.labels) == 1]
    return _stratified(pool, rng, n, lambda i: i.gold.labels[0])


def _pick_multi(bank: ItemBank, rng: random.Random, n: int) -> list[GoldItem]:
    return _stratified(_posts(bank), rng, n, lambda i: (len(i.gold.labels) > 1, i.gold.labels[0]))


def _pick_ads(bank: ItemBank, rng: random.Random, n: int) -> list[GoldItem]:
    return _stratified(bank.by_type["ad_copy"], rng, n, lambda i: i.gold.violated_rules)


def _pick_threads(bank: ItemBank, rng: random.Random, n: int) -> list[GoldItem]:
    """Whole threads, in message order, whose lengths add up to exactly n messages."""
    threads = [bank.threads[t] for t in sorted(bank.threads)]
    for _ in range(500):
        rng.shuffle(threads)
        chosen, total = [], 0
        for t in threads:
            if total + len(t) <= n:
                chosen.append(t)
                total += len(t)
        if total == n:
            return [m for t in chosen for m in t]
    raise ValueError(f"the bank's threads cannot fill an episode of exactly {n} messages")


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("single-label-classify", 10, graders.grade_single_label, _pick_single,
         "Give the single label that best describes each post or image description (the first label counts) "
         "and the action it needs. Reward: 0.6 label (near misses get partial credit) + 0.4 action. " + _COMMON),
    Task("multi-label-classify", 12, graders.grade_multi_label, _pick_multi,
         "Give every label that applies and the action. Reward: 0.6 label-set F1 (near misses get partial "
         "credit) + 0.4 action, minus 0.1 per label with no basis (at most 0.3). " + _COMMON),
    Task("ad-policy-compliance", 10, graders.grade_ad_policy, _pick_ads,
         "Check each ad, its advertiser and its targeting (age range, regions) against the ad rules. Cite the ids "
         "of every rule the ad breaks (none for a compliant ad). Reward: 0.35 label F1 + 0.35 citation F1 + "
         "0.3 action. " + _COMMON),
    Task("thread-moderation-hard", 15, graders.grade_thread_message, _pick_threads,
         "Messages of WhatsApp-style group threads arrive one at a time; thread_history holds the earlier ones. "
         "Label the current message only; the action is what the thread needs given everything said so far "
         "(on a thread's last message, the thread-level action). Where conflicting_policies is not empty, "
         "explain in reasoning which rule wins and why. Reward: label F1, action and (on conflicts) reasoning; "
         "removing protected political speech costs 0.5. " + _COMMON),
)}


assert tuple(TASKS) == BENCHMARK_TASKS, "components.core.params.BENCHMARK_TASKS must list environment.TASKS"


class ModerationEnvironment(Environment[ModerationAction, ModerationObservation, ModerationState]):
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, bank: Optional[ItemBank] = None, default_task: str = DEFAULT_TASK):
        super().__init__()
        self.bank = bank or default_bank()
        self.book = policy_book()
        if default_task not in TASKS:
            raise ValueError(f"unknown task {default_task!r}; tasks: {', '.join(TASKS)}")
        self.default_task = default_task
        self._task: Optional[Task] = None
        self._items: list[GoldItem] = []
        self._last: dict[str, float] = {}
        self._state = ModerationState(bank_version=self.bank.version)

    # ------------------------------------------------------------------ OpenEnv API

    def reset(self, seed: Optional[int] = None, episode_id: Optional[str] = None, task: Optional[str] = None,
              **kwargs: Any) -> ModerationObservation:
        name = task or self.default_task
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        self._task = TASKS[name]
        self._items = self._task.pick(self.bank, random.Random(f"{name}:{seed}"), self._task.max_steps)
        self._last = {}
        self._state = ModerationState(episode_id=episode_id or str(uuid.uuid4()), step_count=0, task=name, seed=seed,
                                      max_steps=self._task.max_steps, bank_version=self.bank.version,
                                      served_ids=[self._items[0].id])
        return self._observation(reward=None, error=None)

    def step(self, action: ModerationAction, timeout_s: Optional[float] = None, **kwargs: Any) -> ModerationObservation:
        if self._task is None:
            raise EpisodeError("no episode: call reset first")
        if self._state.done:
            raise EpisodeError(f"episode {self._state.episode_id} is over (score {self._state.episode_score}); "
                               "call reset to start another")
        item = self._items[self._state.step_count]
        error = None
        if action.content_id != item.id:
            error = (f"content_id {action.content_id!r} is not the item served ({item.id!r}); "
                     f"this step scores {graders.WRONG_ITEM_REWARD}")
            grade = graders.StepGrade(graders.WRONG_ITEM_REWARD, {"content_id_error": 1.0,
                                                                   "reward": graders.WRONG_ITEM_REWARD})
            self._state.errors += 1
        else:
            grade = self._task.grader(action, item)
        s = self._state
        s.step_count += 1
        s.rewards.append(round(grade.reward, 6))
        s.decisions_log.append({"step": s.step_count - 1, "content_id": action.content_id[:128],
                                "labels": list(action.labels), "action": action.action,
                                "confidence": action.confidence, "reward": round(grade.reward, 6),
                                "breakdown": dict(grade.components)})
        s.total_reward = round(sum(s.rewards), 6)
        self._last = grade.components
        if s.step_count >= s.max_steps:
            s.done = True
            s.episode_score = round(graders.episode_score(s.rewards, s.max_steps), 6)
        else:
            s.served_ids.append(self._items[s.step_count].id)
        return self._observation(reward=grade.reward, error=error)

    @property
    def state(self) -> ModerationState:
        return self._state

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(
            name=ENV_NAME, version=ENV_VERSION, author="content-moderation project",
            description=("Content moderation environment: text posts, image descriptions, ads with targeting and "
                         "WhatsApp-style threads, graded against a policy book. Tasks: " + ", ".join(
                             f"{t.name} ({t.max_steps} steps)" for t in TASKS.values())),
        )

    # ------------------------------------------------------------------ helpers

    def _observation(self, reward: Optional[float], error: Optional[str]) -> ModerationObservation:
        s, task = self._state, self._task
        assert task is not None
        common = dict(episode_id=s.episode_id, task=task.name, task_name=task.name, step=s.step_count,
                      max_steps=s.max_steps, instructions=task.instructions,
                      last_reward_components=dict(self._last), last_error=error, reward=reward, done=s.done)
        if s.done:
            return ModerationObservation(**common, episode_score=s.episode_score)
        item = self._items[s.step_count]
        history = []
        if item.public.thread_id is not None:
            history = [ThreadMessage(content_id=m.id, sender=m.public.sender or "", text=m.public.text,
                                     content_type=m.public.type, author_region=m.public.author_region,
                                     language=m.public.language)
                       for m in self.bank.threads[item.public.thread_id][: item.public.message_index]]
        rules = self.book.excerpt(item.public.type)
        return ModerationObservation(
            **common, content=item.public, content_item=PublishedItem.of(item.public),
            policy_excerpt=policy_text(rules), policy_rules=rules, thread_history=history,
            conflicting_policies=list(item.conflicting_policies),
            conflicting_rules=[self.book[r].public() for r in item.conflicting_policies])


def policy_text(rules: list[PolicyRule]) -> str:
    """The rules as the published environment's ``policy_excerpt`` text: ``[ID] title: text`` per line."""
    return "\n".join(f"[{r.id}] {r.title}: {r.text}" for r in rules)
