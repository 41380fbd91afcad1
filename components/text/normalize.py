"""The one text normalisation, applied wherever a text meets a model or a comparison.

Every scoring path (training, evaluation, ``predict``, the environment's classifier agent,
serving) feeds the model ``normalize_text(text)``; the merge step's de-duplication and the
behavioural suite's n-gram leakage check build their comparison keys on it too. The record
itself keeps the original text, which is what is shown to people.

What it does, in order (each step answers an evasion seen in real content or in the
behavioural suite):

1. Unicode NFKC: compatibility forms to their plain letters (fullwidth ``Ｋｉｌｌ`` -> ``Kill``,
   ligatures, circled and mathematical letters).
2. Format characters removed: Unicode category ``Cf`` (zero-width space/joiners, word joiner,
   BOM, soft hyphen, bidi controls), which split words for a tokenizer but not for a reader.
3. Look-alike letters folded: a letter of another script that Unicode's confusables data
   (UTS #39, as packaged by ``confusable_homoglyphs``) lists as visually identical to an ASCII
   letter or digit becomes that ASCII character -- only inside a word that also holds Latin
   letters or whose every letter folds (``kіll`` with a Cyrillic ``і``; all-Cyrillic ``сор``), so
   Cyrillic or Greek words of real Russian or Greek text stay as written.
4. Whitespace collapsed: runs of spaces, tabs and line breaks become one space; ends stripped.

Case is kept (the encoders are uncased; display and leetspeak detection are not our concern
here). The rule version is :data:`NORMALIZATION`, recorded in every exported model folder.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

NORMALIZATION = "nfkc-cf-confusables-ws/1"
"""Name and version of the rule, written to ``classifier.json``; change it when the rule changes."""

_WORD = re.compile(r"\S+")
_SPACE = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _fold_table() -> dict[int, str]:
    """Non-ASCII letter -> the ASCII letter or digit it is confusable with (UTS #39 data)."""
    from confusable_homoglyphs.confusables import confusables_data

    table: dict[int, str] = {}
    for char, glyphs in confusables_data.items():
        if len(char) != 1 or char.isascii() or not char.isalnum():
            continue
        for glyph in glyphs:
            target = glyph["c"]
            if len(target) == 1 and target.isascii() and target.isalnum():
                table[ord(char)] = target
                break
    # The data maps by shape, not case (Cyrillic capital I looks like a lower-case l): a capital that
    # folds to a lower-case letter folds instead to the capital of what its lower-case form folds to.
    for code in list(table):
        char, lower = chr(code), chr(code).lower()
        if (char.isupper() and table[code].islower() and len(lower) == 1 and ord(lower) in table
                and table[ord(lower)].isalpha()):
            table[code] = table[ord(lower)].upper()
    return table


def _is_latin(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _fold_word(match: re.Match) -> str:
    word = match.group(0)
    if word.isascii():
        return word
    table = _fold_table()
    letters = [c for c in word if c.isalpha()]
    foldable = [c for c in letters if ord(c) in table]
    if not foldable:
        return word
    if any(_is_latin(c) for c in letters) or len(foldable) == len(letters):
        return word.translate(table)
    return word


def strip_format(text: str) -> str:
    """``text`` without Unicode format characters (category ``Cf``: zero-width, bidi controls, BOM)."""
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def normalize_text(text: str) -> str:
    """The form of ``text`` a model reads: NFKC, format characters removed, look-alike letters
    folded to ASCII, whitespace collapsed (see the module docstring for each rule and its source).

    Idempotent: ``normalize_text(normalize_text(t)) == normalize_text(t)``. A text of format
    characters and whitespace only becomes ``""``.
    """
    # Folded before NFKC as well as after: NFKC turns some look-alikes (Greek lunate sigma, a "c")
    # into letters that no longer look like the Latin one.
    text = _WORD.sub(_fold_word, strip_format(text))
    text = _WORD.sub(_fold_word, strip_format(unicodedata.normalize("NFKC", text)))
    return _SPACE.sub(" ", text).strip()
