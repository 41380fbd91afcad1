"""The one text normalisation (components.text.normalize): every evasion kind it exists for, what it
must leave alone, and that the comparison keys built on it (dedup, suite n-grams) agree with it."""

from __future__ import annotations

import unicodedata

import pytest

from components.generate_perturbations import HOMOGLYPHS, ZERO_WIDTH
from components.quality.behaviour import tokens
from components.text.dedup import normalize as dedup_key
from components.text.normalize import LEET, SPACERS, normalize_text, strip_format

PLAIN = "I am going to kill you tomorrow"


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text)


def test_fullwidth_letters_digits_and_punctuation_become_ascii():
    assert normalize_text(_fullwidth(PLAIN + "! call 555-212-8899")) == PLAIN + "! call 555-212-8899"


@pytest.mark.parametrize("char", sorted({*ZERO_WIDTH, "\ufeff", "\u00ad", "\u200e", "\u202e", "\u2061"}))
def test_every_format_character_kind_is_removed_inside_words(char):
    assert unicodedata.category(char) == "Cf"
    assert normalize_text(char.join("kill") + " you") == "kill you"


# a common word holding each letter the perturbation step disguises
WORD_WITH = {"a": "attack", "b": "bitch", "c": "cut", "d": "dead", "e": "everyone", "h": "hurt", "i": "idiot",
             "j": "jaw", "k": "kill", "l": "will", "m": "moron", "n": "never", "o": "you", "p": "stupid",
             "q": "quit", "s": "stab", "t": "throat", "u": "hurt", "v": "never", "w": "watch", "x": "next",
             "y": "your", "z": "lazy"}


def test_every_look_alike_the_perturbation_step_writes_folds_back_inside_a_word():
    # UTS #39 lists most of them as the Latin letter; Greek kappa and chi only as Latin kra and chi
    # (their capitals are K and X), the palochka as an "i" (its capital is an "l"): those read as their
    # capital's letter, and where a letter reads two ways the common word wins
    for latin, glyphs in HOMOGLYPHS.items():
        word = WORD_WITH[latin.lower()]
        word = word.upper() if latin.isupper() else word
        for glyph in glyphs:
            disguised = word.replace(latin, glyph)
            assert disguised != word
            assert normalize_text(f"I {disguised} now") == f"I {word} now", (latin, glyph, disguised)


def test_a_look_alike_with_two_readings_takes_the_common_word():
    assert normalize_text("de\u04cfete a\u04cf\u04cf") == "delete all"  # palochka: l, not i
    assert normalize_text("\u0456diot") == "idiot"  # Cyrillic dotted i: i, not l
    assert normalize_text("\u043dello \u0455\u043ca\u04cf\u04cf") == "hello small"  # small capitals


def test_a_capital_look_alike_folds_to_a_capital():
    assert normalize_text("\u0406diot \u041a\u0406LL") == "Idiot KILL"  # Cyrillic I, K


def test_words_of_another_script_are_left_as_written():
    for text in ("Я приду к тебе домой", "Καλημέρα κόσμε", "今天天气很好", "مرحبا بالعالم"):
        assert normalize_text(text) == text


def test_a_word_made_only_of_look_alikes_folds():
    assert normalize_text("\u0441\u043e\u0440 is here") == "cop is here"  # all-Cyrillic "cop"


def test_whitespace_of_every_kind_collapses():
    assert normalize_text(" ab\t\tcd\n\nef\u00a0gh\u2003ij\u3000kl ") == "ab cd ef gh ij kl"


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


# --- spaced-out words and leetspeak ------------------------------------------------------------


@pytest.mark.parametrize("spacer", [s for s in SPACERS if s != " "])
def test_every_spacer_between_letters_is_joined(spacer):
    assert normalize_text(f"I will {spacer.join('kill')} {spacer.join('you')} now") == "I will kill you now"


def test_a_run_spaced_with_blanks_is_joined_and_split_into_words_again():
    assert normalize_text("Marcus, I am g o i n g to k i l l y o u tonight") == "Marcus, I am going to kill you tonight"


def test_runs_spaced_different_ways_stay_apart():
    assert (normalize_text("c u t y o u r t.h.r.o.a.t s_h_o_w y-o-u-r f a c e.")
            == "cut your throat show your face.")


@pytest.mark.parametrize("text", ["r u a bot", "1 2 3 4", "e.g. this", "i.e. that", "5-5-5", "x + y = z"])
def test_short_blank_runs_digits_and_abbreviations_are_not_spacing(text):
    assert normalize_text(text) == text


@pytest.mark.parametrize("letter,subs", sorted(LEET.items()))
def test_every_leet_substitution_is_read_back(letter, subs):
    words = {"a": "attack", "e": "never", "i": "kill", "o": "shoot", "s": "stab", "t": "throat", "l": "kill",
             "g": "going", "b": "bloody", "z": "crazy"}
    word = words[letter]
    for sub in subs:
        assert normalize_text(f"I will {word.replace(letter, sub)} you") == f"I will {word} you"


def test_heavy_leetspeak_sentences_read_back():
    assert normalize_text("8r3ak y0ur j4w, Marcu$, 7h3 m0m3n7 y0u 5h0w up") == "break your jaw, marcus, the moment you show up"


@pytest.mark.parametrize("text", [
    "meet at 4pm on the 2nd", "1st 3rd 4th 11th 22nd 90s 10am", "100K views, 3.70MB file", "$30 or C$7,500 or $1.5m",
    "mp3 mp4 covid19 h2o b2b y2k ps5", "@user @home said hi!", "#MS13 and #1Love", "mail bob@mail.com or me@k1ll.io",
    "see https://x.co/k1ll or www.b4d.com or d1m.in/qrsd61", "Call 555-212-8899 now!", "wow!! hello!"])
def test_numbers_amounts_names_addresses_and_exclamations_are_not_leetspeak(text):
    assert normalize_text(text) == text


def test_decoding_is_idempotent():
    for text in ["8r3ak y0ur j4w", "k i l l y o u", "k.i.l.l", "$7ab", "h3ll0 fr13nd"]:
        once = normalize_text(text)
        assert normalize_text(once) == once
