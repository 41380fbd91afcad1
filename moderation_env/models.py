"""The wire types of the environment: action, observation, state, and the public view of an item.

Gold fields (labels, action, violated rules, reasoning keywords, the protected-speech flag) live
only in ``items.GoldItem`` on the server; none of these models has a field that could carry them.
"""

from __future__ import annotations

from typing import Optional

from openenv.core.env_server.types import Action, Observation, State
from pydantic import BaseModel, ConfigDict, Field, field_validator

from moderation_env.vocab import ActionName, ContentType, Label


class Targeting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    age_min: int = Field(ge=13, le=100)
    age_max: int = Field(ge=13, le=100)
    regions: list[str]


class AuthorHistory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_age_days: int = Field(ge=0)
    prior_violations: int = Field(ge=0)
    followers: int = Field(ge=0)
    verified: bool = False


class ThreadMessage(BaseModel):
    """A message earlier in the same thread (what the agent has already seen)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    content_id: str
    sender: str
    text: str


class ContentItem(BaseModel):
    """What the agent sees of an item: the content and its context, never its gold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    type: ContentType
    text: str
    author_region: str
    language: str
    author_history: AuthorHistory
    alt_text: Optional[str] = Field(None, description="image_description: the image's alt text")
    media_urls: list[str] = Field(default_factory=list, description="image_description: the media")
    advertiser: Optional[str] = Field(None, description="ad_copy: who pays for the ad")
    targeting: Optional[Targeting] = Field(None, description="ad_copy: who the ad is shown to")
    thread_id: Optional[str] = Field(None, description="whatsapp_message: the conversation")
    message_index: Optional[int] = Field(None, description="whatsapp_message: 0-based position in the thread")
    thread_length: Optional[int] = Field(None, description="whatsapp_message: messages in the thread")
    sender: Optional[str] = Field(None, description="whatsapp_message: who sent it")


class PolicyRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    labels: list[str]
    action: str
    text: str


class ModerationAction(Action):
    """One moderation decision on the item the environment served last."""

    content_id: str = Field(min_length=1, description="id of the item being moderated (must be the served item)")
    labels: list[Label] = Field(min_length=1, max_length=10, description="violation labels, or ['clean']")
    action: ActionName
    confidence: float = Field(ge=0.0, le=1.0, description="how sure the moderator is, 0..1")
    reasoning: str = Field("", max_length=4000, description="why; graded on policy-conflict cases")
    policy_citations: list[str] = Field(default_factory=list, max_length=20,
                                        description="ids of the rules applied, e.g. AD_AGE_001")

    @field_validator("labels")
    @classmethod
    def _no_duplicates(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"labels repeat a value: {v}")
        if "clean" in v and len(v) > 1:
            raise ValueError("'clean' cannot be combined with violation labels")
        return v


class ModerationObservation(Observation):
    episode_id: Optional[str] = Field(None, description="pass it to /step and /state over HTTP")
    task: str = ""
    step: int = Field(0, description="steps taken so far")
    max_steps: int = 0
    content: Optional[ContentItem] = Field(None, description="the item to moderate now; None when done")
    policy_excerpt: list[PolicyRule] = Field(default_factory=list, description="the rules for this content type")
    thread_history: list[ThreadMessage] = Field(default_factory=list)
    conflicting_policies: list[PolicyRule] = Field(default_factory=list,
                                                   description="rules pulling in opposite directions on this item")
    instructions: str = ""
    last_reward_components: dict[str, float] = Field(default_factory=dict)
    last_error: Optional[str] = None
    episode_score: Optional[float] = Field(None, description="the episode's score in [0, 1], once done")


class ModerationState(State):
    task: Optional[str] = None
    seed: Optional[int] = None
    max_steps: int = 0
    done: bool = False
    total_reward: float = 0.0
    rewards: list[float] = Field(default_factory=list)
    errors: int = 0
    served_ids: list[str] = Field(default_factory=list, description="items served so far, in order")
    episode_score: Optional[float] = None
    bank_version: Optional[str] = None
