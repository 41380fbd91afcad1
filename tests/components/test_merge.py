import json

import pytest

from components.core.contract import ContractError, read_records, write_records
from components.merge import Source, SplitError, deduplicate, jsonl_files, merge
from components.core.params import MergeParams
from components.core.taxonomy import LABELS

WORDS = "amber basil cobalt dune ember fjord garnet harbor indigo juniper kelp lumen marble nectar onyx".split()


def unique_text(i: int, category: str) -> str:
    # Distinct enough that no two count as near-duplicates.
    w = [WORDS[(i * 7 + k * 3) % len(WORDS)] + str(i * 13 + k) for k in range(6)]
    return f"{category} case {' '.join(w)}"


def build_inputs(tmp_path, record_factory, per_category=20, negatives=60):
    pos, pert = [], []
    for c in LABELS:
        for i in range(per_category):
            rid = f"pos-{c}-{i}"
            r = record_factory(rid, unique_text(i, c), [c], category=c, audience="GENERAL", surface="MESSAGE")
            pos.append(r)
            if i % 3 == 0:  # a perturbation shares its source's group
                pert.append(record_factory(f"{rid}~p0", r.text.upper() + " !!", [c], category=c, group=rid,
                                           source="perturbation", parent_id=rid, surface="MESSAGE"))
    neg = [record_factory(f"neg-{i}", unique_text(i, "benign"), [], surface="REVIEW") for i in range(negatives)]
    write_records(tmp_path / "in/positives/all.jsonl", pos)
    write_records(tmp_path / "in/negatives/all.jsonl", neg)
    write_records(tmp_path / "in/perturbations.jsonl", pert)
    return [
        Source("positives", jsonl_files(tmp_path / "in/positives"), 2),
        Source("negatives", jsonl_files(tmp_path / "in/negatives"), 2),
        Source("perturbations", jsonl_files(tmp_path / "in/perturbations.jsonl"), 3),
    ]


def test_split_keeps_groups_together_and_every_category_everywhere(tmp_path, record_factory):
    sources = build_inputs(tmp_path, record_factory)
    params = MergeParams(val_fraction=0.15, test_fraction=0.2, seed=3)
    stats = merge(sources, params, tmp_path / "splits", tmp_path / "splits/rejects.jsonl")
    splits = {s: read_records(tmp_path / f"splits/{s}.jsonl").records for s in ("train", "val", "test")}
    owner = {}
    for s, rs in splits.items():
        for r in rs:
            assert owner.setdefault(r.group, s) == s, f"group {r.group} in {owner[r.group]} and {s}"
    assert stats["groups_across_splits"] == 0
    for c in LABELS:
        for s in splits:
            assert stats["per_category"][c][s] > 0
    # every perturbation sits in the same split as its source
    for s, rs in splits.items():
        ids = {r.id for r in rs}
        assert all(r.metadata["parent_id"] in ids for r in rs if r.source == "perturbation")
    total = sum(len(rs) for rs in splits.values())
    assert total == 18 * 20 + 60 + len([1 for c in LABELS for i in range(20) if i % 3 == 0])
    assert 0.12 < len(splits["test"]) / total < 0.28
    assert all(r.text.startswith(("[GENERAL][MESSAGE] ", "[GENERAL][REVIEW] ")) for rs in splits.values() for r in rs)


def test_split_is_deterministic_for_a_seed(tmp_path, record_factory):
    sources = build_inputs(tmp_path, record_factory)
    params = MergeParams(val_fraction=0.15, test_fraction=0.2, seed=5)
    merge(sources, params, tmp_path / "a", tmp_path / "a/rej.jsonl")
    merge(sources, params, tmp_path / "b", tmp_path / "b/rej.jsonl")
    for s in ("train", "val", "test"):
        assert (tmp_path / f"a/{s}.jsonl").read_bytes() == (tmp_path / f"b/{s}.jsonl").read_bytes()


def test_category_missing_from_a_split_fails_with_the_fix(tmp_path, record_factory):
    sources = build_inputs(tmp_path, record_factory, per_category=2, negatives=10)
    with pytest.raises(SplitError, match="absent from a split.*raise"):
        merge(sources, MergeParams(), tmp_path / "s", tmp_path / "s/rej.jsonl")


def test_exact_duplicates_keep_the_higher_priority_copy_and_count_conflicts(record_factory):
    reviewed = record_factory("inc-1", "[GENERAL][MESSAGE] Meet me at the dock", ["threats"])
    generated = record_factory("gen-1", "[GENERAL][MESSAGE] meet me at the dock!!", [])
    other_context = record_factory("gen-2", "[ADULT][MESSAGE] meet me at the dock", [])
    kept, stats = deduplicate([reviewed, generated, other_context], 0.85)
    assert [r.id for r in kept] == ["inc-1", "gen-2"]
    assert stats == {"exact_duplicates_removed": 1, "label_conflicts": 1}


