"""An LLM answer's examples pass the data contract's text rule one by one: a bad text is one reject, not a failed category."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from components.generation.answers import Answer, validate_answer
from components.generation.prompts import Prompt
from components.llm.usage import Usage

PROMPT = Prompt(system=("s",), user="u", count=3, expected=("threats",), kind="positive", audience="GENERAL",
                surface="MESSAGE", focus="direct")
FORMAT_ONLY = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if unicodedata.category(c) == "Cf")[:40]


@pytest.mark.parametrize("bad", ["\ud83d", "ok \udc00 then", "\udfff\ud800", "\u200b\u200b", FORMAT_ONLY, "\u2060\ufeff"])
def test_an_invalid_text_is_rejected_and_the_good_ones_kept(bad):
    good = "I know where you live and I will make you pay for this."
    answer = Answer(examples=[{"text": bad, "categories": ["threats"]}, {"text": good, "categories": ["threats"]}],
                    usage=Usage())
    accepted, rejects = validate_answer(answer, PROMPT, set())
    assert [t for t, _ in accepted] == [good]
    assert len(rejects) == 1 and rejects[0].reason in ("invalid_text", "empty")
