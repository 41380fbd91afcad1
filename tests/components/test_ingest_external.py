"""Ingest of the public labelled sets: normalisation, the mapping table, caps, missing data, rejects.

Real code on real data: small samples (the first ~60 rows of each real file, plus the first
rows of any label value those lack) are copied from ../shared/datasets into a tmp root; where
that folder is absent, the committed copies under data/external/raw are used and the other
sets are skipped.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from components.core.contract import TooManyRejectsError, validate_record
from components.ingest_external import (
    _allocate,
    ingest,
    load_source,
    load_sources,
    normalize_social_text,
    run,
)
from components.core.params import IngestParams
from components.core.taxonomy import LABELS, split_prefix

PROJECT = Path(__file__).resolve().parents[2]
SHARED = (PROJECT / ".." / "shared" / "datasets").resolve()
COMMITTED = PROJECT / "data" / "external" / "raw"
HEAD_ROWS = 60
EXTRA_PER_VALUE = 3

# What the table must say, written out independently of it (README + project brief).
EXPECTED_MAPPING = {
    "davidson": {"0": ["hate_speech"], "1": ["profanity"], "2": []},
    "hatexplain": {"0": [], "1": ["hate_speech"], "2": ["profanity"]},  # "3" dropped
    "tweeteval_hate": {"0": [], "1": ["hate_speech"]},
    "tweeteval_offensive": {"0": [], "1": ["profanity"]},
    "sms_spam": {"ham": [], "spam": ["spam"]},
    "cyberbullying": {
        "age": ["harassment"],
        "other_cyberbullying": ["harassment"],
        "gender": ["hate_speech", "harassment"],
        "ethnicity": ["hate_speech", "harassment"],
        "religion": ["hate_speech", "harassment"],
        "not_cyberbullying": [],
    },
    "sdcnl": {"0": [], "1": ["self_harm"]},
    "threatgram": {"0": [], "1": [], "2": ["threats"]},  # 1 (jail/impeach demands): a hard negative
    "kaggle_insults": {"0": [], "1": ["harassment"]},
    "cssrs": {"Ideation": ["self_harm"], "Behavior": ["self_harm"], "Attempt": ["self_harm"], "Supportive": []},
    "suicidal_tweets": {"Potential Suicide post": ["self_harm"], "Not Suicide post": []},
    "phishing_pot": {"phishing": ["scam_patterns"]},
    "enron_spam": {"ham": [], "spam": ["spam"]},
}
# Multi-label sets: one 0/1 column per class, a row's labels = the union of its 1-columns.
EXPECTED_COLUMNS = {"gab_hate_corpus": {"hd": ["hate_speech"], "cv": ["threats"], "vo": ["profanity"]}}
# Composite keys (category|subcategory); the category alone is the fallback.
EXPECTED_COMPOSITE = {
    "spamhunter": {
        "Fraud": ["scam_patterns"],
        "Fraud|account alert": ["scam_patterns", "impersonation"],
        "Fraud|delivery": ["scam_patterns", "impersonation"],
        "Fraud|tax refund": ["scam_patterns", "impersonation"],
        "Fraud|credit/debit card": ["scam_patterns", "impersonation"],
        "Ads": ["spam"],
    },
}
ALL_KEYS = {*EXPECTED_MAPPING, *EXPECTED_COLUMNS, *EXPECTED_COMPOSITE}
DROPPED = {"hatexplain": "3", "cssrs": "Indicator"}  # raw values left out of the mapping


def expected_labels(key: str, original: str) -> list[str]:
    """What the agreed mapping gives a row with this recorded original label."""
    if key in EXPECTED_COLUMNS:
        cols = [] if original == "none" else original.split("+")
        out: list[str] = []
        for col in EXPECTED_COLUMNS[key]:
            out += [lab for lab in EXPECTED_COLUMNS[key][col] if col in cols and lab not in out]
        return out
    if key in EXPECTED_COMPOSITE:
        table = EXPECTED_COMPOSITE[key]
        return table.get(original, table[original.split("|")[0]])
    return EXPECTED_MAPPING[key][original]


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "strip", "expected"),
    [
        # mojibake (cyberbullying set): UTF-8 read as Latin-1
        ("Weâ\x80\x99ve shown my kids", True, "We've shown my kids"),
        ("Weâ€™ve shown my kids", True, "We've shown my kids"),
        # HTML entities, including double-escaped ones
        ("salt &amp; pepper", True, "salt & pepper"),
        ("salt &amp;amp; pepper &lt;3", True, "salt & pepper <3"),
        ("lol &#128514;", True, "lol 😂"),
        # retweet markers: "RT @name:" anywhere, a leading bare "RT"
        ("RT @mayasolovely: As a woman you", True, "As a woman you"),
        ("!!! RT @mayasolovely: As a woman", True, "!!! As a woman"),
        ("RT: big news", True, "big news"),
        ("RT big news", True, "big news"),
        ("RT-KIng Pro Video Club", False, "RT-KIng Pro Video Club"),  # SMS brand, not a marker
        # mentions -> @user; e-mail addresses untouched
        ("@C_G_Anderson @viva_based she look", True, "@user @user she look"),
        (".@Someone you lied", True, ".@user you lied"),
        ("mail info@ringtoneking.co.uk now", False, "mail info@ringtoneking.co.uk now"),
        # URLs: stripped for tweets, kept for SMS
        ("look at this http://t.co/xUCcwoetmn lol", True, "look at this lol"),
        ("see https://bit.ly/30bj30x and www.example.com/x", True, "see and"),
        ("see https://bit.ly/30bj30x and www.example.com/x", False, "see https://bit.ly/30bj30x and www.example.com/x"),
        ("my [post](https://www.reddit.com/r/x/?a=1&amp;b=2) here", True, "my post here"),
        ("call 08452810075 or www.ringtoneking.co.uk!", False, "call 08452810075 or www.ringtoneking.co.uk!"),
        # whitespace
        ("  a\n\n b\t c  ", True, "a b c"),
        ("RT @x: http://t.co/abc", True, ""),
    ],
)
def test_normalize_social_text(raw, strip, expected):
    assert normalize_social_text(raw, strip_urls=strip) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "http://t.co/x RT big news",  # URL removal exposes a leading RT: still one pass for the caller
        "RT RT @a: RT @b: hi @c &amp;amp; http://t.co/q",
        'Weâ\x80\x99ve "@T_Madison_x: The shit just blows me" &#57361; &amp; RT @x',
        "  .@user   @user: yes  ",
    ],
)
@pytest.mark.parametrize("strip", [True, False])
def test_normalize_is_idempotent(raw, strip):
    once = normalize_social_text(raw, strip_urls=strip)
    assert normalize_social_text(once, strip_urls=strip) == once
    assert "RT @" not in once


def test_private_use_emoji_codes_are_dropped():
    # Davidson carries old carrier emoji as private-use code points (&#57361;): they render as nothing.
    assert normalize_social_text("ya &#57361; ok", strip_urls=True) == "ya ok"


# --------------------------------------------------------------------------- the table


def test_table_matches_the_agreed_mapping():
    table = load_sources()
    assert set(table) == ALL_KEYS
    assert "liar" not in table and all(spec["folder"] != "liar" for spec in table.values())
    for key, expected in {**EXPECTED_MAPPING, **EXPECTED_COMPOSITE}.items():
        assert table[key]["mapping"] == expected, key
    for key, expected in EXPECTED_COLUMNS.items():
        assert table[key]["label_columns"] == expected and "mapping" not in table[key], key
    assert table["spamhunter"]["label"] == ["category", "subcategory"]
    # e-mail: subject + body, HTML stripped, URLs kept (the link is the scam), judged together
    for key in ("phishing_pot", "enron_spam"):
        spec = table[key]
        assert spec["text"] == ["subject", "body"] and spec["strip_html"] is True and spec["strip_urls"] is False
        assert spec["eval_group"] == "email" and spec["surface"] == "MESSAGE"
    others = ALL_KEYS - {"phishing_pot", "enron_spam"}
    assert all(table[k]["eval_group"] == k and table[k]["strip_html"] is False for k in others)
    new = ("gab_hate_corpus", "threatgram", "kaggle_insults", "cssrs", "suicidal_tweets", "phishing_pot",
           "enron_spam", "spamhunter")
    assert all(table[k]["commit"] is False for k in new)  # none has a verified open licence
    assert table["sms_spam"]["surface"] == "MESSAGE" and table["sms_spam"]["strip_urls"] is False
    for key in ("davidson", "hatexplain", "tweeteval_hate", "tweeteval_offensive", "cyberbullying"):
        assert table[key]["strip_urls"] is True, key
    assert table["sdcnl"]["text"] == ["title", "selftext"]


def test_committed_copies_match_the_licences():
    table = load_sources()
    for key, spec in table.items():
        folder = COMMITTED / spec["folder"]
        if spec.get("commit"):
            for name in spec["commit_files"]:
                assert (folder / name).is_file(), f"{key}: {folder / name} missing"
        else:
            assert not folder.exists(), f"{key} ({spec['licence']}) must not be committed"
    # MBIB's GPL code stays out
    assert not (COMMITTED / "hatexplain_mbib" / "process.py").exists()


# --------------------------------------------------------------------------- real samples


def _sample_delimited(src: Path, dst: Path, spec: dict) -> None:
    fmt = spec["format"]
    if fmt == "tsv":  # no quoting in SMSSpamCollection: copy raw lines
        with open(src, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        header, body = lines[0], [ln for ln in lines[1:] if ln]
        label_at = header.split("\t").index(spec["label"])
        value = lambda ln: ln.split("\t")[label_at]  # noqa: E731
        rows = body
    else:
        with open(src, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            rows = list(reader)
        if spec.get("label_columns"):  # recorded as the 1-columns joined with "+"
            at = {c: header.index(c) for c in spec["label_columns"]}
            value = lambda r: "+".join(c for c, i in at.items() if r[i] == "1") or "none"  # noqa: E731
        else:
            cols = [spec["label"]] if isinstance(spec["label"], str) else spec["label"]
            at_list = [header.index(c) for c in cols]
            value = lambda r: "|".join(r[i].strip() for i in at_list)  # noqa: E731
    picked = list(range(min(HEAD_ROWS, len(rows))))
    seen = {value(rows[i]) for i in picked}
    if spec.get("label_columns") or spec["key"] in EXPECTED_COMPOSITE:
        wanted = {value(r) for r in rows}  # every combination / subcategory present
    else:
        wanted = set(spec["mapping"]) | ({DROPPED[spec["key"]]} if spec["key"] in DROPPED else set())
    extra: Counter = Counter()
    for i, row in enumerate(rows):
        v = value(row)
        if v in wanted and v not in seen and extra[v] < EXTRA_PER_VALUE:
            picked.append(i)
            extra[v] += 1
    picked.sort()
    if fmt == "tsv":
        dst.write_text("\n".join([header, *(rows[i] for i in picked)]) + "\n", "utf-8")
    else:
        with open(dst, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows[i] for i in picked)


def _sample_paired(src_folder: Path, dst_folder: Path, spec: dict) -> None:
    for pair in spec["files"]:
        for name in (pair["text"], pair["labels"]):
            lines = (src_folder / name).read_text("utf-8").split("\n")[:HEAD_ROWS]
            (dst_folder / name).write_text("\n".join(lines) + "\n", "utf-8")


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> tuple[Path, set[str]]:
    """A root holding small real samples of every set available here; returns (root, keys)."""
    root = tmp_path_factory.mktemp("ext")
    present = set()
    for key, spec in load_sources().items():
        src = SHARED / spec["folder"]
        if not src.is_dir():
            src = COMMITTED / spec["folder"]
        if not src.is_dir():
            continue
        dst = root / spec["folder"]
        dst.mkdir()
        if spec["format"] == "paired":
            _sample_paired(src, dst, spec)
        else:
            for name in spec["files"]:
                _sample_delimited(src / name, dst / name, spec)
        present.add(key)
    assert present, "neither ../shared/datasets nor data/external/raw holds any set"
    return root, present


@pytest.fixture(scope="module")
def ingested(sample_root):
    root, present = sample_root
    records, rejects, stats = ingest(IngestParams(roots=[str(root)]), PROJECT)
    return records, rejects, stats, present


def _need(present: set[str], key: str) -> None:
    if key not in present:
        pytest.skip(f"{key} not available (no ../shared/datasets)")


def _by_text(records, key: str, fragment: str):
    hits = [r for r in records if r.source == f"external:{key}" and fragment in r.text]
    assert len(hits) == 1, f"{key}: {len(hits)} records contain {fragment!r}"
    return hits[0]


def test_every_record_follows_the_contract_and_the_table(ingested):
    records, rejects, stats, present = ingested
    assert not rejects
    assert set(stats["sources"]) == present
    assert sorted(stats["missing"]) == sorted(ALL_KEYS - present)
    assert len({r.id for r in records}) == len(records)
    table = load_sources()
    surfaces = {k: s["surface"] for k, s in table.items()}
    for rec in records:
        validate_record(rec.to_dict())
        key = rec.source.removeprefix("external:")
        expected = expected_labels(key, rec.metadata["original_label"])
        assert sorted(rec.positive_labels()) == sorted(expected), rec.id
        assert rec.metadata["category"] == (expected[0] if expected else None)
        assert rec.metadata["group"] == rec.id and rec.id.startswith(f"{key}-")
        assert rec.metadata["audience"] == "GENERAL"
        assert rec.metadata["surface"] == surfaces[key]
        assert rec.metadata["eval_group"] == table[key]["eval_group"]
        assert rec.text and len(rec.text) <= IngestParams().max_chars
        assert split_prefix(rec.text)[0] is None and "RT @" not in rec.text  # "[Bank] alert" subjects are fine
    for key, s in stats["sources"].items():
        assert s["kept"] == sum(1 for r in records if r.source == f"external:{key}")
        assert s["rows_read"] == s["kept"] + s["dropped_total"] + s["rejected"]
        if key in EXPECTED_MAPPING:
            assert set(s["original_labels"]) == set(EXPECTED_MAPPING[key]), key  # samples cover every value
        else:  # every label the table can give shows up
            table_labels = {lab for labs in {**EXPECTED_COLUMNS, **EXPECTED_COMPOSITE}[key].values() for lab in labs}
            assert set(s["labels"]) == table_labels, key
    if "cssrs" in present:
        assert stats["sources"]["cssrs"]["dropped"] == {"Indicator": EXTRA_PER_VALUE}
    assert stats["totals"]["kept"] == len(records)


def test_hatexplain_undecided_is_dropped_and_counted(ingested):
    records, _, stats, present = ingested
    _need(present, "hatexplain")
    s = stats["sources"]["hatexplain"]
    assert s["dropped"] == {"3": EXTRA_PER_VALUE}
    assert not [r for r in records if r.metadata["original_label"] == "3"]
    assert not [r for r in records if "nigger here understands what real issues" in r.text]


def test_known_rows(ingested):
    records, _, _, present = ingested
    labels = lambda r: r.positive_labels()  # noqa: E731
    if "davidson" in present:
        first_hate = _by_text(records, "davidson", "queer")  # row 85, class 0
        assert first_hate.text == '"@user: @user @user queer" gaywad'
        assert labels(first_hate) == ["hate_speech"]
        assert first_hate.metadata["original_label"] == "0"
        assert first_hate.metadata["category"] == "hate_speech"
        row0 = _by_text(records, "davidson", "As a woman you shouldn't complain")
        assert row0.id == "davidson-0" and labels(row0) == []
        assert row0.text.startswith("!!! As a woman") and "& as a man" in row0.text
        assert labels(_by_text(records, "davidson", "boy dats cold")) == ["profanity"]
    if "hatexplain" in present:
        assert labels(_by_text(records, "hatexplain", "ching chong")) == ["hate_speech"]
        assert labels(_by_text(records, "hatexplain", "im getting my baby them white 9")) == []
    if "tweeteval_hate" in present:
        r = _by_text(records, "tweeteval_hate", "A woman who you fucked multiple times")
        assert labels(r) == ["hate_speech"] and r.id == "tweeteval_hate-1"
        # val rows continue the row numbering after the 60 sampled train rows
        v = _by_text(records, "tweeteval_hate", "After arriving in the EU refugees make protest")
        assert v.id == f"tweeteval_hate-{HEAD_ROWS + 1}" and labels(v) == []
    if "tweeteval_offensive" in present:
        r = _by_text(records, "tweeteval_offensive", "Eight years the republicans denied")
        assert labels(r) == ["profanity"]
    if "sms_spam" in present:
        spam = _by_text(records, "sms_spam", "Free entry in 2 a wkly comp")
        assert labels(spam) == ["spam"] and spam.metadata["surface"] == "MESSAGE"
        assert "08452810075" in spam.text and "T&C's" in spam.text
        assert labels(_by_text(records, "sms_spam", "Go until jurong point")) == []
    if "cyberbullying" in present:
        r = _by_text(records, "cyberbullying", "shown my kids a lot of #80smovies")
        assert r.text.startswith("We've shown my kids") and "â" not in r.text
        assert labels(r) == ["harassment"]
        g = _by_text(records, "cyberbullying", "4:34 tells women that men are superior")
        assert g.text.startswith("@user @user @user @user @user And 4:34")
        assert labels(g) == ["hate_speech", "harassment"]
        assert labels(_by_text(records, "cyberbullying", "what I want to wear#ugh")) == []
    if "sdcnl" in present:
        r = _by_text(records, "sdcnl", "feeling so overwhelmed and hopeless")
        assert r.text.startswith("feeling so overwhelmed and hopeless i have been so depressed")
        assert labels(r) == ["self_harm"] and r.id == "sdcnl-1"
        neg = _by_text(records, "sdcnl", "Need help Hi I don't really know")
        assert labels(neg) == [] and neg.metadata["original_label"] == "0"
        assert "\n" not in neg.text


def test_load_source_rows_in_file_order(sample_root):
    root, present = sample_root
    table = load_sources()
    _need(present, "sms_spam")
    rows = load_source(table["sms_spam"], root / "sms_spam")
    assert rows[0] == ("Go until jurong point, crazy.. Available only in bugis n great world la e buffet... "
                       "Cine there got amore wat...", "ham")
    assert rows[2][1] == "spam" and rows[2][0].startswith("Free entry in 2 a wkly comp")
    _need(present, "tweeteval_hate")
    rows = load_source(table["tweeteval_hate"], root / "tweeteval_hate")
    assert len(rows) == 2 * HEAD_ROWS and rows[1][1] == "1"


# --------------------------------------------------------------------------- caps


def test_allocate_is_balanced_and_fills_leftovers():
    assert _allocate({"a": 100, "b": 100, "c": 100}, 9) == {"a": 3, "b": 3, "c": 3}
    assert _allocate({"a": 2, "b": 100, "c": 3}, 12) == {"a": 2, "b": 7, "c": 3}
    assert _allocate({"a": 100, "b": 9, "c": 3}, 20) == {"a": 9, "b": 8, "c": 3}
    assert sum(_allocate({"a": 100, "b": 100, "c": 100}, 10).values()) == 10
    assert _allocate({"a": 2, "b": 3}, 50) == {"a": 2, "b": 3}
    assert _allocate({"a": 5, "b": 5}, 0) == {"a": 0, "b": 0}


def test_caps_are_balanced_and_deterministic(sample_root):
    root, present = sample_root
    _need(present, "davidson")
    caps = {"davidson": 12, "tweeteval_hate": 10}
    params = IngestParams(roots=[str(root)], caps=caps, seed=7)
    records, _, stats = ingest(params, PROJECT)
    by_src = Counter(r.source for r in records)
    assert by_src["external:davidson"] == 12
    dav = Counter(r.metadata["original_label"] for r in records if r.source == "external:davidson")
    # sample: 58 offensive, 2 neither in the first 60 rows, plus 3 hate rows
    assert dav == {"0": 3, "2": 2, "1": 7}
    if "tweeteval_hate" in present:  # 28 hate / 32 not in the first 60 train rows, 60 val rows
        hate = Counter(r.metadata["original_label"] for r in records if r.source == "external:tweeteval_hate")
        assert hate == {"0": 5, "1": 5}
    assert stats["sources"]["davidson"]["cap"] == 12 and stats["sources"]["davidson"]["eligible"] > 12
    # uncapped sources keep everything
    assert stats["sources"]["davidson"]["kept"] == 12
    if "sms_spam" in present:
        assert stats["sources"]["sms_spam"]["kept"] == stats["sources"]["sms_spam"]["eligible"]

    again, _, _ = ingest(params, PROJECT)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in records]
    other, _, _ = ingest(IngestParams(roots=[str(root)], caps=caps, seed=8), PROJECT)
    assert [r.id for r in other] != [r.id for r in records]
    # kept records stay in file order
    ids = [int(r.id.rsplit("-", 1)[1]) for r in records if r.source == "external:davidson"]
    assert ids == sorted(ids)


def test_unknown_cap_key_is_an_error(sample_root):
    root, _ = sample_root
    with pytest.raises(ValueError, match="unknown source"):
        ingest(IngestParams(roots=[str(root)], caps={"davidsen": 5}), PROJECT)


# --------------------------------------------------------------------------- missing data, rejects


def test_missing_roots_give_an_empty_output(tmp_path, caplog):
    out, rej = tmp_path / "out" / "ingested.jsonl", tmp_path / "out" / "rejects.jsonl"
    params = IngestParams(roots=[str(tmp_path / "nowhere"), "no/such/root"])
    with caplog.at_level(logging.WARNING, logger="components.ingest_external"):
        stats = run(params, tmp_path, out, rej)
    assert out.exists() and out.read_text() == ""
    assert rej.exists() and rej.read_text() == ""
    assert sorted(stats["missing"]) == sorted(ALL_KEYS)
    assert stats["sources"] == {} and stats["totals"]["kept"] == 0
    assert str(tmp_path / "no" / "such" / "root") in stats["roots_searched"]
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "nowhere" in warning and "continuing without real data" in warning


def _davidson_with_empty_row(root: Path) -> None:
    folder = root / "davidson"
    folder.mkdir(parents=True)
    with open(folder / "labeled_data.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "count", "hate_speech", "offensive_language", "neither", "class", "tweet"])
        w.writerow([0, 3, 0, 0, 3, 2, "a perfectly normal tweet"])
        w.writerow([1, 3, 0, 3, 0, 1, "RT @someone: http://t.co/abc"])  # nothing left after normalising
        w.writerow([2, 3, 0, 3, 0, 1, "two\nlines &amp; more"])
        w.writerow([3, 3, 0, 0, 3, 7, "a class that does not exist"])


def test_empty_text_after_normalisation_is_rejected(tmp_path):
    _davidson_with_empty_row(tmp_path / "root")
    out, rej = tmp_path / "ingested.jsonl", tmp_path / "rejects.jsonl"
    params = IngestParams(roots=[str(tmp_path / "root")], max_reject_fraction=0.5)
    stats = run(params, tmp_path, out, rej)
    s = stats["sources"]["davidson"]
    assert (s["rows_read"], s["kept"], s["rejected"], s["dropped"]) == (4, 2, 1, {"7": 1})
    rejects = [json.loads(ln) for ln in rej.read_text().splitlines()]
    assert len(rejects) == 1
    assert rejects[0]["line"] == 3 and rejects[0]["file"].endswith("labeled_data.csv")
    assert "empty after normalisation" in rejects[0]["reason"] and "davidson row 1" in rejects[0]["reason"]
    written = [validate_record(json.loads(ln)) for ln in out.read_text().splitlines()]
    assert [r.id for r in written] == ["davidson-0", "davidson-2"]
    assert written[1].text == "two lines & more" and written[1].labels["profanity"] == 1
    assert all(set(r.labels) == set(LABELS) for r in written)


def test_too_many_rejects_names_the_source(tmp_path):
    _davidson_with_empty_row(tmp_path / "root")
    out, rej = tmp_path / "ingested.jsonl", tmp_path / "rejects.jsonl"
    params = IngestParams(roots=[str(tmp_path / "root")], max_reject_fraction=0.1)
    with pytest.raises(TooManyRejectsError, match="davidson") as exc:
        run(params, tmp_path, out, rej)
    assert "max_reject_fraction" in str(exc.value) and str(rej) in str(exc.value)
    assert rej.exists() and len(rej.read_text().splitlines()) == 1  # rejects written before the error
    assert not out.exists()


def test_first_root_that_has_a_set_wins(tmp_path, sample_root):
    root, present = sample_root
    _need(present, "davidson")
    _davidson_with_empty_row(tmp_path / "first")
    params = IngestParams(roots=[str(tmp_path / "first"), str(root)], max_reject_fraction=0.5)
    _, _, stats = ingest(params, PROJECT)
    assert stats["sources"]["davidson"]["root"] == str((tmp_path / "first").resolve())
    assert stats["sources"]["davidson"]["rows_read"] == 4
    others = set(stats["sources"]) - {"davidson"}
    assert all(stats["sources"][k]["root"] == str(root.resolve()) for k in others)
