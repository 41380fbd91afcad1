import json
from collections import Counter

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


# --------------------------------------------------------------------------- held-out real text

ALL_SPLITS = ("train", "val", "test", "real_test")
REAL_CYCLE = (["hate_speech"], ["profanity"], ["hate_speech", "profanity"], [])


def real_inputs(tmp_path, record_factory) -> Source:
    """Public real sets as ingest writes them: alpha (200, hate/profanity), beta (80, spam/ham) and
    gamma (60, scam only) sharing eval_group 'email', and two tiny sets of 2 and 1 records."""
    recs = []

    def add(key, n, labels_for, offset, **meta):
        for i in range(n):
            rid = f"{key}-{i}"
            recs.append(record_factory(rid, unique_text(offset + i, key), labels_for(i), source=f"external:{key}",
                                       surface="GENERAL", audience="GENERAL", **meta))

    add("alpha", 200, lambda i: REAL_CYCLE[i % 4], 1000)
    add("beta", 80, lambda i: ["spam"] if i % 2 else [], 2000, eval_group="email")
    add("gamma", 60, lambda i: ["scam_patterns"], 3000, eval_group="email")
    add("tiny", 2, lambda i: ["threats"], 4000)
    add("single", 1, lambda i: [], 5000)
    write_records(tmp_path / "in/external.jsonl", recs)
    return Source("external", (tmp_path / "in/external.jsonl",), 1)


def read_splits(folder):
    return {s: read_records(folder / f"{s}.jsonl").records for s in ALL_SPLITS}


def by_source(records):
    return Counter(r.source for r in records)


REAL_PARAMS = MergeParams(val_fraction=0.15, test_fraction=0.2, seed=3)  # real_test_fraction 0.25


@pytest.fixture
def merged_with_real(tmp_path, record_factory):
    sources = [real_inputs(tmp_path, record_factory), *build_inputs(tmp_path, record_factory)]
    stats = merge(sources, REAL_PARAMS, tmp_path / "s", tmp_path / "s/rejects.jsonl")
    return sources, stats, read_splits(tmp_path / "s")


def test_real_text_is_held_out_per_source_and_never_mixed_with_generated_text(merged_with_real):
    _, stats, splits = merged_with_real
    assert all(r.source.startswith("external:") for r in splits["real_test"])
    assert not [r.id for r in splits["test"] if r.source.startswith("external:")]
    owner = {}
    for s, rs in splits.items():
        for r in rs:
            assert owner.setdefault(r.group, s) == s, f"group {r.group} in {owner[r.group]} and {s}"
    assert stats["groups_across_splits"] == 0
    counts = {s: by_source(rs) for s, rs in splits.items()}
    total = {src: sum(counts[s][src] for s in ALL_SPLITS) for src in counts["real_test"]}
    assert total == {"external:alpha": 200, "external:beta": 80, "external:gamma": 60}
    # Iterative stratification hits 0.25 up to a few groups of slack: 0.241-0.259 on the real sets
    # (450-1,200 records), 0.235-0.27 for alpha over seeds 3-7. So +-0.03 for 200 records, +-0.05
    # (3-4 groups) for 60-80; the split is fixed by the seed, so this is not flaky.
    assert abs(counts["real_test"]["external:alpha"] / 200 - 0.25) <= 0.03
    assert abs(counts["real_test"]["external:beta"] / 80 - 0.25) <= 0.05
    assert abs(counts["real_test"]["external:gamma"] / 60 - 0.25) <= 0.05
    # Too small to hold out any (0.25 * 2 rounds to 0): train/val only, deterministically.
    assert counts["real_test"]["external:tiny"] == 0 and counts["real_test"]["external:single"] == 0
    assert counts["train"]["external:tiny"] + counts["val"]["external:tiny"] == 2
    assert counts["train"]["external:single"] == 1


