"""Adversarial variants of positive examples: the spellings people use to dodge filters.

A model trained only on clean text misses "k1ll", "kіll" (Cyrillic і), "k\u200bill" and
"k i l l". The step ``generate-perturbations`` rewrites a seeded fraction of the positives
with those tricks, keeping labels and the context prefix, and keeping each variant in its
source's split group so a variant never leaks a training example into the test set.

Everything is seeded through hashlib (never Python's salted ``hash()``), so one seed gives
the same bytes on every machine and every run.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Callable
from pathlib import Path

from components.core import contract
from components.core.contract import ContractError, Record
from components.core.params import PERTURBATION_KINDS, PerturbParams
from components.core.taxonomy import split_prefix
from components.text.normalize import LEET, SPACERS

log = logging.getLogger(__name__)

# Runs of letters (any script, no digits or underscore); eligible when at least 3 long.
_WORD_RE = re.compile(r"[^\W\d_]+")
_MIN_LETTERS = 3

BASE_KINDS: tuple[str, ...] = tuple(k for k in PERTURBATION_KINDS if k != "combo")


# Latin letter -> visually identical Cyrillic/Greek code points. NFKC leaves these alone,
# which is exactly why they dodge naive normalisation.
HOMOGLYPHS: dict[str, tuple[str, ...]] = {
    "a": ("\u0430",), "c": ("\u0441", "\u03f2"), "d": ("\u0501",), "e": ("\u0435",),
    "h": ("\u04bb",), "i": ("\u0456",), "j": ("\u0458",), "k": ("\u03ba",), "l": ("\u04cf",),
    "o": ("\u043e", "\u03bf"), "p": ("\u0440", "\u03c1"), "q": ("\u051b",), "s": ("\u0455",),
    "u": ("\u03c5",), "v": ("\u03bd",), "w": ("\u051d",), "x": ("\u0445", "\u03c7"),
    "y": ("\u0443",),
    "A": ("\u0410", "\u0391"), "B": ("\u0412", "\u0392"), "C": ("\u0421",), "E": ("\u0415", "\u0395"),
    "H": ("\u041d", "\u0397"), "I": ("\u0406", "\u0399"), "J": ("\u0408",), "K": ("\u041a", "\u039a"),
    "M": ("\u041c", "\u039c"), "N": ("\u039d",), "O": ("\u041e", "\u039f"), "P": ("\u0420", "\u03a1"),
    "S": ("\u0405",), "T": ("\u0422", "\u03a4"), "X": ("\u0425", "\u03a7"), "Y": ("\u04ae", "\u03a5"),
    "Z": ("\u0396",),
}

ZERO_WIDTH: tuple[str, ...] = ("\u200b", "\u200c", "\u200d", "\u2060")
EMOJI: tuple[str, ...] = (
    "\U0001f52a", "\U0001f480", "\U0001f52b", "\U0001f4a3", "\U0001f595", "\U0001f621",
    "\U0001f92c", "\U0001f48a", "\U0001f351", "\U0001f346", "\U0001f525", "\U0001f4af",
    "\U0001f440", "\U0001f602", "\U0001f4b0", "\U0001f4f8",
)
_VOWELS = "aeiouyAEIOUY"

_QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """Keys left/right on the same row and the touching keys above and below.

    Rows are staggered: each row sits half a key right of the one above, so key c touches
    keys c and c+1 above and c-1 and c below.
    """
    out: dict[str, str] = {}
    for r, row in enumerate(_QWERTY_ROWS):
        for c, ch in enumerate(row):
            near = [row[j] for j in (c - 1, c + 1) if 0 <= j < len(row)]
            if r > 0:
                above = _QWERTY_ROWS[r - 1]
                near += [above[j] for j in (c, c + 1) if j < len(above)]
            if r + 1 < len(_QWERTY_ROWS):
                below = _QWERTY_ROWS[r + 1]
                near += [below[j] for j in (c - 1, c) if 0 <= j < len(below)]
            out[ch] = "".join(sorted(near))
    return out


_NEIGHBOURS = _keyboard_neighbours()


# ---------------------------------------------------------------------------
# Word-level transforms. Each takes one eligible word and returns a changed string.
# ---------------------------------------------------------------------------

def _leet_word(word: str, rng: random.Random) -> str:
    idx = [i for i, ch in enumerate(word) if ch.lower() in LEET]
    if not idx:
        return word
    keep = rng.choice(idx)  # at least one substitution
    chars = list(word)
    for i in idx:
        if i == keep or rng.random() < 0.6:
            chars[i] = rng.choice(LEET[word[i].lower()])
    return "".join(chars)


def _homoglyph_word(word: str, rng: random.Random) -> str:
    idx = [i for i, ch in enumerate(word) if ch in HOMOGLYPHS]
    if not idx:
        return word
    keep = rng.choice(idx)
    chars = list(word)
    for i in idx:
        if i == keep or rng.random() < 0.5:
            chars[i] = rng.choice(HOMOGLYPHS[word[i]])
    return "".join(chars)


def _zero_width_word(word: str, rng: random.Random) -> str:
    gaps = list(range(1, len(word)))
    n = rng.randint(1, max(1, min(3, len(gaps))))
    chosen = sorted(rng.sample(gaps, n), reverse=True)
    out = word
    for g in chosen:
        out = out[:g] + rng.choice(ZERO_WIDTH) + out[g:]
    return out


def _spacing_word(word: str, rng: random.Random) -> str:
    return rng.choice(SPACERS).join(word)


def _repetition_word(word: str, rng: random.Random) -> str:
    vowels = [i for i, ch in enumerate(word) if ch in _VOWELS]
    i = rng.choice(vowels) if vowels else len(word) - 1
    return word[: i + 1] + word[i] * rng.randint(2, 4) + word[i + 1:]


def _neighbour(ch: str, rng: random.Random) -> str | None:
    near = _NEIGHBOURS.get(ch.lower())
    if not near:
        return None
    rep = rng.choice(near)
    return rep.upper() if ch.isupper() else rep


def _typo_word(word: str, rng: random.Random) -> str:
    ops = ["swap", "drop", "double", "replace"]
    rng.shuffle(ops)
    for op in ops:
        if op == "swap":
            pairs = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
            if pairs:
                i = rng.choice(pairs)
                return word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif op == "drop":
            i = rng.randrange(1, len(word))  # keep the first letter, as real typos mostly do
            return word[:i] + word[i + 1:]
        elif op == "double":
            i = rng.randrange(len(word))
            return word[: i + 1] + word[i] + word[i + 1:]
        else:
            idx = [i for i, ch in enumerate(word) if ch.lower() in _NEIGHBOURS]
            if idx:
                i = rng.choice(idx)
                rep = _neighbour(word[i], rng)
                if rep:
                    return word[:i] + rep + word[i + 1:]
    return word


def _emoji_word(word: str, rng: random.Random) -> str:
    emo = rng.choice(EMOJI)
    mode = rng.choice(("replace_vowel", "inside", "after"))
    if mode == "replace_vowel":
        vowels = [i for i in range(1, len(word)) if word[i] in _VOWELS]
        if vowels:
            i = rng.choice(vowels)
            return word[:i] + emo + word[i + 1:]
        mode = "inside"
    if mode == "inside":
        i = rng.randrange(1, len(word))
        return word[:i] + emo + word[i:]
    return f"{word} {emo}"


def _case_word(word: str, rng: random.Random) -> str:
    def alternate(start_upper: bool) -> str:
        return "".join(
            ch.upper() if (i % 2 == 0) == start_upper else ch.lower() for i, ch in enumerate(word)
        )

    options = [
        lambda: word.upper(),
        lambda: alternate(False),
        lambda: alternate(True),
        lambda: "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in word),
    ]
    first = rng.randrange(len(options))
    for j in range(len(options)):
        out = options[(first + j) % len(options)]()
        if out != word:
            return out
    return word


_WORD_FN: dict[str, Callable[[str, random.Random], str]] = {
    "leetspeak": _leet_word,
    "homoglyph": _homoglyph_word,
    "zero_width": _zero_width_word,
    "spacing": _spacing_word,
    "repetition": _repetition_word,
    "typo": _typo_word,
    "emoji": _emoji_word,
    "case": _case_word,
}

# Combo order: letter-level tricks first, then the ones that break a word apart, so a later
# step still finds words to work on.
_COMBO_ORDER = ("case", "homoglyph", "leetspeak", "repetition", "typo", "emoji", "zero_width", "spacing")


def _can_change(kind: str, word: str) -> bool:
    if kind == "leetspeak":
        return any(ch.lower() in LEET for ch in word)
    if kind == "homoglyph":
        return any(ch in HOMOGLYPHS for ch in word)
    if kind == "case":
        return word.upper() != word.lower()
    return True


def eligible_words(text: str) -> list[re.Match]:
    """Alphabetic runs of at least three letters: the words a perturbation may touch."""
    return [m for m in _WORD_RE.finditer(text) if len(m.group()) >= _MIN_LETTERS]


def _apply_kind(raw: str, kind: str, rng: random.Random, intensity: float) -> str:
    words = eligible_words(raw)
    if not words:
        return raw
    n = max(1, round(intensity * len(words)))
    candidates = [m for m in words if _can_change(kind, m.group())] or words
    chosen = sorted(rng.sample(candidates, min(n, len(candidates))), key=lambda m: m.start())
    fn = _WORD_FN[kind]
    parts: list[str] = []
    last = 0
    for m in chosen:
        parts.append(raw[last:m.start()])
        parts.append(fn(m.group(), rng))
        last = m.end()
    parts.append(raw[last:])
    return "".join(parts)


def perturb_text(text: str, kind: str, rng: random.Random, intensity: float) -> str:
    """Rewrite about ``intensity`` of the eligible words with one evasion trick.

    The context prefix ("[ADULT][MESSAGE] ") is kept byte for byte: it is metadata the model
    reads, not user text an evader controls. Text with an eligible word always comes back
    changed (a zero-width insertion is the last resort), and never empty.
    """
    if kind not in PERTURBATION_KINDS:
        raise ValueError(f"unknown perturbation kind {kind!r}; valid: {', '.join(PERTURBATION_KINDS)}")
    if not 0 < intensity <= 1:
        raise ValueError(f"intensity must be in (0, 1], got {intensity}")

    _, raw = split_prefix(text)
    head = text[: len(text) - len(raw)]

    if kind == "combo":
        steps = rng.sample(BASE_KINDS, rng.choice((2, 3)))
        steps.sort(key=_COMBO_ORDER.index)
        out = raw
        for step in steps:
            out = _apply_kind(out, step, rng, intensity)
    else:
        out = _apply_kind(raw, kind, rng, intensity)

    if out == raw or not out.strip():
        words = eligible_words(raw)
        if not words:
            return text
        m = words[0]
        out = raw[: m.start()] + _zero_width_word(m.group(), rng) + raw[m.end():]
    return head + out


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------

def stable_seed(*parts: object) -> int:
    """A 64-bit seed from the parts via SHA-256: identical across processes and machines."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def perturb_records(records: list[Record], params: PerturbParams) -> tuple[list[Record], dict]:
    """Make ``variants_per_source`` variants of a seeded ``rate`` of the records.

    Records are sorted by id first so the input order does not change the choice. Kinds
    are dealt in a seeded cyclic order, so every kind appears once there are enough
    variants. Records without an eligible word cannot be perturbed and are never chosen.
    """
    ordered = sorted(records, key=lambda r: r.id)
    ids = [r.id for r in ordered]
    dupes = sorted({i for i, j in zip(ids, ids[1:]) if i == j})
    if dupes:
        raise ContractError(f"duplicate record id(s) across the positives: {dupes[:5]}; ids must be unique")

    usable = [r for r in ordered if eligible_words(split_prefix(r.text)[1])]
    n_sources = min(len(usable), round(params.rate * len(ordered)))
    if len(usable) < len(ordered):
        log.info("%d of %d records have no word of %d+ letters; not perturbable",
                 len(ordered) - len(usable), len(ordered), _MIN_LETTERS)

    pick = random.Random(stable_seed(params.seed, "select"))
    sources = sorted(pick.sample(usable, n_sources), key=lambda r: r.id)
    kinds = list(params.kinds)
    random.Random(stable_seed(params.seed, "kinds")).shuffle(kinds)

    variants: list[Record] = []
    by_kind: dict[str, int] = {k: 0 for k in params.kinds}
    by_category: dict[str, int] = {}
    slot = 0
    for src in sources:
        for k in range(params.variants_per_source):
            kind = kinds[slot % len(kinds)]
            slot += 1
            rng = random.Random(stable_seed(params.seed, src.id, k))
            text = perturb_text(src.text, kind, rng, params.intensity)
            variants.append(Record(
                id=f"{src.id}~p{k}",
                text=text,
                labels=dict(src.labels),
                metadata={**src.metadata, "source": "perturbation", "perturbation": kind,
                          "parent_id": src.id, "group": src.group},
            ))
            by_kind[kind] += 1
            cat = str(src.metadata.get("category") or "unknown")
            by_category[cat] = by_category.get(cat, 0) + 1

    stats = {
        "sources": len(sources),
        "variants": len(variants),
        "by_kind": by_kind,
        "by_category": dict(sorted(by_category.items())),
    }
    return variants, stats


def run(positives_dir: Path, out_path: Path, params: PerturbParams) -> dict:
    """Read the generated positives, write their adversarial variants, return the stats."""
    positives_dir = Path(positives_dir)
    files = sorted(
        p for p in positives_dir.glob("*.jsonl") if not p.name.startswith("_")
    ) if positives_dir.is_dir() else []
    if not files:
        raise ContractError(
            f"{positives_dir}: no positive examples (*.jsonl) to perturb; run generate-positives first"
        )

    records: list[Record] = []
    for path in files:
        records.extend(contract.read_records(path, max_reject_fraction=0).records)

    variants, stats = perturb_records(records, params)
    contract.write_records(out_path, variants)
    log.info("wrote %d perturbations of %d sources (of %d positives from %d files) to %s",
             stats["variants"], stats["sources"], len(records), len(files), out_path)
    return stats
