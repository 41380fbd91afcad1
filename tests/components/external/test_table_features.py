"""The mapping table's reader features on small CSVs written here: several 0/1 label columns,
composite keys with fallbacks, HTML stripping, the text cap, the evaluation group, and check_spec's
messages. Real code throughout (``ingest`` / ``run`` with a table passed in)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from components.core.contract import validate_record
from components.core.params import IngestParams
from components.external.sources import SourceTableError, check_spec, load_sources
from components.ingest_external import ingest, run
from components.text.social import cap_chars, normalize_social_text, strip_html


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def spec(**over) -> dict:
    base = {"folder": "set", "files": ["data.csv"], "format": "csv", "text": ["text"], "surface": "GENERAL",
            "strip_urls": True, "commit": False, "licence": "test"}
    return {**base, **over}


def labels_of(records) -> dict[str, list[str]]:
    return {r.text: sorted(r.positive_labels()) for r in records}


# --------------------------------------------------------------------------- label_columns


GAB_LIKE = spec(label_columns={"hd": ["hate_speech"], "cv": ["threats"], "vo": ["profanity"]})


def test_label_columns_give_the_union_of_the_columns_holding_1(tmp_path):
    write_csv(tmp_path / "set/data.csv", ["text", "hd", "cv", "vo", "split"], [
        ["hateful and vulgar", "1", "0", "1", "train"],
        ["a call for violence", "0", "1", "0", "test"],
        ["all three at once", "1", "1", "1", "train"],
        ["nothing at all", "0", "0", "0", "train"],
        ["padded values", " 1 ", "0", "0", "train"],
    ])
    records, rejects, stats = ingest(IngestParams(roots=[str(tmp_path)]), tmp_path, sources={"gab": GAB_LIKE})
    assert not rejects
    assert labels_of(records) == {
        "hateful and vulgar": ["hate_speech", "profanity"],
        "a call for violence": ["threats"],
        "all three at once": ["hate_speech", "profanity", "threats"],
        "nothing at all": [],
        "padded values": ["hate_speech"],
    }
    original = {r.text: r.metadata["original_label"] for r in records}
    assert original["hateful and vulgar"] == "hd+vo" and original["nothing at all"] == "none"
    category = {r.text: r.metadata["category"] for r in records}
    assert category["a call for violence"] == "threats" and category["all three at once"] == "hate_speech"
    assert stats["sources"]["gab"]["labels"] == {"hate_speech": 3, "profanity": 2, "threats": 2}
    assert stats["sources"]["gab"]["negatives"] == 1 and stats["sources"]["gab"]["dropped"] == {}


def test_a_label_column_that_is_not_0_or_1_rejects_that_row_with_file_and_line(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "root/set/data.csv", ["text", "hd", "cv", "vo"], [
        ["fine row", "0", "0", "0"],
        ["bad row", "0", "2", ""],
        ["another fine row", "1", "0", "0"],
    ])
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    params = IngestParams(roots=[str(tmp_path / "root")], max_reject_fraction=0.5)
    monkeypatch.setattr("components.ingest_external.load_sources", lambda: {"gab": check_spec("gab", GAB_LIKE)})
    stats = run(params, tmp_path, out, rej)
    assert stats["sources"]["gab"]["rejected"] == 1 and stats["sources"]["gab"]["kept"] == 2
    [saved] = [json.loads(ln) for ln in rej.read_text("utf-8").splitlines()]
    assert saved["file"] == str(path) and saved["line"] == 3
    assert "gab row 1" in saved["reason"] and "cv='2'" in saved["reason"] and "vo=''" in saved["reason"]
    assert [validate_record(json.loads(ln)).id for ln in out.read_text("utf-8").splitlines()] == ["gab-0", "gab-2"]


def test_a_missing_label_column_names_the_source_and_the_columns(tmp_path):
    write_csv(tmp_path / "set/data.csv", ["text", "hd", "vo"], [["x", "0", "0"]])
    with pytest.raises(SourceTableError, match=r"no column\(s\) \['cv'\].*'gab'"):
        ingest(IngestParams(roots=[str(tmp_path)]), tmp_path, sources={"gab": GAB_LIKE})


# --------------------------------------------------------------------------- composite keys


SPAM_LIKE = spec(
    label=["category", "subcategory"],
    mapping={
        "Fraud": ["scam_patterns"],
        "Fraud|delivery": ["scam_patterns", "impersonation"],
        " Fraud | tax refund ": ["scam_patterns", "impersonation"],  # parts are stripped
        "Ads": ["spam"],
    },
    surface="MESSAGE",
    strip_urls=False,
)


def test_composite_keys_take_the_longest_match_and_fall_back_to_the_category(tmp_path):
    write_csv(tmp_path / "set/data.csv", ["text", "lang", "category", "subcategory"], [
        ["your parcel awaits a fee", "en", "Fraud", "delivery"],
        ["your tax refund is ready", "en", "Fraud", "tax refund"],
        ["you won a prize", "en", "Fraud", "prize"],
        ["big sale today", "en", "Ads", "promo"],
        ["your account is locked", "en", "Ads", "account alert"],  # the category decides: Ads
        ["vote for me", "en", "Politics", "election"],  # no key at any level: dropped
        ["delivery without a category", "en", "", "delivery"],
    ])
    records, rejects, stats = ingest(IngestParams(roots=[str(tmp_path)]), tmp_path, sources={"sh": SPAM_LIKE})
    assert not rejects
    assert labels_of(records) == {
        "your parcel awaits a fee": ["impersonation", "scam_patterns"],
        "your tax refund is ready": ["impersonation", "scam_patterns"],
        "you won a prize": ["scam_patterns"],
        "big sale today": ["spam"],
        "your account is locked": ["spam"],
    }
    assert {r.metadata["original_label"] for r in records} >= {"Fraud|delivery", "Fraud|prize", "Ads|account alert"}
    assert stats["sources"]["sh"]["dropped"] == {"Politics|election": 1, "|delivery": 1}
    assert all(r.metadata["surface"] == "MESSAGE" for r in records)


# --------------------------------------------------------------------------- check_spec


@pytest.mark.parametrize("over, message", [
    ({"lable": "x", "label": "y", "mapping": {"a": []}}, r"unknown key\(s\) \['lable'\]"),
    ({"label_columns": {"hd": ["hate_speech"]}, "label": "x"}, "replaces `label` \\+ `mapping`"),
    ({"label_columns": {"hd": ["hate_speech"]}, "mapping": {"1": []}}, "replaces `label` \\+ `mapping`"),
    ({"label_columns": {}}, "label_columns must map"),
    ({"label_columns": {"hd": ["hateful"]}}, "label_columns 'hd'"),
    ({"label_columns": {"hd": "hate_speech"}}, "labels are a list"),
    ({"label": ["a", "b"], "mapping": {"x|y|z": []}}, "has 3 parts but `label` names 2"),
    ({"label": ["a", "b"], "mapping": {"x||": []}}, "has 3 parts|no empty part"),
    ({"label": ["a", "a"], "mapping": {"x": []}}, "distinct column names"),
    ({"label": "a", "mapping": {"x": [], "y": ["nonsense"]}}, "mapping 'y'"),
    ({"label": "a", "mapping": {"x": []}, "strip_html": "yes"}, "strip_html must be true or false"),
    ({"label": "a", "mapping": {"x": []}, "eval_group": "E-mail!"}, "eval_group 'E-mail!'"),
    ({"label": "a", "mapping": {"x": []}, "eval_group": 3}, "eval_group 3"),
    ({}, "need `label`"),
])
def test_check_spec_names_the_source_and_the_key(over, message):
    with pytest.raises(SourceTableError, match=f"source 'demo': .*(?:{message})"):
        check_spec("demo", spec(**over))


def test_paired_sources_take_no_label_columns():
    paired = {"folder": "p", "files": [{"text": "t.txt", "labels": "l.txt"}], "format": "paired",
              "surface": "GENERAL", "strip_urls": True, "mapping": {"0": []}}
    assert check_spec("p", paired)["eval_group"] == "p"
    with pytest.raises(SourceTableError, match="source 'p': paired"):
        check_spec("p", {**paired, "label_columns": {"a": []}})


def test_check_spec_is_idempotent_and_fills_defaults():
    for key, checked in load_sources().items():
        assert check_spec(key, checked) == checked, key
        assert checked["eval_group"] and isinstance(checked["strip_html"], bool) and "join" in checked
    assert check_spec("x", spec(label="a", mapping={"1": []}))["eval_group"] == "x"


# --------------------------------------------------------------------------- HTML, the cap, eval_group


@pytest.mark.parametrize("raw, expected", [
    ("<p>Hello&nbsp;<b>world</b></p><p>Next</p>", "Hello world Next"),
    ("<html><head><title>t</title><style>p {color: red}</style></head><body>Body<br/>line</body></html>",
     "Body line"),
    ("De: Team <no-reply@microsoft.com> Para: phishing@pot <phishing@pot>", None),  # addresses are not tags
    ("click <https://example.com/login?a=1&b=2> now", "click <https://example.com/login?a=1&b=2> now"),
    ("<!-- tracking --><div class=\"x\">Verify</div><script>var a = '<b>';</script>", "Verify"),
    ("I <3 you and 2 < 5 > 1", None),
    ("<SPAN style='font-size:14px'>Dear</SPAN> <o:p></o:p>client", "Dear client"),
    ("&lt;b&gt;shown as text&lt;/b&gt;", "shown as text"),  # escaped markup is markup once unescaped
])
def test_html_is_stripped_and_angle_bracketed_addresses_kept(raw, expected):
    got = normalize_social_text(raw, strip_urls=False, strip_html=True)
    assert got == (expected if expected is not None else raw)
    assert normalize_social_text(got, strip_urls=False, strip_html=True) == got  # idempotent
    assert "<b>" in normalize_social_text("<b>x</b>", strip_urls=False)  # only when the table asks


def test_strip_html_leaves_entities_to_the_normaliser():
    assert strip_html("a&amp;b<br>c") == "a&amp;b c"


@pytest.mark.parametrize("text, limit, expected", [
    ("short text", 20, "short text"),
    ("word " * 10, None, "word " * 10),
    ("alpha beta gamma delta", 12, "alpha beta"),  # a space in the last fifth: no word is split
    ("abcdefghijklmnopqrstuvwxyz", 10, "abcdefghij"),  # no space: a hard cut
    ("aaaaaaaaa bbbbbbbbbb", 10, "aaaaaaaaa"),  # the space sits right at the limit
])
def test_cap_chars(text, limit, expected):
    got = cap_chars(text, limit)
    assert got == expected and (limit is None or len(got) <= limit)


def test_email_sources_strip_html_cap_the_text_and_carry_their_eval_group(tmp_path):
    body = "<p>Dear&nbsp;customer,</p><p>" + "verify your account now please " * 30 + "</p>"
    write_csv(tmp_path / "mail/data.csv", ["subject", "body", "label"], [
        ["Your account is locked", body, "phishing"],
        ["", "<b>Only a body</b>", "phishing"],
        ["Re: lunch", "see you at noon", "ham"],
    ])
    table = {
        "pot": spec(folder="mail", text=["subject", "body"], join="\n", label="label",
                    mapping={"phishing": ["scam_patterns"]}, strip_html=True, strip_urls=False,
                    eval_group="email", surface="MESSAGE"),
        "ham": spec(folder="mail", text=["subject", "body"], join="\n", label="label", mapping={"ham": []},
                    strip_urls=False),
    }
    records, rejects, stats = ingest(IngestParams(roots=[str(tmp_path)], max_chars=300), tmp_path, sources=table)
    assert not rejects
    by_id = {r.id: r for r in records}
    long = by_id["pot-0"]
    assert long.text.startswith("Your account is locked Dear customer, verify your account")
    assert "<" not in long.text and "\xa0" not in long.text
    assert len(long.text) <= 300 and long.text.split()[-1] in {"verify", "your", "account", "now", "please"}
    assert long.metadata["chars_before_cap"] == len(normalize_social_text(
        "Your account is locked\n" + body, strip_urls=False, strip_html=True))
    assert by_id["pot-1"].text == "Only a body" and "chars_before_cap" not in by_id["pot-1"].metadata
    assert {r.metadata["eval_group"] for r in records if r.source == "external:pot"} == {"email"}
    assert by_id["ham-2"].metadata["eval_group"] == "ham"  # default: the source key
    assert stats["sources"]["pot"]["truncated"] == 1 and stats["sources"]["pot"]["eval_group"] == "email"
    assert stats["totals"]["truncated"] == 1
    uncapped, _, _ = ingest(IngestParams(roots=[str(tmp_path)], max_chars=None), tmp_path, sources=table)
    assert len({r.id: r for r in uncapped}["pot-0"].text) > 300