def test_val_holds_real_text_in_the_proportion_train_does(merged_with_real):
    _, stats, splits = merged_with_real
    val_share = REAL_PARAMS.val_fraction / (1 - REAL_PARAMS.test_fraction)  # 0.1875 of what is not held out
    for src, n_rest in (("external:alpha", 150), ("external:beta", 60), ("external:gamma", 45)):  # 3/4 of each
        val = by_source(splits["val"])[src]
        train = by_source(splits["train"])[src]
        assert val + train + by_source(splits["real_test"])[src] == n_rest * 4 // 3
        # the same slack as above, on the non-held-out part: +-3 groups of 150 (0.02), +-3 of 45-60 (0.07)
        assert abs(val / (val + train) - val_share) <= (0.03 if n_rest > 100 else 0.07), src
    # Generated text is split train/val/test with the same val:train ratio, so real text's share of val
    # matches its share of train: within 0.04 (a few groups of slack on each side out of ~100-600 records).
    share = stats["real_text"]["share"]
    assert abs(share["val"] - share["train"]) <= 0.04
    assert share["test"] == 0.0 and share["real_test"] == 1.0


def test_each_category_of_a_real_source_is_spread_into_real_test(merged_with_real):
    _, stats, splits = merged_with_real
    held = stats["real_text"]["real_test"]
    assert held["external:alpha"]["per_category"].keys() == {"hate_speech", "profanity"}
    assert held["external:alpha"]["per_category"]["hate_speech"] == pytest.approx(25, abs=4)  # 100 positives
    assert held["external:alpha"]["no_label"] == pytest.approx(12, abs=4)  # 50 no-label records
    assert held["external:beta"]["per_category"]["spam"] == pytest.approx(10, abs=3)
    assert held["external:beta"]["no_label"] == pytest.approx(10, abs=3)
    assert held["external:beta"]["eval_group"] == ["email"] == held["external:gamma"]["eval_group"]
    assert held["external:alpha"]["eval_group"] == ["alpha"]
    # statistics cover real_test like any split; it need not hold every category (merge did not raise)
    assert stats["records"]["real_test"] == len(splits["real_test"])
    assert stats["per_category"]["csam"]["real_test"] == 0 and stats["per_category"]["csam"]["test"] > 0
    assert stats["per_source"]["real_test"] == dict(sorted(by_source(splits["real_test"]).items()))
    assert stats["real_text"]["per_source"]["external:alpha"]["real_test"] == held["external:alpha"]["records"]
    assert stats["real_text"]["leaks_to_train_val"] == 0


def test_the_real_split_is_deterministic_for_a_seed(tmp_path, record_factory):
    sources = [real_inputs(tmp_path, record_factory), *build_inputs(tmp_path, record_factory)]
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        merge(sources, REAL_PARAMS.model_copy(update={"seed": seed}), tmp_path / name, tmp_path / name / "r.jsonl")
    for s in ALL_SPLITS:
        assert (tmp_path / f"a/{s}.jsonl").read_bytes() == (tmp_path / f"b/{s}.jsonl").read_bytes()
    assert (tmp_path / "a/real_test.jsonl").read_bytes() != (tmp_path / "c/real_test.jsonl").read_bytes()


def test_a_near_duplicate_is_removed_before_the_split_and_a_mixed_group_is_split_as_usual(tmp_path, record_factory):
    sources = build_inputs(tmp_path, record_factory)
    base = ("i know where you live and i will find you after your shift at the station "
            "and you will regret every word you said about me")
    real = [record_factory(f"alpha-{i}", unique_text(1000 + i, "alpha"), REAL_CYCLE[i % 4], source="external:alpha")
            for i in range(40)]
    real += [record_factory("alpha-dup", base + " tonight", ["threats"], source="external:alpha"),
             record_factory("beta-dup", base + " tomorrow", ["threats"], source="external:beta")]
    reviewed = record_factory("inc-0", unique_text(7000, "reviewed"), ["harassment"], group="alpha-0")
    write_records(tmp_path / "in/external.jsonl", real)
    write_records(tmp_path / "in/incoming.jsonl", [reviewed])
    sources += [Source("external", (tmp_path / "in/external.jsonl",), 1),
                Source("incoming", (tmp_path / "in/incoming.jsonl",), 0)]
    stats = merge(sources, REAL_PARAMS, tmp_path / "s", tmp_path / "s/r.jsonl")
    splits = read_splits(tmp_path / "s")
    ids = {r.id: s for s, rs in splits.items() for r in rs}
    assert "alpha-dup" in ids and "beta-dup" not in ids  # one copy survives, wherever it lands
    assert stats["dedup"]["near_duplicates_removed"] >= 1
    # alpha-0 shares its group with a reviewed record: the group follows the usual split, both together
    assert ids["alpha-0"] == ids["inc-0"] and ids["alpha-0"] in ("train", "val", "test")


