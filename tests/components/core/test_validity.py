"""Text validity in the data contract, the whole kind: every lone surrogate, every invisible-only
text, a key named twice at any depth, bytes that are not UTF-8. Bad lines are rejected with their
file, line and a reason that says how to fix them; everything good is kept; writes never crash."""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest

from components.core.contract import (
    ContractError,
    make_labels,
    parse_json_line,
    parse_lines,
    read_records,
    text_problem,
    validate_record,
    write_jsonl,
    write_json,
)

INVISIBLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me")


def row(rid="a1", text="[ADULT][MESSAGE] hello there", **over):
    obj = {"id": rid, "text": text, "labels": make_labels(["harassment"]),
           "metadata": {"source": "offline", "group": rid}}
    obj.update(over)
    return obj


def line(obj) -> str:
    return json.dumps(obj)  # ensure_ascii: a lone surrogate is written as its \u escape, as a file can hold it


def code_points(categories) -> list[str]:
    return [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in categories]


# --------------------------------------------------------------------------- lone surrogates


def test_every_lone_surrogate_is_rejected_with_its_position():
    surrogates = code_points({"Cs"})
    assert len(surrogates) == 0x800
    for s in surrogates:
        for text in (s, f"ok {s}", f"{s} ok"):
            problem = text_problem(text)
            assert problem and "not valid UTF-8" in problem, (hex(ord(s)), text)
    assert "character 4" in text_problem("ok \ud83d") and "U+D83D" in text_problem("ok \ud83d")
    assert "byte 0xff" in text_problem("caf\udcff")  # a byte carried by surrogateescape


@pytest.mark.parametrize("text", ["\ud83d", "\ude00", "\ude00\ud83d", "a\ud83d b", "\udcff"],
                         ids=["high", "low", "reversed-pair", "inside", "escaped-byte"])
def test_lone_surrogates_are_rejected_in_a_file_and_the_rest_is_kept(tmp_path, text):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([line(row("g1")), line(row("bad", f"[ADULT][MESSAGE] {text}")),
                               line(row("g2"))]) + "\n")
    result = parse_lines(path)
    assert [r.id for r in result.records] == ["g1", "g2"]
    [reject] = result.rejects
    assert (reject.path, reject.line) == (str(path), 2)
    assert "not valid UTF-8" in reject.reason and ("remove it" in reject.reason or "UTF-8" in reject.reason)
    rejects = tmp_path / "rejects.jsonl"
    read_records(path, rejects_path=rejects, max_reject_fraction=0.5)
    [saved] = [json.loads(ln) for ln in rejects.read_text("utf-8").splitlines()]
    assert saved["line"] == 2 and saved["file"] == str(path)


def test_a_correct_surrogate_pair_is_an_ordinary_character():
    assert validate_record(json.loads(line(row(text="[ADULT][MESSAGE] hi \ud83d\ude00")))).text.endswith("\U0001F600")


@pytest.mark.parametrize("where", ["id", "metadata.note", "metadata.tags[1]", "metadata key"])
def test_a_lone_surrogate_anywhere_in_a_record_is_rejected(where):
    obj = row()
    if where == "id":
        obj["id"] = "x\ud800"
    elif where == "metadata.note":
        obj["metadata"]["note"] = "\udfff"
    elif where == "metadata.tags[1]":
        obj["metadata"]["tags"] = ["ok", "\ud800"]
    else:
        obj["metadata"]["\ud800"] = 1
    with pytest.raises(ContractError, match="not valid UTF-8") as exc:
        validate_record(json.loads(line(obj)))
    assert where.split()[0].split("[")[0].split(".")[0] in str(exc.value)


# --------------------------------------------------------------------------- invisible-only texts


def test_every_invisible_code_point_alone_is_an_empty_text():
    for ch in code_points(set(INVISIBLE) - {"Cs"}):
        problem = text_problem(ch * 2)
        assert problem and problem.startswith("text is empty"), f"U+{ord(ch):04X} {unicodedata.category(ch)}"
    for ch in "\u115f\u1160\u3164\uffa0\u2800":  # letters and symbols that render as blank
        assert text_problem(ch)