def test_near_duplicates_removed_across_groups_only_with_same_labels(record_factory):
    base = ("[GENERAL][MESSAGE] i know where you live and i will find you after your shift at the station "
            "and you will regret every word you said about me tonight")
    a = record_factory("a", base, ["threats"])
    b = record_factory("b", base[:-7] + "tomorrow", ["threats"])           # other group, same labels: removed
    c = record_factory("c", base[:-7] + "friday", ["threats"], group="a")  # same group (a variant): kept
    d = record_factory("d", base[:-7] + "sunday", [])                      # other labels: a contrast pair, kept
    e = record_factory("e", base.upper(), ["threats"], group="a")          # exact copy in the same group: kept
    kept, stats = deduplicate([a, b, c, d, e], 0.85)
    assert [r.id for r in kept] == ["a", "c", "d", "e"]
    assert stats["near_duplicates_removed"] == 1


def test_enrichment_adds_contact_info_and_rejects_are_reported(tmp_path, record_factory):
    sources = build_inputs(tmp_path, record_factory)
    extra = [record_factory(f"x{i}", f"{unique_text(900 + i, 'x')} text me on 415-283-19{i:02d}", ["spam"]) for i in range(5)]
    write_records(tmp_path / "in/extra.jsonl", extra)
    with open(tmp_path / "in/extra.jsonl", "a") as fh:
        fh.write("{broken\n")
    params = MergeParams(val_fraction=0.15, test_fraction=0.2, max_reject_fraction=0.05)
    stats = merge(sources + [Source("extra", (tmp_path / "in/extra.jsonl",), 1)], params,
                  tmp_path / "s", tmp_path / "s/rejects.jsonl")
    assert stats["enrichment"]["contact_details"] >= 5
    assert stats["enrichment"]["contact_details@offline"] >= 5
    merged = {r.id: r for s in ("train", "val", "test") for r in read_records(tmp_path / f"s/{s}.jsonl").records}
    assert all(merged[f"x{i}"].labels["contact_info"] == 1 and merged[f"x{i}"].labels["spam"] == 1 for i in range(5))
    assert stats["inputs"]["rejects"] == 1
    assert json.loads((tmp_path / "s/rejects.jsonl").read_text())["reason"].startswith("malformed JSON")
    with pytest.raises(ContractError, match="break the data contract"):
        merge(sources + [Source("extra", (tmp_path / "in/extra.jsonl",), 1)], MergeParams(max_reject_fraction=0.0),
              tmp_path / "s2", tmp_path / "s2/rejects.jsonl")


def test_no_inputs_says_what_to_run(tmp_path):
    with pytest.raises(ContractError, match="run the generate steps first"):
        merge([], MergeParams(), tmp_path / "s", tmp_path / "s/r.jsonl")


@pytest.mark.parametrize("bad_text, reason", [
    ("\ud83d", "not valid UTF-8"), ("\u200b\u200b", "no visible character"), (None, "duplicate key"),
    (b"caf\xe9", "not UTF-8"),
], ids=["lone-surrogate", "zero-width-only", "duplicate-label", "latin-1-bytes"])
def test_a_bad_reviewed_line_in_incoming_is_rejected_and_the_good_ones_kept(tmp_path, record_factory, bad_text,
                                                                            reason):
    """One bad line dropped into data/incoming/ must not break the nightly merge, nor vanish."""
    from components.merge import pipeline_sources
    from components.core.params import Paths

    sources = build_inputs(tmp_path, record_factory)
    incoming = tmp_path / "incoming"
    reviewed = [record_factory(f"inc-{i}", unique_text(700 + i, "reviewed"), ["threats"]) for i in range(3)]
    write_records(incoming / "review.jsonl", reviewed)
    good_line = (incoming / "review.jsonl").read_bytes().splitlines()[0]
    if bad_text is None:
        bad_line = good_line.replace(b'"threats": 1', b'"threats": 1, "threats": 0').replace(b"inc-0", b"inc-bad")
    elif isinstance(bad_text, bytes):
        bad_line = json.dumps({"id": "inc-bad", "text": "x"}).encode().replace(b'"x"', b'"' + bad_text + b'"')
    else:
        bad_line = json.dumps({**json.loads(good_line), "id": "inc-bad", "text": bad_text}).encode()
    lines = (incoming / "review.jsonl").read_bytes().splitlines()
    (incoming / "review.jsonl").write_bytes(b"\n".join([lines[0], bad_line, *lines[1:]]) + b"\n")
    [source] = [s for s in pipeline_sources(Paths(incoming=str(incoming)), tmp_path) if s.name == "incoming"]
    out = tmp_path / "splits"
    stats = merge([source, *sources], MergeParams(val_fraction=0.15, test_fraction=0.2), out, out / "rejects.jsonl")
    merged = {r.id for s in ("train", "val", "test") for r in read_records(out / f"{s}.jsonl").records}
    assert {"inc-0", "inc-1", "inc-2"} <= merged and "inc-bad" not in merged
    assert stats["inputs"]["rejects"] == 1
    [saved] = [json.loads(ln) for ln in (out / "rejects.jsonl").read_text("utf-8").splitlines()]
    assert saved["file"] == str(incoming / "review.jsonl") and saved["line"] == 2 and reason in saved["reason"]
