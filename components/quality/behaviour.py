"""Behavioural tests in the manner of CheckList (Ribeiro et al. 2020): capabilities as data.

``resources/behaviour/suite.yaml`` lists functionalities (negated threats, counter-speech,
obfuscated threats, contact details in every format, ...). Each expands templates x fillers
into test cases that say which categories must and must not be flagged. This module loads and
validates the suite, expands it deterministically, applies the obfuscation transforms, scores
a model's probabilities against it, and gives the suite's word n-grams so the merge step can
keep any record that shares one out of the splits.

Nothing here is random at run time: subsamples and transforms are seeded through
``stable_seed`` (SHA-256), so the same file gives the same cases on every machine.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from components.core.taxonomy import LABELS
from components.core.yaml_doc import YamlFileError, read_yaml
from components.generate_perturbations import perturb_text, stable_seed
from components.model.scoring import flags
from components.text.normalize import normalize_text

SUITE_RESOURCE = "resources/behaviour/suite.yaml"
TRANSFORMS: tuple[str, ...] = ("leetspeak", "homoglyph", "fullwidth", "zero_width", "spacing")
MAX_FAILURES = 25

_KEYS = {"name", "description", "gating", "templates", "fillers", "transform",
         "must_flag", "must_not_flag", "max_cases"}
_REQUIRED = ("name", "description", "gating", "templates")
_NAME_RE = re.compile(r"^[a-z0-9_]+$")
_SLOT_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOKEN_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file, functionality and key."""


@dataclass(frozen=True)
class Functionality:
    """One capability: templates x fillers, an optional transform, and the expected flags."""

    name: str
    description: str
    gating: bool
    templates: tuple[str, ...]
    fillers: Mapping[str, tuple[str, ...]]
    transform: str | None
    must_flag: tuple[str, ...]
    must_not_flag: tuple[str, ...]  # "all" in the file becomes every category in LABELS order
    max_cases: int | None


@dataclass(frozen=True)
class Suite:
    """A validated suite: its seed, its functionalities in file order, and where it came from."""

    seed: int
    functionalities: tuple[Functionality, ...]
    source: str


@dataclass(frozen=True)
class Case:
    """One expanded test case. ``id`` is ``<functionality>-<nnn>`` (1-based, expansion order);
    ``text`` is what the model scores (transformed where the functionality has a transform),
    ``plain`` the same text before the transform."""

    id: str
    functionality: str
    text: str
    must_flag: tuple[str, ...]
    must_not_flag: tuple[str, ...]
    gating: bool
    description: str = ""
    plain: str = ""


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------


def load_suite(path: str | Path | None = None) -> Suite:
    """Read and validate a suite: the packaged ``resources/behaviour/suite.yaml`` by default.

    The file is a mapping with an optional integer ``seed`` and a non-empty list
    ``functionalities`` (keys documented at the top of the packaged file). Raises
    :class:`SuiteError` naming the file, the functionality and the key for: unknown or missing
    keys, a duplicate or malformed name, an unknown category, ``all`` anywhere but
    ``must_not_flag``, a category both required and forbidden, no expectation at all, empty
    templates or fillers, a template slot with no filler (or a filler no template uses), a stray
    brace, an unknown transform, or a ``max_cases`` that is not a positive integer.
    """
    # The project's strict reader: UTF-8, one document, no key written twice (a second `must_flag`
    # would otherwise silently replace the first).
    try:
        if path is None:
            source = f"components/{SUITE_RESOURCE}"
            with resources.as_file(resources.files("components").joinpath(SUITE_RESOURCE)) as packaged:
                doc = read_yaml(packaged).data
        else:
            source = str(path)
            doc = read_yaml(path).data
    except YamlFileError as e:
        raise SuiteError(str(e)) from None
    if not isinstance(doc, dict):
        raise SuiteError(f"{source}: the suite must be a mapping with 'functionalities'")
    unknown = sorted(set(doc) - {"seed", "functionalities"})
    if unknown:
        raise SuiteError(f"{source}: unknown top-level key(s) {unknown}; valid: seed, functionalities")
    seed = doc.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SuiteError(f"{source}: seed must be an integer, got {seed!r}")
    items = doc.get("functionalities")
    if not isinstance(items, list) or not items:
        raise SuiteError(f"{source}: 'functionalities' must be a non-empty list")

    funcs: list[Functionality] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        f = _functionality(item, source, i + 1)
        if f.name in seen:
            raise SuiteError(f"{source}: functionality {f.name!r}: name: duplicate name")
        seen.add(f.name)
        funcs.append(f)
    return Suite(seed=seed, functionalities=tuple(funcs), source=source)


