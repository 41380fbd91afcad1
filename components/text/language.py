"""Which language a text is in, and whether the model can judge it.

The classifier is trained on English. A text in another language reaches it as word pieces it
never learned from, and its scores are noise (a harmless Chinese sentence scored as self-harm);
so a text identified, with confidence, as another language is marked unsupported and not flagged
from its scores: it is a case for a person who reads the language (a known limit, shown in the
result). Identification is by lingua (``lingua-language-detector``, n-gram models shipped in the
package, no network), over :data:`DETECTED` languages, the most used on the web.

A text with fewer than two letters or digits once normalised (emoji, punctuation or format
characters only, a lone letter) has no linguistic content (``zxx``): there is nothing to judge,
and it never flags.

The rule is conservative, because short English slang (``ur a loser lmao``) looks like many
languages: a text is called another language only when it holds at least ``min_letters`` letters
and lingua's confidence in that language is at least ``min_confidence``; anything else is
``und`` (undetermined) and scored as usual.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from components.core.taxonomy import split_prefix
from components.text.normalize import normalize_text

DETECTED = ("ENGLISH", "SPANISH", "FRENCH", "GERMAN", "PORTUGUESE", "ITALIAN", "DUTCH", "RUSSIAN", "UKRAINIAN",
            "POLISH", "TURKISH", "ARABIC", "CHINESE", "JAPANESE", "KOREAN", "HINDI", "INDONESIAN", "VIETNAMESE",
            "SWEDISH", "PERSIAN", "TAGALOG", "SWAHILI", "ROMANIAN", "GREEK", "HEBREW", "THAI", "BENGALI", "URDU")
"""The languages lingua chooses among (its ``Language`` names)."""

UNDETERMINED = "und"  # ISO 639-2 code for "undetermined"
NO_CONTENT = "zxx"    # ISO 639-2 code for "no linguistic content"


@dataclass(frozen=True)
class LanguageVerdict:
    """``language``: ISO 639-1 code (``en``, ``es``, ...), ``und`` (undetermined) or ``zxx`` (no linguistic
    content); ``confidence``: lingua's, in [0, 1]; ``judged``: whether the model's scores count for the
    text (a language it was trained on, or undetermined); a text in another language or with no
    linguistic content is not judged and gets no flags."""

    language: str
    confidence: float
    judged: bool


@lru_cache(maxsize=1)
def _detector():
    from lingua import Language, LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_languages(*(getattr(Language, name) for name in DETECTED)).build()


def identify(texts: Iterable[str], supported: Sequence[str] = ("en",), min_confidence: float = 0.8,
             min_letters: int = 12, normalized: bool = False) -> list[LanguageVerdict]:
    """One :class:`LanguageVerdict` per text (normalised first unless ``normalized``, its context prefix set aside).

    ``supported``: ISO 639-1 codes the model was trained on. A text gets another language only
    with at least ``min_letters`` letters and lingua's confidence at least ``min_confidence``.
    """
    out = []
    for text in texts:
        _, raw = split_prefix(text if normalized else normalize_text(text))
        if sum(ch.isalnum() for ch in raw) < 2:
            out.append(LanguageVerdict(NO_CONTENT, 0.0, False))
            continue
        if sum(ch.isalpha() for ch in raw) < min_letters:
            out.append(LanguageVerdict(UNDETERMINED, 0.0, True))
            continue
        values = _detector().compute_language_confidence_values(raw)
        if not values:
            out.append(LanguageVerdict(UNDETERMINED, 0.0, True))
            continue
        code, confidence = values[0].language.iso_code_639_1.name.lower(), round(float(values[0].value), 4)
        if code in supported:
            out.append(LanguageVerdict(code, confidence, True))
        elif confidence < min_confidence:
            out.append(LanguageVerdict(UNDETERMINED, confidence, True))
        else:
            out.append(LanguageVerdict(code, confidence, False))
    return out
