"""The item bank: content items with their gold, read from ``resources/items.jsonl``
(written by ``build_items.py``) and validated once, where it enters.

An item has a public part (``ContentItem``, what observations show) and a gold part (``Gold``,
what only the graders read). The split is by type, so no serialiser can leak gold by accident.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from moderation_env.models import ContentItem
from moderation_env.policy import policy_book
from moderation_env.vocab import ACTIONS, LABELS

BANK_NAME = "resources/items.jsonl"


class ItemBankError(ValueError):
    pass


class Gold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: tuple[str, ...]
    action: str
    violated_rules: tuple[str, ...] = ()
    reasoning_keywords: tuple[str, ...] = ()
    protected_political_speech: bool = False


@dataclass(frozen=True)
class GoldItem:
    public: ContentItem
    gold: Gold
    conflicting_policies: tuple[str, ...]
    source: str

    @property
    def id(self) -> str:
        return self.public.id

    @property
    def is_conflict(self) -> bool:
        return bool(self.conflicting_policies)


_PUBLIC_FIELDS = set(ContentItem.model_fields)


def parse_item(row: dict) -> GoldItem:
    """One bank row to a GoldItem; raises ItemBankError saying what is wrong."""
    rid = row.get("id", "?")
    try:
        public = ContentItem.model_validate({k: v for k, v in row.items() if k in _PUBLIC_FIELDS})
        gold = Gold.model_validate(row["gold"])
    except (ValidationError, KeyError) as exc:
        raise ItemBankError(f"item {rid}: {exc}") from None
    book = policy_book()
    bad = [x for x in gold.labels if x not in LABELS] + ([gold.action] if gold.action not in ACTIONS else [])
    bad += [r for r in (*gold.violated_rules, *row.get("conflicting_policies", [])) if r not in book.rules]
    if bad:
        raise ItemBankError(f"item {rid}: unknown labels, actions or rules {bad}")
    if not gold.labels or ("clean" in gold.labels and len(gold.labels) > 1):
        raise ItemBankError(f"item {rid}: gold labels must be ['clean'] or violation labels, got {list(gold.labels)}")
    unknown = set(row) - _PUBLIC_FIELDS - {"gold", "conflicting_policies", "source"}
    if unknown:
        raise ItemBankError(f"item {rid}: unknown fields {sorted(unknown)}")
    return GoldItem(public, gold, tuple(row.get("conflicting_policies", [])), str(row.get("source", "")))


class ItemBank:
    """Items by id, by content type, and threads in message order. Immutable once built."""

    def __init__(self, items: list[GoldItem], version: str):
        self.version = version
        self.items = {i.id: i for i in items}
        if len(self.items) != len(items):
            raise ItemBankError("item ids repeat")
        self.by_type: dict[str, list[GoldItem]] = defaultdict(list)
        threads: dict[str, list[GoldItem]] = defaultdict(list)
        for item in items:
            self.by_type[item.public.type].append(item)
            if item.public.type == "whatsapp_message":
                if item.public.thread_id is None or item.public.message_index is None:
                    raise ItemBankError(f"item {item.id}: a whatsapp_message needs thread_id and message_index")
                threads[item.public.thread_id].append(item)
        self.threads = {}
        for tid, msgs in sorted(threads.items()):
            msgs.sort(key=lambda m: m.public.message_index)
            if [m.public.message_index for m in msgs] != list(range(len(msgs))):
                raise ItemBankError(f"thread {tid}: message indexes are not 0..{len(msgs) - 1}")
            self.threads[tid] = tuple(msgs)

    @classmethod
    def from_lines(cls, lines: list[str], version: str) -> "ItemBank":
        items = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                items.append(parse_item(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ItemBankError(f"line {n}: not JSON ({exc})") from None
        return cls(items, version)

    @classmethod
    def from_path(cls, path: str | Path) -> "ItemBank":
        data = Path(path).read_bytes()
        return cls.from_lines(data.decode("utf-8").splitlines(), hashlib.sha256(data).hexdigest()[:12])


@cache
def default_bank() -> ItemBank:
    data = resources.files("moderation_env").joinpath(BANK_NAME).read_bytes()
    return ItemBank.from_lines(data.decode("utf-8").splitlines(), hashlib.sha256(data).hexdigest()[:12])
