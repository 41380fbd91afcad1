"""Text and JSON validity, the rules every door that reads records applies.

- Text is valid UTF-8: no lone UTF-16 surrogate (``"\\ud83d"`` without its partner, or a byte that
  was not UTF-8, which Python carries as U+DC80..U+DCFF).
- A text has at least one visible character: not only spaces, zero-width or format characters.
- A JSON object names each key once (``json.loads`` silently keeps the last of two).

Each check returns the reason a value breaks the rule (saying how to fix it), or None.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Any

# Unicode categories that draw nothing on their own: controls, format characters (zero-width
# space and joiners, bidi marks, BOM), surrogates, private-use and unassigned code points,
# separators (spaces), and combining marks with no base character to sit on.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"})
# Letters and symbols that render as blank (Unicode's Hangul fillers, the Braille blank).
_BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def non_utf8(value: str) -> tuple[int, str] | None:
    """Where and what the first character UTF-8 cannot encode is: ``(position from 1, "byte 0xff")``
    or ``(position, "lone surrogate U+D83D")``; None when ``value`` is valid.

    A surrogate in U+DC80..U+DCFF is how Python carries a byte that was not UTF-8
    (``surrogateescape``); any other one is half of a UTF-16 pair, e.g. "\\ud83d" without its partner.
    """
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        if "\udc80" <= char <= "\udcff":
            return exc.start + 1, f"byte 0x{ord(char) - 0xDC00:02x}"
        return exc.start + 1, f"lone surrogate U+{ord(char):04X}"


def utf8_problem(value: str) -> str | None:
    """Why ``value`` cannot be written as UTF-8 (see :func:`non_utf8`), or None."""
    found = non_utf8(value)
    if found is None:
        return None
    at, what = found
    if what.startswith("byte"):
        return f"not valid UTF-8: {what} at character {at} is not UTF-8 text; re-save the source as UTF-8"
    return (f"not valid UTF-8: {what} at character {at} (half of a UTF-16 pair); "
            "write the whole character (e.g. the emoji itself) or remove it")


def is_visible(char: str) -> bool:
    """Whether one character draws something: not a control, format, space, lone mark or filler."""
    return unicodedata.category(char) not in _INVISIBLE_CATEGORIES and char not in _BLANK_CHARACTERS


def text_problem(text: str) -> str | None:
    """Why a text (without its context prefix) breaks the contract, or None.

    A text is valid UTF-8 and has at least one visible character: a text of only spaces,
    zero-width or other format characters would train the model on nothing.
    """
    problem = utf8_problem(text)
    if problem:
        return problem
    if not any(is_visible(c) for c in text):
        if not text.strip():
            return "text is empty"
        shown = " ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(text))[:120]
        return (f"text is empty: it has no visible character, only {shown} (spaces, zero-width or format "
                "characters); write the text or drop the record")
    return None


def bad_string(obj: Any, where: str = "") -> str | None:
    """The first key or string value, at any depth, that is not valid UTF-8: "<where>: <why>"."""
    if isinstance(obj, str):
        problem = utf8_problem(obj)
        return f"{where}: {problem}" if problem else None
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and (problem := utf8_problem(key)):
                return f"{where or 'record'}: a key is {problem}"
            if found := bad_string(value, here):
                return found
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            if found := bad_string(value, f"{where}[{i}]"):
                return found
    return None


class _Object(dict):
    """A parsed JSON object that remembers the keys its text named more than once."""

    duplicates: dict[str, list[Any]]


def _object_keeping_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        values: dict[str, list[Any]] = {}
        for key, value in pairs:
            values.setdefault(key, []).append(value)
        obj.duplicates = {k: v for k, v in values.items() if len(v) > 1}
    return obj


def duplicate_key(obj: Any, where: str = "") -> str | None:
    """Why a value parsed by :func:`loads_keeping_duplicates` names a key twice (at any depth), or None."""
    if isinstance(obj, dict):
        for key, values in getattr(obj, "duplicates", {}).items():
            shown = " and ".join(json.dumps(v, ensure_ascii=True)[:40] for v in values)
            return (f"duplicate key: {where or 'the record'} names {_safe(repr(key))} {len(values)} times "
                    f"(values {shown}); keep one, with the right value")
        for key, value in obj.items():
            if found := duplicate_key(value, _safe(f"{where}.{key}" if where else key)):
                return found
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            if found := duplicate_key(value, f"{where}[{i}]"):
                return found
    return None


def loads_keeping_duplicates(text: str) -> Any:
    """``json.loads`` whose objects remember a key named twice (see :func:`duplicate_key`)."""
    return json.loads(text, object_pairs_hook=_object_keeping_duplicates)


def _safe(text: str) -> str:
    """``text`` with any lone surrogate shown as its escape, so a message about it can be printed."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
