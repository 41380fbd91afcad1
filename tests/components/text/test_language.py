"""Language identification (components.text.language) with the real lingua models: other languages are
marked unsupported, English of every register (slang, short, shouting, obfuscated) never is."""

from __future__ import annotations

import numpy as np
import pytest

from components.text.language import NO_CONTENT, UNDETERMINED, identify

OTHER = {
    "zh": "今天天气很好，我们去公园散步吧。",
    "ru": "Сегодня хорошая погода, пойдём гулять в парк.",
    "ar": "الطقس جميل اليوم، لنذهب إلى الحديقة.",
    "de": "Ich weiß, wo du wohnst, und morgen komme ich vorbei.",
    "nl": "Ik ga je vermoorden als je niet betaalt.",
    "ja": "明日は図書館に本を返しに行きます。",
}

ENGLISH = [
    "I am going to kill you tonight.",
    "Sorry, I was stupid and sent the wrong file",
    "ur a loser lmao gtfo",
    "wtf is this shit bro",
    "omg this is sooo good 😂",
    "yo dawg wassup wit u",
    "CLAIM YOUR PRIZE NOW!!! txt WIN to 80082",
    "you can reach me at 555-212-8899",
    "Ｉ ａｍ ｇｏｉｎｇ ｔｏ ｋｉｌｌ ｙｏｕ",
    "[ADULT][MESSAGE] send me pics babe",
]


@pytest.mark.parametrize("code", sorted(OTHER))
def test_another_language_is_marked_unsupported(code):
    [verdict] = identify([OTHER[code]])
    assert (verdict.language, verdict.judged) == (code, False)
    assert verdict.confidence >= 0.8


def test_english_of_every_register_stays_supported():
    verdicts = identify(ENGLISH)
    assert all(v.judged for v in verdicts), [(t, v) for t, v in zip(ENGLISH, verdicts) if not v.judged]
    assert {v.language for v in verdicts} <= {"en", UNDETERMINED}


@pytest.mark.parametrize("text", ["😀😀😀", "!!! ???", "\u200b\u200b\ufeff", "", "   ", "a", "🍆💦", "[ADULT][MESSAGE] 🔥"])
def test_contentless_text_is_not_judged(text):
    [verdict] = identify([text])
    assert (verdict.language, verdict.judged) == (NO_CONTENT, False)


@pytest.mark.parametrize("text", ["ok", "kys", "u up?", "call 911"])
def test_short_text_is_undetermined_and_judged(text):
    [verdict] = identify([text])
    assert verdict.language in (UNDETERMINED, "en") and verdict.judged


def test_the_supported_set_is_the_models():
    [verdict] = identify([OTHER["de"]], supported=("en", "de"))
    assert verdict.judged and verdict.language == "de"


def test_a_text_in_another_language_gets_no_flags_from_the_served_model(tiny_exported):
    from components.model.onnx_runtime import OnnxClassifier

    clf = OnnxClassifier(tiny_exported[0] / "onnx", variant="fp32")
    texts = [OTHER["zh"], "I am going to kill you tonight."]
    probs = np.ones((2, 18), dtype=np.float32)  # every score at 1: every category over its threshold
    verdicts = clf.languages(texts)
    assert [v.judged for v in verdicts] == [False, True]
    assert clf.flags(probs[:1], clf.languages(["😀😀 !!!"]))[0] == []  # contentless: never flagged
    flagged = clf.flags(probs, verdicts)
    assert flagged[0] == [] and len(flagged[1]) == 18
    assert len(clf.flags(probs)[0]) == 18  # without verdicts: the plain threshold rule
