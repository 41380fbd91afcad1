"""The one text normalisation (components.text.normalize): every evasion kind it exists for, what it
must leave alone, and that the comparison keys built on it (dedup, suite n-grams) agree with it."""

from __future__ import annotations

import unicodedata

import pytest

from components.generate_perturbations import HOMOGLYPHS, ZERO_WIDTH
from components.quality.behaviour import tokens
from components.text.dedup import normalize as dedup_key
from components.text.normalize import normalize_text, strip_format

PLAIN = "I am going to kill you tomorrow"


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text)


def test_fullwidth_letters_digits_and_punctuation_become_ascii():
    assert normalize_text(_fullwidth(PLAIN + "! call 555-212-8899")) == PLAIN + "! call 555-212-8899"


@pytest.mark.parametrize("char", sorted({*ZERO_WIDTH, "\ufeff", "\u00ad", "\u200e", "\u202e", "\u2061"}))
def test_every_format_character_kind_is_removed_inside_words(char):
    assert unicodedata.category(char) == "Cf"
    assert normalize_text(char.join("kill") + " you") == "kill you"


def test_look_alike_letters_fold_where_unicode_confusables_say_they_are_identical():
    # every Cyrillic/Greek stand-in the perturbation step uses, except three that UTS #39 does not list
    # as identical to the Latin letter: kappa and chi stay (the model meets them in training through the
    # homoglyph perturbations), and the palochka is an "i" to it, not an "l"
    for latin, glyphs in HOMOGLYPHS.items():
        for glyph in glyphs:
            folded = normalize_text(f"ki{glyph}ll")
            if glyph in {"\u03ba", "\u03c7"}:
                assert folded == f"ki{glyph}ll"
            elif glyph == "\u04cf":
                assert folded == "kiill"
            else:
                assert folded == f"ki{latin}ll", (latin, glyph)


def test_a_capital_look_alike_folds_to_a_capital():
    assert normalize_text("\u0406diot \u041a\u0406LL") == "Idiot KILL"  # Cyrillic I, K


def test_words_of_another_script_are_left_as_written():
    for text in ("Я приду к тебе домой", "Καλημέρα κόσμε", "今天天气很好", "مرحبا بالعالم"):
        assert normalize_text(text) == text


def test_a_word_made_only_of_look_alikes_folds():
    assert normalize_text("\u0441\u043e\u0440 is here") == "cop is here"  # all-Cyrillic "cop"


def test_whitespace_of_every_kind_collapses():
    assert normalize_text(" a\t\tb\n\nc\u00a0d\u2003e\u3000f ") == "a b c d e f"


@pytest.mark.parametrize("text", ["\u200b\u200b", "\ufeff \u2060", "   ", ""])
def test_contentless_text_becomes_empty(text):
    assert normalize_text(text) == ""


def test_idempotent_and_case_kept():
    samples = [PLAIN, _fullwidth(PLAIN), "k\u200b\u0456ll \u041a\u0406LL", "Emoji 😂\u200d🔥 ok", "[ADULT][MESSAGE] hi"]
    for text in samples:
        once = normalize_text(text)
        assert normalize_text(once) == once
    assert normalize_text("Hello THERE") == "Hello THERE"


def test_strip_format_keeps_everything_else():
    assert strip_format("a\u200bb c\u00adD") == "ab cD"


def test_comparison_keys_are_built_on_the_same_normalisation():
    evasive = "k\u200b\u0456ll " + _fullwidth("you")
    assert dedup_key(evasive) == dedup_key("kill you")
    assert tokens(evasive) == tokens("kill you") == ["kill", "you"]
