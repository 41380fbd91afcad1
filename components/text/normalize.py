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
   Cyrillic or Greek words of real Russian or Greek text stay as written. Inside a word with Latin
   letters, a lower-case letter whose capital the data lists as an ASCII letter may also fold to
   that letter's lower case (small capitals: ``κ``, since ``Κ`` is ``K``; ``χ``; Cyrillic
   ``к т н м в``; the palochka ``ӏ``, since ``Ӏ`` is ``l``); where a letter could be either
   (``wiӏӏ``: ``wiii`` or ``will``), the spelling most frequent in the counts of step 4 wins.
4. Spaced-out words joined: a run of three or more single letters or digits joined by one
   repeated separator (space, ``.``, ``-`` or ``_``: ``k.i.l.l``, ``k i l l y o u``) becomes
   one word; a run spaced with blanks has lost its word breaks too, so it is re-segmented by
   word frequencies (package ``wordsegment``, Google's web unigram and bigram counts).
   A run needs at least one letter (``1 2 3`` stays), and a run spaced with blanks four
   units (``r u a`` is text-speak, ``p 0 r n`` is not).
5. Leetspeak decoded: a word that mixes letters with the digits and symbols of :data:`LEET`
   (``k1ll``, ``y0u``, ``8r3ak``) becomes the English word it spells, when one spelling is a
   common word (at least :data:`COMMON_WORD_COUNT` occurrences in the same unigram counts).
   Numbers with an English suffix or a unit (``4pm``, ``2nd``, ``90s``, ``100k``, ``70MB``)
   and amounts (``$30``, ``C$7``) are not leetspeak; other number-shaped tokens need a very common word (``th3`` is ``the``;
   ``mp3``, ``mp4``, ``covid19``, ``h2o`` stay); ``b2b``, ``y2k``, a mention's leading ``@``,
   a closing ``!``, e-mail addresses and links stay as written.
6. Whitespace collapsed: runs of spaces, tabs and line breaks become one space; ends stripped.

Case is kept except in decoded words (the encoders are uncased). The rule version is
:data:`NORMALIZATION`, recorded in every exported model folder.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache

NORMALIZATION = "nfkc-cf-confusables-spacing-leet-ws/3"
"""Name and version of the rule, written to ``classifier.json``; change it when the rule changes."""

LEET: dict[str, tuple[str, ...]] = {
    "a": ("4", "@"), "e": ("3",), "i": ("1", "!"), "o": ("0",), "s": ("5", "$"), "t": ("7",),
    "l": ("1",), "g": ("9",), "b": ("8",), "z": ("2",),
}
"""Letter -> the digits and symbols that stand for it in leetspeak (the common substitutions;
the perturbation step writes them, this module reads them back)."""

SPACERS: tuple[str, ...] = (" ", ".", "-", "_")
"""Separators put between the letters of a spaced-out word."""

COMMON_WORD_COUNT = 100_000
"""A decoded spelling must occur at least this often in the unigram counts (``brainless``:
136k, ``jaw``: 2.8M; most letter-digit codes decode to nothing that common)."""

_WORD = re.compile(r"\S+")
_SPACE = re.compile(r"\s+")
_UNLEET: dict[str, str] = {}
for _letter, _subs in LEET.items():
    for _sub in _subs:
        _UNLEET[_sub] = _UNLEET.get(_sub, "") + _letter
_LEET_CHARS = re.escape("".join(_UNLEET))
# A token of letters, digits and leet symbols holding a leet character and a letter or leet symbol
# (``57@8``); a closing ``!`` is punctuation, a hashtag is a name. E-mail addresses, links and
# domain names are left whole.
_LEET_WORD = re.compile(rf"(?<![\w{_LEET_CHARS}#])(?=[\w{_LEET_CHARS}]*[A-Za-z@$!])"
                        rf"(?=[\w{_LEET_CHARS}]*[{_LEET_CHARS}])[\w{_LEET_CHARS}]*[\w@$]")
_ADDRESS = re.compile(r"\S+@\S+\.\w+|\S*(?:://|www\.)\S*|\S*\w\.[a-z]{2,}(?:/\S*)?", re.IGNORECASE)
# A mention's leading @ is not a letter (@the.nora). Numbers with an English suffix or a unit
# (1st, 2nd, 3rd, 4th, 90s, 10am, 7pm, 100k, 70MB) and amounts ($30, C$7) are not leetspeak; other
# number-shaped tokens (mp3, covid19, 574b, w111, th3) decode only to a very common word, the
# commoner the shorter (3 characters: the, cut, and; not mp4 -> mpa or 3ds -> eds).
_NOT_LEET = re.compile(r"\d*(?:1st|2nd|3rd|[04-9]th|1[1-3]th)|\d+(?:s|am|pm|[a-z])|\d\d+[a-z]+|[a-z]{0,3}\$[\d.,]+[kmb]?",
                       re.IGNORECASE)
_NUMBER_SHAPED = re.compile(r"\d+[A-Za-z]+|[A-Za-z]+\d+|[\d@$!]+")
_NUMBER_SHAPED_COUNT = {3: 10_000_000, 4: 1_000_000}
_UNIT = r"[^\W_]"
# Three or more single letters/digits, each separated by the same one spacer, standing alone
# (not the edge of a run spaced another way, ``y o u r t.h.r.o.a.t``, or of a leet word, ``Fr!d@y 1 w!11``).
_MIN_BLANK_SPACED = 4
_SPACER = "[" + re.escape("".join(SPACERS)) + "]"
_OTHER_SPACER = "[" + re.escape("".join(SPACERS[1:])) + "]"
_SPACED = re.compile(rf"(?<![^\W_@$!])(?<![^\W_]{_OTHER_SPACER})({_UNIT})({_SPACER})(?:{_UNIT}\2)+{_UNIT}"
                     rf"(?![^\W_]|[@$]|!\w|{_OTHER_SPACER}[^\W_])")


@lru_cache(maxsize=1)
def _confusable_ascii() -> dict[int, str]:
    """Non-ASCII letter -> the ASCII letter or digit UTS #39 lists it as confusable with, as listed."""
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
    return table


@lru_cache(maxsize=1)
def _fold_table() -> dict[int, str]:
    """Non-ASCII letter -> the ASCII letter or digit it is confusable with (UTS #39 data)."""
    table = dict(_confusable_ascii())
    # The data maps by shape, not case (Cyrillic capital I looks like a lower-case l): a capital that
    # folds to a lower-case letter folds instead to the capital of what its lower-case form folds to.
    for code in list(table):
        char, lower = chr(code), chr(code).lower()
        if (char.isupper() and table[code].islower() and len(lower) == 1 and ord(lower) in table
                and table[ord(lower)].isalpha()):
            table[code] = table[ord(lower)].upper()
    return table


@lru_cache(maxsize=1)
def _second_fold_table() -> dict[int, str]:
    """Letter -> a second ASCII reading, where case makes the data's one reading doubtful: a
    lower-case letter reads as its capital's listing too (small-capital shapes: Greek ``κ``, since
    ``Κ`` is listed as ``K`` and ``κ`` only as the Latin kra; ``χ``; Cyrillic ``к т н м в``; the
    palochka ``ӏ``, an ``i`` to the data but its capital an ``l``), and a capital the case rule of
    :func:`_fold_table` moved reads as listed too (``Ӏ``: ``I`` or ``l``)."""
    listed, folded, table = _confusable_ascii(), _fold_table(), {}
    for code in range(0x80, 0x3000):
        char = chr(code)
        other = char.upper()
        if char.islower() and len(other) == 1 and listed.get(ord(other), "0").isalpha():
            target = listed[ord(other)].lower()
        elif char.isupper() and code in listed:
            target = listed[code]
        else:
            continue
        if folded.get(code) != target:
            table[code] = target
    return table


def _is_latin(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _fold_mixed(word: str) -> str:
    """A word of Latin letters with look-alikes among them: each look-alike becomes its own fold or
    its second reading (:func:`_second_fold_table`); where that leaves a choice (``wiӏӏ``: ``wiii`` or
    ``will``), the spelling most frequent in the unigram counts wins, else the first."""
    strict, other = _fold_table(), _second_fold_table()
    choices = [tuple(dict.fromkeys(x for x in (strict.get(ord(c)), other.get(ord(c))) if x)) or (c,) for c in word]
    first = "".join(x[0] for x in choices)
    if all(len(x) == 1 for x in choices):
        return first
    return _commonest(choices, lambda s: "".join(c for c in s.lower() if c.isalnum()), 1) or first


def _fold_word(match: re.Match) -> str:
    word = match.group(0)
    if word.isascii():
        return word
    table = _fold_table()
    letters = [c for c in word if c.isalpha()]
    if any(_is_latin(c) for c in letters):
        return _fold_mixed(word)
    foldable = [c for c in letters if ord(c) in table]
    if foldable and len(foldable) == len(letters):  # a word only of look-alikes: by the data alone
        return word.translate(table)
    return word


@lru_cache(maxsize=1)
def _segmenter():
    import wordsegment

    segmenter = wordsegment.Segmenter()
    segmenter.load()
    return segmenter


def _commonest(choices, key, floor: int) -> str | None:
    """Of the spellings one character choice each (``choices``: per character, its readings; the
    first 64 combinations), the one whose ``key`` is the commonest word in the unigram counts, if it
    occurs at least ``floor`` times; None when none does."""
    counts = _segmenter().unigrams
    best, best_count = None, floor - 1
    for spelling in itertools.islice(itertools.product(*choices), 64):
        candidate = "".join(spelling)
        count = counts.get(key(candidate), 0)
        if count > best_count:
            best, best_count = candidate, count
    return best


def _join_spaced(match: re.Match) -> str:
    run, spacer = match.group(0), match.group(2)
    word = run.replace(spacer, "")
    if not any(c.isalpha() for c in word) or (spacer == " " and len(word) < _MIN_BLANK_SPACED):
        return run
    if spacer == " ":  # the word breaks went with the blanks: find them again
        return " ".join(_segmenter().segment(word))
    return word


def _decode_leet(match: re.Match) -> str:
    word = match.group(0)
    floor = COMMON_WORD_COUNT
    if not any(c in _UNLEET for c in word[word.startswith("@"):]) or _NOT_LEET.fullmatch(word):
        return word
    if _NUMBER_SHAPED.fullmatch(word):
        if len(word) < 3:
            return word
        floor = _NUMBER_SHAPED_COUNT[min(len(word), 4)]
    return _commonest([_UNLEET.get(c, c.lower()) for c in word], lambda s: s, floor) or word


def strip_format(text: str) -> str:
    """``text`` without Unicode format characters (category ``Cf``: zero-width, bidi controls, BOM)."""
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def normalize_text(text: str) -> str:
    """The form of ``text`` a model reads: NFKC, format characters removed, look-alike letters
    folded to ASCII, spaced-out words joined, leetspeak decoded, whitespace collapsed (see the
    module docstring for each rule and its source).

    Idempotent: ``normalize_text(normalize_text(t)) == normalize_text(t)``. A text of format
    characters and whitespace only becomes ``""``.
    """
    # Folded before NFKC as well as after: NFKC turns some look-alikes (Greek lunate sigma, a "c")
    # into letters that no longer look like the Latin one.
    text = _WORD.sub(_fold_word, strip_format(text))
    text = _WORD.sub(_fold_word, strip_format(unicodedata.normalize("NFKC", text)))
    text = _SPACED.sub(_join_spaced, _SPACE.sub(" ", text).strip())
    if any(c in _UNLEET for c in text):
        text = " ".join(chunk if _ADDRESS.fullmatch(chunk) else _LEET_WORD.sub(_decode_leet, chunk)
                        for chunk in text.split(" "))
    return text
