"""The behavioural suite: it loads, expands, transforms, scores and never leaks into the generator."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.core.taxonomy import LABELS
from components.generate_perturbations import HOMOGLYPHS, LEET, ZERO_WIDTH, eligible_words
from components.quality import behaviour as bh

RESOURCES = Path(bh.__file__).resolve().parents[1] / "resources"
MIN_CASES = 10
# Functionalities allowed fewer than MIN_CASES cases, with the reason. None today.
FEW_CASES_OK: dict[str, str] = {}


@pytest.fixture(scope="module")
def suite():
    return bh.load_suite()


@pytest.fixture(scope="module")
def cases(suite):
    return bh.expand(suite)


def _by_func(cases):
    out: dict[str, list[bh.Case]] = {}
    for c in cases:
        out.setdefault(c.functionality, []).append(c)
    return out


# --- the suite as data ----------------------------------------------------------------------


def test_suite_expands_to_hundreds_of_cases(cases):
    assert 400 <= len(cases) <= 1000, len(cases)


def test_every_functionality_has_enough_cases(suite, cases):
    counts = Counter(c.functionality for c in cases)
    assert set(counts) == {f.name for f in suite.functionalities}
    few = {n: k for n, k in counts.items() if k < MIN_CASES and n not in FEW_CASES_OK}
    assert not few, f"functionalities with fewer than {MIN_CASES} cases: {few}"


def test_required_functionalities_present(suite):
    names = {f.name for f in suite.functionalities}
    for t in bh.TRANSFORMS:
        assert f"threats_{t}" in names and f"harassment_{t}" in names
    assert {"identity_neutral", "threat_negation", "counter_speech_hate", "reported_threats",
            "self_deprecation", "violent_idioms", "recovery_talk", "long_text_threat_at_end",
            "contentless", "harmless_numbers"} <= names
    not_gated = {f.name for f in suite.functionalities if not f.gating}
    assert not_gated == {"non_english_threats", "non_english_harmless"}


def test_categories_ids_and_expectations(cases):
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    for c in cases:
        assert re.fullmatch(rf"{c.functionality}-\d{{3}}", c.id)
        assert c.must_flag or c.must_not_flag
        assert set(c.must_flag) <= set(LABELS) and set(c.must_not_flag) <= set(LABELS)
        assert not set(c.must_flag) & set(c.must_not_flag)
    texts = Counter((c.functionality, c.text) for c in cases)
    assert max(texts.values()) == 1


def test_must_not_flag_all_means_every_category(cases):
    contentless = _by_func(cases)["contentless"]
    assert all(c.must_not_flag == LABELS for c in contentless)
    # contentless really has no words
    assert all(not bh.tokens(c.text) or len(c.text.strip()) == 1 for c in contentless)


def test_expansion_is_deterministic(cases):
    again = bh.expand(bh.load_suite())
    assert again == cases


def test_long_texts_are_long_and_end_in_the_violation(cases):
    for c in _by_func(cases)["long_text_threat_at_end"]:
        assert len(bh.tokens(c.text)) >= 150
        assert c.must_flag == ("threats",)


def test_max_cases_subsample_keeps_expansion_order(suite):
    f = next(f for f in suite.functionalities if f.name == "identity_neutral")
    full = bh._render(f)
    kept = [c.plain for c in bh.expand(suite) if c.functionality == f.name]
    assert len(kept) == f.max_cases < len(full)
    positions = [full.index(t) for t in kept]
    assert positions == sorted(positions)


# --- transforms -----------------------------------------------------------------------------


def test_fullwidth_maps_ascii_to_ff01_ff5e():
    assert bh.apply_transform("kill you! ~", "fullwidth") == "ｋｉｌｌ ｙｏｕ！ ～"
    every = "".join(chr(c) for c in range(0x21, 0x7F))
    assert bh.apply_transform(every, "fullwidth") == "".join(chr(c) for c in range(0xFF01, 0xFF5F))


def test_transforms_are_deterministic_and_reject_unknown_kinds():
    text = "I am going to break your jaw tonight."
    for kind in bh.TRANSFORMS:
        assert bh.apply_transform(text, kind, 5) == bh.apply_transform(text, kind, 5) != text
    with pytest.raises(ValueError, match="unknown transform"):
        bh.apply_transform(text, "rot13")


def _check_transform(kind: str, plain: str, text: str) -> None:
    assert text != plain
    if kind == "fullwidth":
        assert not any(0x21 <= ord(ch) <= 0x7E for ch in text)
        assert any(0xFF01 <= ord(ch) <= 0xFF5E for ch in text)
        assert unicodedata.normalize("NFKC", text) == unicodedata.normalize("NFKC", plain)
    elif kind == "zero_width":
        assert any(z in text for z in ZERO_WIDTH)
        assert "".join(ch for ch in text if ch not in ZERO_WIDTH) == plain
    elif kind == "spacing":
        squash = lambda s: re.sub(r"[\s.\-_]", "", s)  # noqa: E731
        assert squash(text) == squash(plain)
        assert not re.search(r"[^\W\d_]{3,}", text), "a word of 3+ letters kept its letters together"
    elif kind == "leetspeak":
        assert len(text) == len(plain)
        diffs = [(a, b) for a, b in zip(plain, text) if a != b]
        assert diffs and all(b in LEET[a.lower()] for a, b in diffs)
    elif kind == "homoglyph":
        assert len(text) == len(plain)
        diffs = [(a, b) for a, b in zip(plain, text) if a != b]
        assert diffs and all(b in HOMOGLYPHS[a] for a, b in diffs)
        assert any(ord(b) > 0x7F for _, b in diffs)
    else:  # pragma: no cover
        raise AssertionError(kind)


def test_transformed_functionalities_carry_what_they_claim(suite, cases):
    by = _by_func(cases)
    transformed = [f for f in suite.functionalities if f.transform]
    assert {f.transform for f in transformed} == set(bh.TRANSFORMS)
    for f in transformed:
        for c in by[f.name]:
            _check_transform(f.transform, c.plain, c.text)


def test_zero_width_touches_every_eligible_word(cases):
    for c in _by_func(cases)["threats_zero_width"] + _by_func(cases)["harassment_zero_width"]:
        where = [i for i, ch in enumerate(c.text) if ch not in ZERO_WIDTH]  # plain index -> text index
        assert len(where) == len(c.plain)
        for m in eligible_words(c.plain):
            inside = c.text[where[m.start()]:where[m.end() - 1] + 1]
            assert any(z in inside for z in ZERO_WIDTH), (m.group(), c.text)


# --- scoring --------------------------------------------------------------------------------


def _case(i, func="f", must=(), must_not=(), gating=True):
    return bh.Case(id=f"{func}-{i:03d}", functionality=func, text=f"text {i}", must_flag=tuple(must),
                   must_not_flag=tuple(must_not), gating=gating, description=f"about {func}")


def _probs(rows):
    p = np.zeros((len(rows), len(LABELS)), dtype=np.float32)
    for i, row in enumerate(rows):
        for cat, v in row.items():
            p[i, LABELS.index(cat)] = v
    return p


TH = {c: 0.5 for c in LABELS}


def test_score_exact_pass_and_fail():
    cases = [
        _case(1, "pos", must=["threats"]),                          # flagged: pass
        _case(2, "pos", must=["threats"]),                          # 0.49: fail
        _case(3, "neg", must_not=["threats"]),                      # not flagged: pass
        _case(4, "neg", must_not=["threats"]),                      # flagged: fail
        _case(5, "none", must_not=LABELS),                          # nothing: pass
        _case(6, "none", must_not=LABELS),                          # spam flagged: fail
        _case(7, "mix", must=["harassment"], must_not=["hate_speech"]),  # both right: pass
        _case(8, "mix", must=["harassment"], must_not=["hate_speech"], gating=False),  # hate: fail
        _case(9, "pos", must=["threats"]),                          # == threshold: flagged, pass
    ]
    probs = _probs([
        {"threats": 0.9}, {"threats": 0.49}, {"threats": 0.1, "profanity": 0.8}, {"threats": 0.7},
        {}, {"spam": 0.6}, {"harassment": 0.8, "hate_speech": 0.2},
        {"harassment": 0.8, "hate_speech": 0.55}, {"threats": 0.5},
    ])
    r = bh.score(cases, probs, TH)
    assert set(r) == {"n_cases", "passed", "pass_rate", "gating_pass_rate", "functionalities"}
    assert (r["n_cases"], r["passed"]) == (9, 5)
    assert r["pass_rate"] == pytest.approx(5 / 9)
    assert r["gating_pass_rate"] == pytest.approx(5 / 8)
    f = r["functionalities"]
    assert list(f) == ["pos", "neg", "none", "mix"]
    assert {k: (v["n"], v["passed"]) for k, v in f.items()} == {
        "pos": (3, 2), "neg": (2, 1), "none": (2, 1), "mix": (2, 1)}
    assert f["pos"]["pass_rate"] == pytest.approx(2 / 3)
    assert set(f["pos"]) == {"description", "gating", "n", "passed", "pass_rate", "failures"}
    assert f["pos"]["description"] == "about pos" and f["pos"]["gating"] is True

    (fail,) = f["pos"]["failures"]
    assert set(fail) == {"id", "text", "must_flag", "must_not_flag", "flagged", "scores"}
    assert fail["id"] == "pos-002" and fail["flagged"] == [] and fail["must_flag"] == ["threats"]
    assert fail["scores"] == {"threats": pytest.approx(0.49)}
    (fail,) = f["neg"]["failures"]
    assert fail["flagged"] == ["threats"] and fail["scores"] == {"threats": pytest.approx(0.7)}
    (fail,) = f["none"]["failures"]
    assert fail["id"] == "none-006" and fail["flagged"] == ["spam"]
    assert list(fail["scores"]) == list(LABELS) and fail["must_not_flag"] == list(LABELS)
    (fail,) = f["mix"]["failures"]
    assert fail["flagged"] == ["hate_speech", "harassment"]
    assert set(fail["scores"]) == {"hate_speech", "harassment"}


def test_a_case_the_served_model_does_not_judge_flags_nothing():
    # judged=False stands for a text in a language the model is not trained on: served, it gets no flags
    cases = [_case(1, "neg", must_not=LABELS), _case(2, "neg", must_not=LABELS), _case(3, "pos", must=["threats"])]
    probs = _probs([{"self_harm": 0.9}, {"self_harm": 0.9}, {"threats": 0.9}])
    judged = bh.score(cases, probs, TH, judged=[False, True, False])["functionalities"]
    assert (judged["neg"]["passed"], judged["pos"]["passed"]) == (1, 0)
    assert judged["neg"]["failures"][0]["id"] == "neg-002"
    plain = bh.score(cases, probs, TH)["functionalities"]
    assert (plain["neg"]["passed"], plain["pos"]["passed"]) == (0, 1)


def test_score_caps_failures_in_case_order():
    cases = [_case(i, must=["spam"]) for i in range(1, 31)]
    r = bh.score(cases, np.zeros((30, len(LABELS))), TH)
    fails = r["functionalities"]["f"]["failures"]
    assert len(fails) == bh.MAX_FAILURES
    assert [x["id"] for x in fails] == [f"f-{i:03d}" for i in range(1, 26)]
    assert r["functionalities"]["f"]["passed"] == 0 and r["pass_rate"] == 0.0


def test_score_rejects_wrong_shape_and_is_json_ready(cases):
    import json

    with pytest.raises(ValueError, match="shape"):
        bh.score(cases[:3], np.zeros((2, len(LABELS))), TH)
    r = bh.score(cases, np.zeros((len(cases), len(LABELS))), TH)
    json.dumps(r)
    # a model that flags nothing passes exactly the cases with no must_flag
    assert r["passed"] == sum(1 for c in cases if not c.must_flag)


# --- validation -----------------------------------------------------------------------------


GOOD = {
    "name": "broken_one", "description": "d", "gating": True,
    "templates": ["hello {who}"], "fillers": {"who": ["you", "them"]}, "must_not_flag": ["threats"],
}


@pytest.mark.parametrize("change, key, message", [
    ({"must_flag": ["threatz"]}, "must_flag", "unknown category 'threatz'"),
    ({"must_not_flag": ["nope"]}, "must_not_flag", "unknown category"),
    ({"templates": ["hello {whom}"]}, "templates", "unknown slot {whom}"),
    ({"templates": []}, "templates", "empty functionality"),
    ({"must_not_flag": None}, "must_flag", "empty functionality"),
    ({"transform": "rot13"}, "transform", "unknown transform 'rot13'"),
    ({"must_flag": "all"}, "must_flag", "only allowed in must_not_flag"),
    ({"fillers": {"who": ["x"], "extra": ["y"]}}, "fillers.extra", "no template uses"),
    ({"fillers": {"who": []}}, "fillers.who", "non-empty list"),
    ({"templates": ["hello {who} }"]}, "templates", "stray brace"),
    ({"max_cases": 0}, "max_cases", "positive integer"),
    ({"gating": "yes"}, "gating", "true or false"),
    ({"colour": "red"}, "colour", "unknown key"),
    ({"must_flag": ["threats"]}, "must_not_flag", "also in must_flag"),
])
def test_validation_names_functionality_and_key(tmp_path, change, key, message):
    func = {**GOOD, **change}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"seed": 1, "functionalities": [func]}), "utf-8")
    with pytest.raises(bh.SuiteError) as err:
        bh.load_suite(path)
    text = str(err.value)
    assert "'broken_one'" in text and f": {key}:" in text and message in text, text


def test_validation_of_the_file_itself(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"functionalities": [GOOD, GOOD]}), "utf-8")
    with pytest.raises(bh.SuiteError, match="'broken_one': name: duplicate"):
        bh.load_suite(path)
    path.write_text(yaml.safe_dump({"functionalities": []}), "utf-8")
    with pytest.raises(bh.SuiteError, match="non-empty list"):
        bh.load_suite(path)
    path.write_text("functionalities: [", "utf-8")
    with pytest.raises(bh.SuiteError, match="not valid YAML"):
        bh.load_suite(path)
    path.write_text(yaml.safe_dump({"functionalities": [{**GOOD, "name": "Bad Name"}]}), "utf-8")
    with pytest.raises(bh.SuiteError, match="functionality #1: name"):
        bh.load_suite(path)


def test_a_small_valid_suite_expands_as_written(tmp_path):
    path = tmp_path / "s.yaml"
    func = {**GOOD, "templates": ["hi {who}", "bye {who}", "hi {who}"], "must_not_flag": "all"}
    path.write_text(yaml.safe_dump({"seed": 3, "functionalities": [func]}), "utf-8")
    got = bh.expand(bh.load_suite(path))
    assert [(c.id, c.text) for c in got] == [
        ("broken_one-001", "hi you"), ("broken_one-002", "hi them"),
        ("broken_one-003", "bye you"), ("broken_one-004", "bye them")]
    assert got[0].must_not_flag == LABELS and got[0].must_flag == ()


# --- n-grams and leakage --------------------------------------------------------------------


def test_tokens_normalise_case_width_and_invisible_characters():
    assert bh.tokens("I'M ｇｏｉｎｇ to k\u200bill, you!") == ["i'm", "going", "to", "kill", "you"]
    assert bh.word_ngrams("a b c", 5) == set()
    assert bh.word_ngrams("ab cd ef gh ij kl", 5) == {("ab", "cd", "ef", "gh", "ij"), ("cd", "ef", "gh", "ij", "kl")}
    assert bh.word_ngrams("k i l l y o u", 5) == set()  # read back as "kill you"


def test_shares_ngram(cases):
    grams = bh.suite_ngrams()
    case = next(c for c in cases if c.functionality == "threat_negation")
    assert bh.shares_ngram(case.text, grams)
    assert bh.shares_ngram("prefix words. " + case.text.upper(), grams)
    assert bh.shares_ngram(bh.apply_transform(case.text, "fullwidth"), grams)
    assert not bh.shares_ngram("The weather was mild and the market opened early today.", grams)
    assert not bh.shares_ngram("too short", grams)
    # the pre-transform text of an obfuscated case is covered too
    obf = next(c for c in cases if c.functionality == "threats_homoglyph")
    assert bh.shares_ngram(obf.plain, grams) and bh.shares_ngram(obf.text, grams)


_SLOT = re.compile(r"\{[^{}]*\}|\$\{?\w+\}?")


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _generator_ngrams(n=5):
    files = sorted(p for d in ("offline", "categories", "prompts")
                   for p in (RESOURCES / d).rglob("*.yaml"))
    assert len(files) > 30
    grams: dict[tuple[str, ...], str] = {}
    for path in files:
        for s in _strings(yaml.safe_load(path.read_text("utf-8"))):
            for piece in _SLOT.split(s):  # a template slot breaks the n-gram
                for g in bh.word_ngrams(piece, n):
                    grams.setdefault(g, path.name)
    return grams


def test_no_suite_ngram_occurs_in_the_generator_resources():
    suite = bh.suite_ngrams(5)
    assert len(suite) > 1000
    lexicon = _generator_ngrams(5)
    shared = sorted(suite & lexicon.keys())
    assert not shared, "reword these suite cases: " + "; ".join(
        f"{' '.join(g)!r} (in {lexicon[g]})" for g in shared[:30])


def test_spaced_out_letters_alone_are_not_a_leak(cases):
    grams = bh.suite_ngrams()
    assert all(any(len(t) > 1 for t in g) for g in grams)
    spaced = next(c for c in cases if c.functionality == "threats_spacing")
    assert bh.shares_ngram(spaced.plain, grams)  # the wording itself is still caught
    # any spaced-out word shares letters with the suite's spaced cases; it must not count as leaked
    assert not bh.shares_ngram("g o o d n i g h t e v e r y o n e", grams)