def test_every_format_character_alone_in_a_record_is_rejected_with_its_code_points():
    for ch in code_points({"Cf", "Zs"}):
        with pytest.raises(ContractError, match="text is empty") as exc:
            validate_record(row(text=f"[ADULT][MESSAGE] {ch}{ch}"))
        if not ch.isspace():
            assert f"U+{ord(ch):04X}" in str(exc.value)


def test_a_visible_character_among_invisible_ones_is_a_text():
    for ch in code_points({"Lu", "Ll", "Lo", "Nd", "Po", "So"})[::997]:
        assert text_problem(f"\u200b{ch}\u200d") is None, f"U+{ord(ch):04X}"
    assert validate_record(row(text="[ADULT][MESSAGE] h\u200bi")).text.endswith("h\u200bi")


# --------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize("raw, where, key", [
    ('{"id": "a", "id": "b", "text": "t", "labels": {}, "metadata": {}}', "the record", "id"),
    ('{"id": "a", "text": "one", "text": "two", "labels": {}, "metadata": {}}', "the record", "text"),
    ('{"id": "a", "text": "t", "labels": {"threats": 1, "threats": 0}, "metadata": {}}', "labels", "threats"),
    ('{"id": "a", "text": "t", "labels": {}, "metadata": {"source": "x", "source": "y"}}', "metadata", "source"),
    ('{"id": "a", "text": "t", "labels": {}, "metadata": {"x": [{"k": 1, "k": 1}]}}', "metadata.x[0]", "k"),
])
def test_a_key_named_twice_at_any_level_is_an_error(raw, where, key):
    with pytest.raises(ContractError) as exc:
        parse_json_line(raw)
    message = str(exc.value)
    assert message.startswith("duplicate key") and f"{where} names '{key}' 2 times" in message
    assert "keep one" in message


def test_duplicate_labels_line_is_rejected_and_the_rest_kept(tmp_path):
    labels = json.dumps(make_labels(["threats"]))[:-1] + ', "threats": 0}'
    bad = line(row("bad")).replace(json.dumps(make_labels(["harassment"])), labels)
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([line(row("g1")), bad, line(row("g2"))]) + "\n")
    result = parse_lines(path)
    assert [r.id for r in result.records] == ["g1", "g2"]
    assert [(r.line, r.reason.split(":")[0]) for r in result.rejects] == [(2, "duplicate key")]
    assert "'threats' 2 times (values 1 and 0)" in result.rejects[0].reason


# --------------------------------------------------------------------------- bytes that are not UTF-8


@pytest.mark.parametrize("bad", [b"\xff", b"\xe9t\xe9", b"\xc3", b"\xed\xa0\xbd"],
                         ids=["invalid-byte", "latin-1", "truncated", "encoded-surrogate"])
def test_a_line_that_is_not_utf8_is_rejected_and_the_rest_kept(tmp_path, bad):
    path = tmp_path / "in.jsonl"
    broken = line(row("bad", "[ADULT][MESSAGE] caf")).encode().replace(b"caf", b"caf" + bad)
    path.write_bytes(b"\xef\xbb\xbf" + line(row("g1")).encode() + b"\r\n" + broken + b"\n" + line(row("g2")).encode())
    result = parse_lines(path)
    assert [r.id for r in result.records] == ["g1", "g2"]  # a byte-order mark and CRLF are fine
    [reject] = result.rejects
    assert reject.line == 2 and f"byte 0x{bad[0]:02x}" in reject.reason and "re-save the file as UTF-8" in reject.reason
    assert "\\x" in reject.raw  # the raw line is shown with the bad bytes escaped
    rejects = tmp_path / "rejects.jsonl"
    read_records(path, rejects_path=rejects, max_reject_fraction=0.5)
    assert json.loads(rejects.read_text("utf-8"))["line"] == 2


# --------------------------------------------------------------------------- writes never crash


def test_writes_never_crash_on_a_lone_surrogate(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"raw": "\ud83d"}, {"raw": "fine é"}])
    rows = [json.loads(ln) for ln in (tmp_path / "a.jsonl").read_text("utf-8").splitlines()]
    assert rows == [{"raw": "\ud83d"}, {"raw": "fine é"}]  # lossless: the escape reads back the same
    write_json(tmp_path / "b.json", {"raw": "\udcff"})
    assert json.loads((tmp_path / "b.json").read_text("utf-8")) == {"raw": "\udcff"}
