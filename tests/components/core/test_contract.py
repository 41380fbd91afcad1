import json
import os

import pytest

from components.core.contract import (
    ContractError,
    TooManyRejectsError,
    atomic_write,
    make_labels,
    parse_lines,
    read_records,
    validate_record,
    write_records,
)
from components.core.taxonomy import LABELS, ContextPrefix, split_prefix


def good(**over):
    row = {"id": "a1", "text": "[ADULT][MESSAGE] hello there", "labels": make_labels(["harassment"]),
           "metadata": {"source": "offline", "category": "harassment", "group": "g1"}}
    row.update(over)
    return row


def test_valid_record_round_trips_in_canonical_order(tmp_path):
    shuffled = dict(reversed(list(make_labels(["threats"]).items())))
    record = validate_record(good(labels=shuffled))
    path = tmp_path / "x.jsonl"
    write_records(path, [record])
    written = json.loads(path.read_text())
    assert list(written["labels"]) == list(LABELS)
    assert written["labels"]["threats"] == 1 and sum(written["labels"].values()) == 1
    assert record.group == "g1"


@pytest.mark.parametrize(
    "row, reason",
    [
        (good(labels={**make_labels(), "violence": 1}), "unknown label(s) ['violence']"),
        (good(labels={k: v for k, v in make_labels().items() if k != "spam"}), "missing label(s) ['spam']"),
        (good(labels={**make_labels(), "spam": 2}), "label 'spam' must be 0 or 1, got 2"),
        (good(labels={**make_labels(), "spam": True}), "label 'spam' must be 0 or 1, got true"),
        (good(labels={**make_labels(), "spam": "1"}), "label 'spam' must be 0 or 1"),
        (good(text="   "), "text is empty"),
        (good(text="[ADULT][MESSAGE]  "), "text is empty"),
        (good(text=42), "text must be a string"),
        (good(text="[KIDS][MESSAGE] hi"), "bad context prefix"),
        (good(id=""), "id must be a non-empty string"),
        (good(metadata={"category": "x"}), "metadata.source"),
        (good(extra=1), "unexpected field(s) ['extra']"),
        ({"id": "x", "text": "t"}, "missing field 'labels'"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_each_kind_of_invalid_record_is_named(row, reason):
    with pytest.raises(ContractError) as exc:
        validate_record(row)
    assert reason in str(exc.value)


def test_bad_lines_are_counted_with_line_numbers_and_written_to_rejects(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(good(id=f"r{i}")) for i in range(8)]
    lines.insert(2, "{not json")
    lines.insert(5, json.dumps(good(id="bad", labels={**make_labels(), "violence": 1})))
    lines.append(json.dumps(good(id="r0")))  # duplicate id
    path.write_text("\n".join(lines) + "\n\n")
    rejects = tmp_path / "rejects.jsonl"
    result = read_records(path, rejects_path=rejects, max_reject_fraction=0.5)
    assert len(result.records) == 8
    assert [(r.line, r.reason.split(":")[0]) for r in result.rejects] == [
        (3, "malformed JSON"), (6, "unknown label(s) ['violence']; valid labels"), (11, "duplicate id 'r0' (first on line 1)")]
    saved = [json.loads(l) for l in rejects.read_text().splitlines()]
    assert [s["line"] for s in saved] == [3, 6, 11] and saved[0]["raw"] == "{not json"


def test_step_fails_loudly_past_the_reject_fraction_and_keeps_the_rejects(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(good()) + "\n" + "garbage\n")
    rejects = tmp_path / "rej.jsonl"
    with pytest.raises(TooManyRejectsError, match=r"1 of 2 lines .*50.0% > allowed 10.0%.*line 2: malformed JSON"):
        read_records(path, rejects_path=rejects, max_reject_fraction=0.1)
    assert rejects.read_text().count("\n") == 1


def test_missing_file_and_non_utf8_get_clear_errors(tmp_path):
    with pytest.raises(ContractError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"id": "caf\xe9"}\n'.encode("latin-1"))
    [reject] = parse_lines(bad).rejects  # the line is rejected, with where and how to fix it
    assert reject.line == 1 and "not UTF-8: byte 0xe9" in reject.reason and "re-save" in reject.reason
    with pytest.raises(ContractError, match="not UTF-8"):
        read_records(bad)


def test_write_refuses_invalid_records_and_leaves_the_old_file(tmp_path, record_factory):
    path = tmp_path / "out.jsonl"
    write_records(path, [record_factory("ok")])
    before = path.read_bytes()
    broken = record_factory("broken", text="  ")
    with pytest.raises(ContractError, match="refusing to write .*'broken': text is empty"):
        write_records(path, [record_factory("ok2"), broken])
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_atomic_write_keeps_old_content_when_interrupted(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as fh:
            fh.write("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_write_killed_part_way_leaves_a_temporary_the_next_write_removes(tmp_path, kind):
    import subprocess
    import sys
    from pathlib import Path

    from components.core.contract import atomic_folder

    target = tmp_path / ("f.jsonl" if kind == "file" else "onnx")
    half = ("with atomic_write(target) as fh:\n    fh.write('half'); fh.flush(); os.kill(os.getpid(), 9)" if kind == "file"
            else "with atomic_folder(target) as d:\n    (d / 'model.onnx').write_text('half'); os.kill(os.getpid(), 9)")
    code = (f"import os; from pathlib import Path; from components.core.contract import atomic_write, atomic_folder\n"
            f"target = Path({str(target)!r})\n{half}\n")
    killed = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3])
    assert killed.returncode == -9
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(f".{target.name}.")]  # nothing could clean up
    assert not target.exists()

    live = tmp_path / (f".{target.name}.{os.getppid()}.abcd1234" + (".tmp" if kind == "file" else ""))
    live.mkdir() if kind == "folder" else live.write_text("a live writer's")  # another writer, alive, mid-write
    if kind == "file":
        with atomic_write(target) as fh:
            fh.write("whole")
    else:
        with atomic_folder(target) as d:
            (d / "model.onnx").write_text("whole")
    assert not left.exists() and live.exists()  # the dead writer's temporary removed, the live one's kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name])


def test_context_prefix_parsing_and_application():
    assert ContextPrefix.parse("adult/listing").render() == "[ADULT][LISTING]"
    assert ContextPrefix.parse("[GENERAL][BIO]") == ContextPrefix("GENERAL", "BIO")
    assert ContextPrefix("ADULT", "MESSAGE").apply("[GENERAL][BIO] hi") == "[ADULT][MESSAGE] hi"
    assert split_prefix("no prefix [x]") == (None, "no prefix [x]")
    with pytest.raises(ValueError, match="unknown surface 'POST'"):
        ContextPrefix.parse("GENERAL/POST")
    with pytest.raises(ValueError, match="AUDIENCE/SURFACE"):
        ContextPrefix.parse("adult")


@pytest.mark.parametrize("metadata, reason", [
    ({"source": "review", "audience": "KIDS"}, 'metadata.audience "KIDS" is not one of GENERAL, ADULT'),
    ({"source": "review", "surface": "message"}, 'metadata.surface "message" is not one of BIO'),
    ({"source": "review", "audience": 3}, "metadata.audience 3 is not one of"),
])
def test_an_unknown_audience_or_surface_in_metadata_is_the_line_s_reject(metadata, reason):
    """merge prefixes an unprefixed text from metadata.audience/surface: an unknown one used to pass the
    contract and then crash the whole merge (ContextPrefix's ValueError) instead of rejecting one line."""
    with pytest.raises(ContractError) as exc:
        validate_record(good(text="hello there", metadata=metadata))
    assert reason in str(exc.value)
    assert validate_record(good(metadata={"source": "review", "audience": "ADULT", "surface": "BIO"}))
    assert validate_record(good(metadata={"source": "review", "audience": None, "surface": ""}))


def test_ids_are_unique_across_files_when_the_reader_shares_its_seen_ids(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps(good(id="r0")) + "\n" + json.dumps(good(id="r1")) + "\n")
    second.write_text(json.dumps(good(id="r2")) + "\n" + json.dumps(good(id="r1")) + "\n")
    seen: dict = {}
    assert len(read_records(first, seen_ids=seen).records) == 2
    result = read_records(second, max_reject_fraction=1.0, seen_ids=seen)
    assert [r.id for r in result.records] == ["r2"]
    [reject] = result.rejects
    assert reject.line == 2 and reject.reason == f"duplicate id 'r1' (first on {first} line 2)"
    assert not parse_lines(second).rejects  # alone, the second file is fine


@pytest.mark.parametrize("line, reason", [
    ("\x00" * 12, "malformed JSON: NUL byte at column 1; the file is corrupt"),
    ('{"id": "a\x00b"}', "malformed JSON: NUL byte at column 10"),
    ('{"id": "a\x01b"}', "malformed JSON: Invalid control character at column 10"),
])
def test_a_nul_byte_is_named_in_the_reason(tmp_path, line, reason):
    """A crash can leave a file's tail zero-filled: the reason said only 'Expecting value'."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(good()) + "\n" + line + "\n")
    [reject] = parse_lines(path).rejects
    assert reject.line == 2 and reject.reason.startswith(reason)


@pytest.mark.parametrize("row, reason", [
    ({"id": "x", "text": {"t": 1}, "labels": make_labels()}, "text must be a string, got an object"),
    ({"id": "x", "text": None, "labels": make_labels()}, "text must be a string, got null"),
    (good(metadata=["offline"]), "metadata must be an object, got an array"),
    (good(labels=True), "labels must be an object of the 18 categories, got a boolean"),
])
def test_a_wrong_type_is_named_as_json_names_it(row, reason):
    """Not Python's names: a parsed object said "got _Object", null "got NoneType"."""
    from components.core.contract import parse_json_line

    with pytest.raises(ContractError) as exc:
        validate_record(parse_json_line(json.dumps(row)))
    assert str(exc.value) == reason
