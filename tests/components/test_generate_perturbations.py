"""generate-perturbations: every evasion trick changes the text, keeps labels, prefix and group,
and the same seed gives the same bytes."""

from __future__ import annotations

import json
import random
import unicodedata

import pytest

from components.core import contract
from components.core.contract import ContractError, Record, make_labels
from components.core.params import PERTURBATION_KINDS, PerturbParams
from components.generate_perturbations import (
    ZERO_WIDTH,
    eligible_words,
    perturb_records,
    perturb_text,
    run,
)

PREFIX = "[ADULT][MESSAGE] "
TEXTS = [
    "I will kill you tonight, please wait for me",
    "send the deposit first or no meeting",
    "you are worthless and everyone hates you",
    "why run",  # few letters to play with: the fallbacks must still change it
    "KILL THEM ALL",
    "ok go to the park",
]


def _record(i: int, category: str = "threats", text: str | None = None, prefix: str = PREFIX) -> Record:
    rid = f"pos-{category}-{i:04d}"
    return Record(
        id=rid,
        text=prefix + (text or f"{TEXTS[i % len(TEXTS)]} number {i}"),
        labels=make_labels([category]),
        metadata={"source": "offline", "category": category, "group": rid},
    )


def _records(n: int = 40) -> list[Record]:
    cats = ["threats", "harassment", "scam_patterns"]
    return [_record(i, cats[i % len(cats)]) for i in range(n)]


@pytest.mark.parametrize("kind", PERTURBATION_KINDS)
@pytest.mark.parametrize("text", TEXTS)
def test_each_kind_changes_text_and_keeps_prefix(kind, text):
    for seed in range(5):
        out = perturb_text(PREFIX + text, kind, random.Random(seed), 0.35)
        assert out.startswith(PREFIX)
        assert out[len(PREFIX):] != text
        assert out[len(PREFIX):].strip()
        # the result still satisfies the contract (prefix parses, text not empty)
        contract.validate_record({"id": "x", "text": out, "labels": make_labels(), "metadata": {"source": "t"}})


@pytest.mark.parametrize("kind", PERTURBATION_KINDS)
def test_each_kind_changes_unprefixed_text(kind):
    out = perturb_text("please do not kill him", kind, random.Random(3), 0.5)
    assert out != "please do not kill him" and out.strip()


def test_text_without_eligible_word_is_left_alone_and_not_emptied():
    assert perturb_text(PREFIX + "ok 42 !!", "spacing", random.Random(0), 1.0) == PREFIX + "ok 42 !!"


def test_homoglyphs_are_non_ascii_lookalikes_that_survive_nfkc():
    text = "please accept the parcel or else"
    out = perturb_text(PREFIX + text, "homoglyph", random.Random(7), 1.0)
    raw = out[len(PREFIX):]
    assert not raw.isascii()
    assert len(raw) == len(text)  # one code point for one letter: it looks the same
    swapped = [(a, b) for a, b in zip(text, raw) if a != b]
    assert swapped
    for latin, glyph in swapped:
        assert unicodedata.name(glyph).split()[0] in {"CYRILLIC", "GREEK"}, (latin, glyph)
    # NFKC does not fold them back: naive normalisation does not undo the evasion
    assert unicodedata.normalize("NFKC", raw) != unicodedata.normalize("NFKC", text)
    assert unicodedata.normalize("NFKC", raw).casefold() != text.casefold()


def test_leetspeak_uses_digits_and_symbols():
    out = perturb_text("kill kill kill kill", "leetspeak", random.Random(1), 1.0)
    assert set(out) & set("4@31!05$7")


def test_zero_width_inserts_invisible_characters_inside_words():
    text = "you should disappear forever"
    out = perturb_text(text, "zero_width", random.Random(2), 0.5)
    assert any(z in out for z in ZERO_WIDTH)
    stripped = out
    for z in ZERO_WIDTH:
        stripped = stripped.replace(z, "")
    assert stripped == text  # only invisible characters were added
    assert not out.startswith(ZERO_WIDTH) and not out.endswith(ZERO_WIDTH)


def test_intensity_scales_words_touched():
    text = " ".join(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"])
    low = perturb_text(text, "case", random.Random(0), 0.1)
    high = perturb_text(text, "case", random.Random(0), 1.0)
    changed = lambda out: sum(a != b for a, b in zip(text.split(), out.split()))  # noqa: E731
    assert changed(low) == 1
    assert changed(high) == 10
    assert len(eligible_words(text)) == 10


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="valid: leetspeak"):
        perturb_text("kill", "rot13", random.Random(0), 0.5)


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    records = _records()
    params = PerturbParams(seed=5, rate=0.5)
    a, _ = perturb_records(records, params)
    b, _ = perturb_records(list(reversed(records)), params)  # input order does not matter
    contract.write_records(tmp_path / "a.jsonl", a)
    contract.write_records(tmp_path / "b.jsonl", b)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()

    c, _ = perturb_records(records, PerturbParams(seed=6, rate=0.5))
    contract.write_records(tmp_path / "c.jsonl", c)
    assert (tmp_path / "c.jsonl").read_bytes() != (tmp_path / "a.jsonl").read_bytes()


