"""Ingest refuses bad text row by row: bytes that are not UTF-8, invisible-only texts and lone
surrogates are rejected with their file, line and reason; every good row is kept; nothing crashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.core.contract import validate_record
from components.core.params import IngestParams
from components.ingest_external import run

HEADER = b",count,hate_speech,offensive_language,neither,class,tweet\n"


def _davidson(root: Path, tweets: list[bytes]) -> Path:
    folder = root / "davidson"
    folder.mkdir(parents=True)
    rows = [b"%d,3,0,0,3,2,\"%s\"\n" % (i, t) for i, t in enumerate(tweets)]
    (folder / "labeled_data.csv").write_bytes(HEADER + b"".join(rows))
    return folder / "labeled_data.csv"


@pytest.mark.parametrize("bad, reason", [
    (b"caf\xe9 au lait", "not valid UTF-8: byte 0xe9"),
    (b"\xff\xfe", "not valid UTF-8: byte 0xff"),
    ("\u200b\u200c\u2060".encode(), "no visible character"),
    ("\u3164".encode(), "no visible character"),
], ids=["latin-1", "invalid-bytes", "zero-width-only", "hangul-filler"])
def test_a_bad_row_is_rejected_with_file_and_line_and_the_rest_kept(tmp_path, bad, reason):
    csv_path = _davidson(tmp_path / "root", [b"a perfectly normal tweet", bad, b"another fine tweet"])
    out, rej = tmp_path / "ingested.jsonl", tmp_path / "rejects.jsonl"
    stats = run(IngestParams(roots=[str(tmp_path / "root")], max_reject_fraction=0.5), tmp_path, out, rej)
    assert stats["sources"]["davidson"]["rejected"] == 1
    written = [validate_record(json.loads(ln)) for ln in out.read_text("utf-8").splitlines()]
    assert [r.id for r in written] == ["davidson-0", "davidson-2"]
    [saved] = [json.loads(ln) for ln in rej.read_text("utf-8").splitlines()]
    assert saved["file"] == str(csv_path) and saved["line"] == 3 and reason in saved["reason"]
    assert "davidson row 1" in saved["reason"]


def test_a_paired_text_file_with_bad_bytes_rejects_that_line_only(tmp_path):
    folder = tmp_path / "root" / "tweeteval_hate"
    folder.mkdir(parents=True)
    (folder / "train_text.txt").write_bytes(b"first tweet\nsecond \xc3 tweet\nthird tweet\n")
    (folder / "train_labels.txt").write_bytes(b"0\n1\n0\n")
    (folder / "val_text.txt").write_bytes(b"a val tweet\n")
    (folder / "val_labels.txt").write_bytes(b"1\n")
    out, rej = tmp_path / "ingested.jsonl", tmp_path / "rejects.jsonl"
    run(IngestParams(roots=[str(tmp_path / "root")], max_reject_fraction=0.5), tmp_path, out, rej)
    assert len(out.read_text("utf-8").splitlines()) == 3
    [saved] = [json.loads(ln) for ln in rej.read_text("utf-8").splitlines()]
    assert saved["file"].endswith("train_text.txt") and saved["line"] == 2 and "byte 0xc3" in saved["reason"]
