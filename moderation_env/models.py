"""The wire types of the environment: action, observation, state, and the public view of an item.

The observation and state also carry the field names of the published content-moderation
environment this one reimplements (``content_item``, ``policy_excerpt`` as text, ``task_name``,
``conflicting_policies`` as rule ids; ``current_step``, ``score``, ...), so an agent written for
that one reads ours unchanged. Our richer fields sit beside them (``content``, ``policy_rules``,
``conflicting_rules``, ...).

Gold fields (labels, action, violated rules, reasoning keywords, the protected-speech flag) live
only in ``items.GoldItem`` on the server; none of these models has a field that could carry them.
"""

from __future__ import annotations

from typing import Annotated, Optional

from openenv.core.env_server.types import Action, Observation, State
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field, field_validator

from moderation_env.vocab import ActionName, ContentType, Label

MAX_ID_CHARS = 128  # an item or rule id; longer ones are refused, never echoed


def _unicode(value: str) -> str:
    """Refuse text UTF-8 cannot carry (a lone UTF-16 surrogate), so no answer fails to serialise it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the text holds a lone UTF-16 surrogate (U+D800..U+DFFF); send valid Unicode text") from None
    return value


Text = Annotated[str, AfterValidator(_unicode)]


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
    content_type: str = "whatsapp_message"
    author_region: str = ""
    language: str = ""


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


class PublishedItem(BaseModel):
    """The item as the published environment names it (``observation.content_item``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    content_id: str
    content_type: ContentType
    text: str
    author_region: str
    language: str
    author_history: list[str] = Field(default_factory=list, description=(
        "prior violations, one entry each; the bank keeps their count, not their labels, so each is "
        "'unspecified'"))
    media_urls: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, item: ContentItem) -> "PublishedItem":
        """The published view of one of our items."""
        return cls(content_id=item.id, content_type=item.type, text=item.text, author_region=item.author_region,
                   language=item.language, author_history=["unspecified"] * item.author_history.prior_violations,
                   media_urls=list(item.media_urls))


class PolicyRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    labels: list[str]
    action: str
    text: str


class ModerationAction(Action):
    """One moderation decision on the item the environment served last."""

    content_id: Text = Field(min_length=1, max_length=MAX_ID_CHARS,
                            description="id of the item being moderated (must be the served item)")
    labels: list[Label] = Field(min_length=1, max_length=10, description="violation labels, or ['clean']")
    action: ActionName
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="how sure the moderator is, 0..1")
    reasoning: Text = Field("", max_length=4000, description="why; graded on policy-conflict cases")
    policy_citations: list[Annotated[Text, Field(max_length=MAX_ID_CHARS)]] = Field(
        default_factory=list, max_length=20, description="ids of the rules applied, e.g. AD_AGE_001")

    @field_validator("labels")
    @classmethod
    def _no_duplicates(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"labels repeat a value: {v}")
        if "clean" in v and len(v) > 1:
            raise ValueError("'clean' cannot be combined with violation labels")
        return v


class ModerationObservation(Observation):
    episode_id: Optional[str] = Field(None, description="names the episode over HTTP (body, X-Episode-Id or cookie)")
    task: str = ""
    task_name: str = Field("", description="published name of `task`")
    step: int = Field(0, description="steps taken so far")
    max_steps: int = 0
    content: Optional[ContentItem] = Field(None, description="the item to moderate now; None when done")
    content_item: Optional[PublishedItem] = Field(None, description="published view of `content`; None when done")
    policy_excerpt: str = Field("", description="the rules for this content type, as text ([ID] title: text)")
    policy_rules: list[PolicyRule] = Field(default_factory=list, description="the same rules, structured")
    thread_history: list[ThreadMessage] = Field(default_factory=list)
    conflicting_policies: list[str] = Field(default_factory=list,
                                            description="ids of rules pulling in opposite directions on this item")
    conflicting_rules: list[PolicyRule] = Field(default_factory=list, description="those rules, structured")
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
    decisions_log: list[dict] = Field(default_factory=list, description=(
        "one entry per step: step, content_id, labels, action, confidence, reward, breakdown (never gold)"))

    # the published environment's names for the same facts
    @computed_field
    @property
    def task_name(self) -> Optional[str]:
        return self.task

    @computed_field
    @property
    def current_step(self) -> int:
        return self.step_count

    @computed_field
    @property
    def items_seen(self) -> int:
        return self.step_count

    @computed_field
    @property
    def items_remaining(self) -> int:
        return max(0, self.max_steps - self.step_count)

    @computed_field
    @property
    def cumulative_reward(self) -> float:
        return self.total_reward

    @computed_field
    @property
    def score(self) -> float:
        """clamp(Σ rewards / max_steps, 0, 1) so far (the episode score once done)."""
        return round(min(max(sum(self.rewards) / self.max_steps, 0.0), 1.0), 6) if self.max_steps else 0.0
