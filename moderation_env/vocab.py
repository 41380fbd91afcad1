"""The environment's vocabulary, read once from ``resources/labels.yaml``: labels, actions, the
near-miss tables and the classifier's category map. Everything else imports it from here."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml


@cache
def table() -> dict:
    text = resources.files("moderation_env").joinpath("resources/labels.yaml").read_text("utf-8")
    return yaml.safe_load(text)


LABELS: tuple[str, ...] = tuple(table()["labels"])
ACTIONS: tuple[str, ...] = tuple(table()["actions"])
CONTENT_TYPES: tuple[str, ...] = ("text_post", "image_description", "ad_copy", "whatsapp_message")
ACTION_PRECEDENCE: tuple[str, ...] = tuple(table()["action_precedence"])

# Literal types for the Pydantic models: the JSON schema then lists the valid values, and an
# invalid label or action is a 422 that names them. Kept equal to the YAML by a test.
Label = Literal["hate_speech", "violence", "nudity", "spam", "misinformation", "harassment", "self_harm",
                "terrorism", "scam", "clean"]
ActionName = Literal["approve", "remove", "escalate", "restrict", "request_review"]
ContentType = Literal["text_post", "image_description", "ad_copy", "whatsapp_message"]


def _pairs(key: str) -> dict[frozenset, float]:
    return {frozenset((a, b)): float(s) for a, b, s in table()[key]}


_LABEL_SIM = _pairs("label_similarity")
_ACTION_SIM = _pairs("action_similarity")


def label_similarity(a: str, b: str) -> float:
    """Partial credit for predicting ``a`` when the gold label is ``b`` (symmetric)."""
    return 1.0 if a == b else _LABEL_SIM.get(frozenset((a, b)), 0.0)


def action_similarity(a: str, b: str) -> float:
    return 1.0 if a == b else _ACTION_SIM.get(frozenset((a, b)), 0.0)


def strongest_action(actions) -> str:
    """The first action in the precedence order that any of ``actions`` is; approve when empty."""
    present = set(actions)
    for a in ACTION_PRECEDENCE:
        if a in present:
            return a
    return "approve"
