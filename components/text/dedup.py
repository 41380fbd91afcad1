"""Exact and near-duplicate detection, and the diversity figures built on it.

Near-duplicates are found with MinHash LSH (datasketch) over word 3-shingles of a
normalised text: the same measure serves the generators' diversity statistics and the
merge step's de-duplication, so the two always agree on what "near-duplicate" means.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache

from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

from components.core.taxonomy import split_prefix
from components.text.normalize import normalize_text

_NON_WORD = re.compile(r"[^\w\s]+")
_SPACES = re.compile(r"\s+")
NUM_PERM = 64


def normalize(text: str) -> str:
    """Case-, width- and punctuation-insensitive form of a text, without its context prefix: the
    model's normalisation (:func:`components.text.normalize.normalize_text`), case-folded, with
    punctuation turned to spaces."""
    _, raw = split_prefix(text)
    raw = normalize_text(raw).casefold()
    raw = _NON_WORD.sub(" ", raw)
    return _SPACES.sub(" ", raw).strip()


def shingles(text: str, n: int = 3) -> set[str]:
    words = normalize(text).split()
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def minhash(text: str) -> MinHash:
    m = MinHash(num_perm=NUM_PERM, seed=1)
    m.update_batch([s.encode("utf-8") for s in shingles(text)])
    return m


@cache
def _bands(threshold: float) -> tuple[int, int]:
    # datasketch integrates to find the LSH bands for a threshold; once per threshold is enough.
    return _optimal_param(threshold, NUM_PERM, 0.5, 0.5)


class NearDuplicateIndex:
    """Incremental index: ``add`` returns the key of an earlier near-duplicate, or None."""

    def __init__(self, threshold: float = 0.85):
        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, params=_bands(threshold))
        self._hashes: dict[str, MinHash] = {}

    def query(self, text: str) -> tuple[list[str], MinHash]:
        """Keys of indexed texts within the threshold (LSH candidates confirmed by Jaccard)."""
        m = minhash(text)
        return [k for k in self._lsh.query(m) if self._hashes[k].jaccard(m) >= self.threshold], m

    def insert(self, key: str, m: MinHash) -> None:
        self._lsh.insert(key, m)
        self._hashes[key] = m

    def add(self, key: str, text: str) -> str | None:
        matches, m = self.query(text)
        if not matches:
            self.insert(key, m)
            return None
        return matches[0]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the corpus (Li et al., 2016): 1.0 is no repetition."""
    total = 0
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        words = normalize(text).split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def diversity(texts: Iterable[str], near_threshold: float = 0.85) -> dict[str, float | int]:
    """Distinct-1/2/3, exact and near duplicate rates, mean length: the figures a step reports."""
    texts = list(texts)
    exact = len(texts) - len({normalize(t) for t in texts})
    index = NearDuplicateIndex(near_threshold)
    near = sum(index.add(str(i), t) is not None for i, t in enumerate(texts))
    n = len(texts) or 1
    return {
        "count": len(texts),
        "distinct_1": round(distinct_n(texts, 1), 4),
        "distinct_2": round(distinct_n(texts, 2), 4),
        "distinct_3": round(distinct_n(texts, 3), 4),
        "exact_duplicate_rate": round(exact / n, 4),
        "near_duplicate_rate": round(near / n, 4),
        "mean_words": round(sum(len(t.split()) for t in texts) / n, 2),
    }