def test_real_test_is_written_empty_without_real_text(tmp_path, record_factory):
    stats = merge(build_inputs(tmp_path, record_factory), REAL_PARAMS, tmp_path / "s", tmp_path / "s/r.jsonl")
    assert (tmp_path / "s/real_test.jsonl").read_text() == ""
    assert stats["records"]["real_test"] == 0 and stats["real_text"]["real_test"] == {}


def test_records_sharing_a_5gram_with_the_behavioural_suite_never_reach_a_split(tmp_path, record_factory):
    from components.quality.behaviour import expand, load_suite, shares_ngram, suite_ngrams

    cases = expand(load_suite())
    leaked = [c for c in cases if len(c.plain.split()) >= 6][:3]
    sources = build_inputs(tmp_path, record_factory)
    reviewed = [record_factory(f"rev-{i}", f"reviewed by a moderator: {c.plain}", ["threats"], category="threats")
                for i, c in enumerate(leaked)]
    write_records(tmp_path / "in/incoming/reviews.jsonl", reviewed)
    sources.append(Source("incoming", jsonl_files(tmp_path / "in/incoming"), 0))
    stats = merge(sources, MergeParams(val_fraction=0.15, test_fraction=0.2, seed=3), tmp_path / "splits",
                  tmp_path / "splits/rejects.jsonl")
    assert stats["behaviour_suite_overlap_removed"]["total"] == len(leaked)
    grams = suite_ngrams()
    for name in ("train", "val", "test", "real_test"):
        for r in read_records(tmp_path / f"splits/{name}.jsonl").records:
            assert not r.id.startswith("rev-") and not shares_ngram(r.text, grams), (name, r.text)


def test_an_id_two_inputs_share_is_a_reject_of_the_lower_priority_copy(tmp_path, record_factory):
    """Ids were unique per file only: the same id in two files crashed the merge's near-duplicate index
    ("The given key already exists") when both copies had the same labels, and otherwise put the id
    twice into the splits. Now the first copy read (the higher-priority source) wins, the other is a reject."""
    sources = build_inputs(tmp_path, record_factory)
    write_records(tmp_path / "in/incoming/a.jsonl", [record_factory("same", unique_text(800, "rev"), ["threats"])])
    write_records(tmp_path / "in/incoming/b.jsonl", [record_factory("same", unique_text(801, "rev"), ["threats"]),
                                                     record_factory("pos-spam-1", unique_text(802, "rev"), [])])
    incoming = Source("incoming", jsonl_files(tmp_path / "in/incoming"), 0)
    out = tmp_path / "s"
    stats = merge([incoming, *sources], MergeParams(val_fraction=0.15, test_fraction=0.2, max_reject_fraction=0.05),
                  out, out / "rejects.jsonl")
    merged = [r for s in ("train", "val", "test") for r in read_records(out / f"{s}.jsonl").records]
    ids = Counter(r.id for r in merged)
    assert ids["same"] == 1 and ids["pos-spam-1"] == 1 and max(ids.values()) == 1
    by_id = {r.id: r for r in merged}
    assert by_id["same"].text.endswith(unique_text(800, "rev")) and by_id["pos-spam-1"].labels["spam"] == 0
    rejects = {(r["file"].rsplit("/", 1)[-1], r["line"]): r["reason"]
               for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())}
    spam_line = 1 + [json.loads(ln)["id"] for ln in (tmp_path / "in/positives/all.jsonl").read_text().splitlines()
                     ].index("pos-spam-1")
    assert stats["inputs"]["rejects"] == 2
    assert rejects == {("b.jsonl", 1): f"duplicate id 'same' (first on {tmp_path / 'in/incoming/a.jsonl'} line 1)",
                       ("all.jsonl", spam_line): f"duplicate id 'pos-spam-1' (first on {tmp_path / 'in/incoming/b.jsonl'} line 2)"}