def test_variants_keep_labels_group_and_point_to_parent():
    records = _records()
    by_id = {r.id: r for r in records}
    variants, _ = perturb_records(records, PerturbParams(seed=1, rate=1.0, variants_per_source=2))
    assert len({v.id for v in variants}) == len(variants) == 2 * len(records)
    assert not {v.id for v in variants} & set(by_id)
    for v in variants:
        src = by_id[v.metadata["parent_id"]]
        assert v.id.startswith(src.id + "~p")
        assert v.labels == src.labels
        assert v.group == src.group == v.metadata["group"]
        assert v.metadata["source"] == "perturbation"
        assert v.metadata["category"] == src.metadata["category"]
        assert v.metadata["perturbation"] in PERTURBATION_KINDS
        assert v.text != src.text and v.text.startswith(PREFIX)
    # two variants of one source use different kinds
    kinds = {}
    for v in variants:
        kinds.setdefault(v.metadata["parent_id"], set()).add(v.metadata["perturbation"])
    assert all(len(k) == 2 for k in kinds.values())


def test_group_falls_back_to_source_id():
    rec = Record(id="solo", text="I will find you", labels=make_labels(["threats"]), metadata={"source": "offline"})
    (v,), _ = perturb_records([rec], PerturbParams(rate=1.0))
    assert v.metadata["group"] == "solo" and v.group == "solo"


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.75, 1.0])
def test_rate_respected_and_stats_add_up(rate):
    records = _records(40)
    variants, stats = perturb_records(records, PerturbParams(seed=3, rate=rate, variants_per_source=2))
    assert stats["sources"] == round(rate * 40)
    assert stats["variants"] == len(variants) == 2 * stats["sources"]
    assert len({v.metadata["parent_id"] for v in variants}) == stats["sources"]
    assert sum(stats["by_kind"].values()) == len(variants)
    assert sum(stats["by_category"].values()) == len(variants)


def test_every_kind_represented_with_enough_sources():
    variants, stats = perturb_records(_records(30), PerturbParams(seed=9, rate=1.0))
    assert all(stats["by_kind"][k] >= 3 for k in PERTURBATION_KINDS)
    assert {v.metadata["perturbation"] for v in variants} == set(PERTURBATION_KINDS)


def test_kinds_restricted_by_params():
    variants, stats = perturb_records(_records(20), PerturbParams(rate=1.0, kinds=["homoglyph", "typo"]))
    assert {v.metadata["perturbation"] for v in variants} == {"homoglyph", "typo"}
    assert set(stats["by_kind"]) == {"homoglyph", "typo"}


def test_run_reads_positive_files_and_writes_atomically(tmp_path):
    pos = tmp_path / "positives"
    threats = [_record(i, "threats") for i in range(10)]
    harassment = [_record(i, "harassment") for i in range(10)]
    contract.write_records(pos / "threats.jsonl", threats)
    contract.write_records(pos / "harassment.jsonl", harassment)
    (pos / "_rejects.jsonl").write_text("not json at all\n", encoding="utf-8")  # ignored

    out = tmp_path / "out" / "perturbations.jsonl"
    stats = run(pos, out, PerturbParams(seed=2, rate=0.5))
    assert stats["sources"] == 10 and stats["variants"] == 10
    assert sum(stats["by_category"].values()) == 10
    assert set(stats["by_category"]) <= {"threats", "harassment"}
    json.dumps(stats)  # serialisable for reports

    back = contract.read_records(out).records
    assert len(back) == 10
    assert all(r.source == "perturbation" for r in back)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]

    again = tmp_path / "again.jsonl"
    run(pos, again, PerturbParams(seed=2, rate=0.5))
    assert again.read_bytes() == out.read_bytes()


def test_run_rejects_bad_positives(tmp_path):
    pos = tmp_path / "positives"
    pos.mkdir()
    (pos / "threats.jsonl").write_text('{"id": "a", "text": "kill"}\n', encoding="utf-8")
    with pytest.raises(ContractError, match="break the data contract"):
        run(pos, tmp_path / "out.jsonl", PerturbParams())


@pytest.mark.parametrize("make_dir", [False, True])
def test_missing_or_empty_positives_dir_is_a_clear_error(tmp_path, make_dir):
    pos = tmp_path / "positives"
    if make_dir:
        pos.mkdir()
        (pos / "_notes.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ContractError, match="run generate-positives first"):
        run(pos, tmp_path / "out.jsonl", PerturbParams())
    assert not (tmp_path / "out.jsonl").exists()


def test_duplicate_ids_across_files_are_refused(tmp_path):
    pos = tmp_path / "positives"
    contract.write_records(pos / "a.jsonl", [_record(1, "threats")])
    contract.write_records(pos / "b.jsonl", [_record(1, "threats")])
    with pytest.raises(ContractError, match="duplicate record id"):
        run(pos, tmp_path / "out.jsonl", PerturbParams(rate=1.0))