def _functionality(item: Any, source: str, number: int) -> Functionality:
    if not isinstance(item, dict):
        raise SuiteError(f"{source}: functionality #{number}: must be a mapping, got {type(item).__name__}")
    name = item.get("name")
    if not (isinstance(name, str) and _NAME_RE.match(name)):
        raise SuiteError(f"{source}: functionality #{number}: name: must be a string of [a-z0-9_], got {name!r}")
    where = f"{source}: functionality {name!r}"

    def fail(key: str, msg: str) -> SuiteError:
        return SuiteError(f"{where}: {key}: {msg}")

    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key(s) {unknown}; valid: {', '.join(sorted(_KEYS))}")
    for key in _REQUIRED:
        if key not in item:
            raise fail(key, "missing")
    description = item["description"]
    if not isinstance(description, str) or not description.strip():
        raise fail("description", "must be a non-empty string")
    gating = item["gating"]
    if not isinstance(gating, bool):
        raise fail("gating", f"must be true or false, got {gating!r}")

    templates = item["templates"]
    if not isinstance(templates, list) or not templates:
        raise fail("templates", "empty functionality: give at least one template")
    if not all(isinstance(t, str) and t for t in templates):
        raise fail("templates", "every template must be a non-empty string")
    fillers_in = item.get("fillers") or {}
    if not isinstance(fillers_in, dict):
        raise fail("fillers", "must be a mapping {slot: [values]}")
    fillers: dict[str, tuple[str, ...]] = {}
    for slot, values in fillers_in.items():
        if not isinstance(values, list) or not values:
            raise fail(f"fillers.{slot}", "must be a non-empty list of strings")
        if not all(isinstance(v, str) for v in values):
            raise fail(f"fillers.{slot}", "every value must be a string (quote numbers)")
        if any("{" in v or "}" in v for v in values):
            raise fail(f"fillers.{slot}", "values may not contain braces (fillers are not templates)")
        fillers[str(slot)] = tuple(values)
    used: set[str] = set()
    for t in templates:
        slots = _SLOT_RE.findall(t)
        if "{" in _SLOT_RE.sub("", t) or "}" in _SLOT_RE.sub("", t):
            raise fail("templates", f"stray brace in {t!r}; slots are {{name}}")
        for s in slots:
            if s not in fillers:
                raise fail("templates", f"unknown slot {{{s}}} in {t!r}; fillers: {sorted(fillers)}")
        used.update(slots)
    unused = sorted(set(fillers) - used)
    if unused:
        raise fail(f"fillers.{unused[0]}", f"no template uses slot(s) {unused}")

    transform = item.get("transform")
    if transform is not None and transform not in TRANSFORMS:
        raise fail("transform", f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    must_flag = _categories(item.get("must_flag"), "must_flag", fail, allow_all=False)
    must_not = _categories(item.get("must_not_flag"), "must_not_flag", fail, allow_all=True)
    if not must_flag and not must_not:
        raise fail("must_flag", "empty functionality: give must_flag and/or must_not_flag")
    both = [c for c in must_flag if c in must_not]
    if both:
        raise fail("must_not_flag", f"{both} also in must_flag")
    max_cases = item.get("max_cases")
    if max_cases is not None and (not isinstance(max_cases, int) or isinstance(max_cases, bool)
                                  or max_cases < 1):
        raise fail("max_cases", f"must be a positive integer, got {max_cases!r}")
    return Functionality(name, description.strip(), gating, tuple(templates), fillers,
                         transform, must_flag, must_not, max_cases)


def _categories(value: Any, key: str, fail, allow_all: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if value == "all":
        if not allow_all:
            raise fail(key, "'all' is only allowed in must_not_flag")
        return LABELS
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise fail(key, f"must be a list of categories{' or all' if allow_all else ''}, got {value!r}")
    bad = [c for c in value if c not in LABELS]
    if bad:
        raise fail(key, f"unknown category {bad[0]!r}; valid categories: {', '.join(LABELS)}")
    return tuple(c for c in LABELS if c in value)  # LABELS order, no duplicates


# ---------------------------------------------------------------------------------------------
# Expansion and transforms
# ---------------------------------------------------------------------------------------------


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if 0x21 <= ord(ch) <= 0x7E else ch for ch in text)


def apply_transform(text: str, kind: str, seed: int = 0) -> str:
    """One obfuscation of the whole text, deterministic for ``(text, kind, seed)``.

    ``fullwidth`` maps every ASCII character 0x21-0x7E to U+FF01-U+FF5E (spaces stay). The
    others are ``generate_perturbations.perturb_text`` at intensity 1.0, i.e. every word of 3+
    letters: ``leetspeak`` (digits/symbols for letters), ``homoglyph`` (Cyrillic/Greek
    look-alikes), ``zero_width`` (1-3 invisible characters inside each word), ``spacing``
    (letters joined by one of space . - _). Raises ValueError for an unknown kind.
    """
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transform {kind!r}; valid: {', '.join(TRANSFORMS)}")
    if kind == "fullwidth":
        return _fullwidth(text)
    return perturb_text(text, kind, random.Random(seed), 1.0)


def _render(f: Functionality) -> list[str]:
    """Every template's expansion in order (template, then fillers' product), duplicates removed."""
    out: dict[str, None] = {}
    for t in f.templates:
        slots = list(dict.fromkeys(_SLOT_RE.findall(t)))
        for combo in itertools.product(*(f.fillers[s] for s in slots)):
            values = dict(zip(slots, combo))
            out.setdefault(_SLOT_RE.sub(lambda m: values[m.group(1)], t), None)
    return list(out)


def expand(suite: Suite) -> list[Case]:
    """All cases of the suite, functionality by functionality in file order.

    A functionality with ``max_cases`` smaller than its expansion keeps a subsample seeded by
    ``(suite.seed, name)``, in expansion order; a transform is seeded by ``(suite.seed, name,
    text)``. The same suite always gives the same list.
    """
    cases: list[Case] = []
    for f in suite.functionalities:
        texts = _render(f)
        if f.max_cases is not None and len(texts) > f.max_cases:
            rng = random.Random(stable_seed(suite.seed, f.name))
            texts = [texts[i] for i in sorted(rng.sample(range(len(texts)), f.max_cases))]
        for n, plain in enumerate(texts, 1):
            text = plain if f.transform is None else apply_transform(
                plain, f.transform, stable_seed(suite.seed, f.name, plain))
            cases.append(Case(id=f"{f.name}-{n:03d}", functionality=f.name, text=text,
                              must_flag=f.must_flag, must_not_flag=f.must_not_flag,
                              gating=f.gating, description=f.description, plain=plain))
    return cases


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def _rate(passed: int, n: int) -> float:
    return passed / n if n else 1.0


def score(cases: Sequence[Case], probs: np.ndarray, thresholds: Mapping[str, float],
          judged: Sequence[bool] | None = None) -> dict:
    """Judge a model's scores on the cases with the flagging rule of ``scoring.flags``.

    ``judged``: per case, whether the served model judges it at all (its language verdict,
    ``OnnxClassifier.languages``); a case that is not judged flags nothing, as when served.

    ``probs``: float array ``[len(cases), 18]`` in ``LABELS`` order; ``thresholds``: one per
    category. A case passes when every ``must_flag`` category is flagged and no
    ``must_not_flag`` one is. Returns ``{"n_cases", "passed", "pass_rate", "gating_pass_rate",
    "functionalities": {name: {"description", "gating", "n", "passed", "pass_rate",
    "failures": [{"id", "text", "must_flag", "must_not_flag", "flagged", "scores"}]}}}``;
    failures keep case order, at most 25 per functionality, and ``scores`` covers every
    category in must_flag, must_not_flag or flagged. A rate over no cases is 1.0.
    Raises ValueError when ``probs`` has the wrong shape.
    """
    p = np.asarray(probs)
    if p.shape != (len(cases), len(LABELS)):
        raise ValueError(f"probs must have shape ({len(cases)}, {len(LABELS)}) "
                         f"(cases x categories in LABELS order), got {p.shape}")
    flagged_all = flags(p, thresholds) if len(cases) else np.zeros((0, len(LABELS)), bool)
    if judged is not None:
        flagged_all = flagged_all & np.asarray(judged, dtype=bool).reshape(-1, 1)
    funcs: dict[str, dict] = {}
    passed = gating_n = gating_passed = 0
    for i, case in enumerate(cases):
        row = flagged_all[i]
        flagged = [c for j, c in enumerate(LABELS) if row[j]]
        ok = all(c in flagged for c in case.must_flag) and not any(c in flagged for c in case.must_not_flag)
        fd = funcs.setdefault(case.functionality, {
            "description": case.description, "gating": case.gating, "n": 0, "passed": 0,
            "pass_rate": 1.0, "failures": []})
        fd["n"] += 1
        passed += ok
        fd["passed"] += ok
        if case.gating:
            gating_n += 1
            gating_passed += ok
        if not ok and len(fd["failures"]) < MAX_FAILURES:
            shown = set(case.must_flag) | set(case.must_not_flag) | set(flagged)
            fd["failures"].append({
                "id": case.id, "text": case.text, "must_flag": list(case.must_flag),
                "must_not_flag": list(case.must_not_flag), "flagged": flagged,
                "scores": {c: round(float(p[i, j]), 6) for j, c in enumerate(LABELS) if c in shown},
            })
    for fd in funcs.values():
        fd["pass_rate"] = _rate(fd["passed"], fd["n"])
    return {"n_cases": len(cases), "passed": int(passed), "pass_rate": _rate(passed, len(cases)),
            "gating_pass_rate": _rate(gating_passed, gating_n), "functionalities": funcs}


# ---------------------------------------------------------------------------------------------
# Word n-grams (leakage control)
# ---------------------------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens of the model's normalisation of ``text``
    (:func:`components.text.normalize.normalize_text`): runs of letters/digits, an inner apostrophe kept."""
    return _TOKEN_RE.findall(normalize_text(text).lower())


def word_ngrams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """The set of word n-grams of ``text`` (empty when it has fewer than n tokens)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    t = tokens(text)
    return {tuple(t[i:i + n]) for i in range(len(t) - n + 1)}


def suite_ngrams(n: int = 5, path: str | Path | None = None) -> set[tuple[str, ...]]:
    """Every word n-gram of every expanded case of the suite, both as scored and before its
    transform: the set the merge step checks records against with :func:`shares_ngram`.

    An n-gram of single characters only (what the spacing transform leaves: ``k i l l y``) is left
    out: it says nothing about wording and matches any spaced-out text, which would drop
    unrelated training records."""
    out: set[tuple[str, ...]] = set()
    for case in expand(load_suite(path)):
        out |= word_ngrams(case.text, n)
        out |= word_ngrams(case.plain, n)
    out = {g for g in out if any(len(t) > 1 for t in g)}
    return out


def shares_ngram(text: str, ngrams: Iterable[tuple[str, ...]], n: int = 5) -> bool:
    """Whether ``text`` has a word n-gram in ``ngrams`` (a set from :func:`suite_ngrams`)."""
    grams = ngrams if isinstance(ngrams, (set, frozenset)) else set(ngrams)
    return any(g in grams for g in word_ngrams(text, n))
