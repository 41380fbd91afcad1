"""What the model reads of a text: its normalised form, cut into overlapping token windows.

An encoder reads at most ``max_length`` tokens (128 for the CPU profile, about 100 words); a
longer text used to be cut there, so a violation at its end was never seen. Here a text that does
not fit is split into windows of whole tokens that overlap by ``stride`` tokens, each window
carrying the text's context prefix; the model scores every window and a category's score for
the text is its highest window score (:func:`components.model.scoring.max_over_windows`).
Evaluation, ``predict``, the environment's agent, serving and the PyTorch reference all score
through :class:`TextWindows`, so a text is cut the same way everywhere.

A window is a substring of the normalised text (cut at token offsets), so it is tokenised again
exactly as any short text is. ``max_windows`` bounds the cost of one huge text: past it, the
windows are the first ``max_windows - 1`` and the last one (a violation at the very end still
counts), and what lies between is not read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from components.core.taxonomy import split_prefix
from components.text.normalize import normalize_text


def window_starts(n_tokens: int, room: int, stride: int, max_windows: int) -> list[int]:
    """First-token index of each window over ``n_tokens`` tokens, ``room`` tokens per window,
    consecutive windows sharing ``stride`` tokens; the last window ends at the last token.

    Past ``max_windows``, the first ``max_windows - 1`` windows and the last one are kept.
    """
    if n_tokens <= room:
        return [0]
    step = max(room - stride, 1)
    starts = list(range(0, n_tokens - room + 1, step))
    if starts[-1] + room < n_tokens:
        starts.append(n_tokens - room)
    if len(starts) > max_windows:
        starts = starts[: max_windows - 1] + [starts[-1]]
    return starts


class TextWindows:
    """Split texts into the windows a model of ``max_length`` tokens reads.

    ``tokenizer``: the model's ``tokenizers.Tokenizer`` (a copy is made; the original's
    truncation and padding settings are left alone). ``max_length``: tokens per model input,
    special tokens included. ``stride``: tokens shared by consecutive windows (0 or more; at most
    half a window is used). ``max_windows``: most windows per text (at least 1).
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int, stride: int = 32, max_windows: int = 8):
        if max_windows < 1:
            raise ValueError(f"max_windows must be at least 1, got {max_windows}")
        if stride < 0:
            raise ValueError(f"stride must be 0 or more tokens, got {stride}")
        self._tok = Tokenizer.from_str(tokenizer.to_str())
        self._tok.no_truncation()
        self._tok.no_padding()
        self.max_length, self.stride, self.max_windows = max_length, stride, max_windows
        self._special = self._tok.num_special_tokens_to_add(False)

    def split(self, text: str, normalize: bool = True) -> list[str]:
        """The windows of one text: ``[normalised text]`` when it fits, else overlapping substrings,
        each re-prefixed with the text's context prefix when it had one. ``normalize=False`` skips
        the normalisation (only to measure what it is worth: the robustness report's "before")."""
        prefix, raw = split_prefix(normalize_text(text) if normalize else text)
        head = f"{prefix.render()} " if prefix else ""
        room = self.max_length - self._special
        if head:
            room -= len(self._tok.encode(head, add_special_tokens=False).ids)
        offsets = self._tok.encode(raw, add_special_tokens=False).offsets
        if len(offsets) <= room or room < 2:
            return [head + raw]
        starts = window_starts(len(offsets), room, min(self.stride, room // 2), self.max_windows)
        return [head + raw[offsets[s][0] : offsets[min(s + room, len(offsets)) - 1][1]] for s in starts]

    def expand(self, texts: Sequence[str], normalize: bool = True) -> tuple[list[str], np.ndarray]:
        """Every text's windows, flattened, and for each window the index of its text (int64 ``[n_windows]``)."""
        windows: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            parts = self.split(text, normalize)
            windows += parts
            owners += [i] * len(parts)
        return windows, np.asarray(owners, dtype=np.int64)
