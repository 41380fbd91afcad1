"""The data contract: one JSONL record per example, validated on every read and write.

A record::

    {"id": "...", "text": "[ADULT][MESSAGE] ...",
     "labels": {"threats": 0, ..., "harassment": 1},      # all 18, 0/1, canonical order
     "metadata": {"source": "offline", "category": "harassment", "group": "...", ...}}

Bad lines never vanish: ``read_records`` counts them, writes them to a rejects file with the
line number and the reason, and raises ``TooManyRejectsError`` past a set fraction.
Every write goes to a temporary file in the same folder and is renamed into place (``atomic.py``), so a
killed step leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.core.atomic import atomic_folder, atomic_write, remove_orphans  # noqa: F401  (re-exported)
from components.core.taxonomy import AUDIENCES, LABELS, SURFACES, split_prefix
# The text rules, also imported from here by the other doors (ingest, the CLI).
from components.core.validity import (  # noqa: F401
    bad_string,
    duplicate_key,
    is_visible,
    loads_keeping_duplicates,
    text_problem,
    utf8_problem,
)

_LABEL_SET = frozenset(LABELS)
_TOP_KEYS = frozenset({"id", "text", "labels", "metadata"})
_BOM = b"\xef\xbb\xbf"


class ContractError(ValueError):
    """A record or a file that breaks the data contract."""


class TooManyRejectsError(ContractError):
    """More lines of a file break the contract than the step allows (all are in its rejects file)."""


@dataclass
class Record:
    """One example: its id, its (prefixed) text, all 18 labels and its metadata."""

    id: str
    text: str
    labels: dict[str, int]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The split group: the id of the example this one derives from (itself by default)."""
        return str(self.metadata.get("group") or self.id)

    @property
    def source(self) -> str:
        """Where the record came from (``metadata.source``)."""
        return str(self.metadata.get("source", ""))

    def label_vector(self) -> list[int]:
        """The 18 labels as 0/1 in canonical order."""
        return [self.labels[name] for name in LABELS]

    def positive_labels(self) -> list[str]:
        """The names of the labels set to 1, in canonical order."""
        return [name for name in LABELS if self.labels[name]]

    def to_dict(self) -> dict[str, Any]:
        """The record as its JSONL object, labels in canonical order."""
        return {
            "id": self.id,
            "text": self.text,
            "labels": {name: int(self.labels[name]) for name in LABELS},
            "metadata": self.metadata,
        }


def make_labels(positive: Iterable[str] = ()) -> dict[str, int]:
    """All 18 labels in canonical order, 1 for the names given, 0 otherwise."""
    positive = set(positive)
    unknown = positive - _LABEL_SET
    if unknown:
        raise ContractError(f"unknown label(s) {sorted(unknown)}; valid labels: {', '.join(LABELS)}")
    return {name: int(name in positive) for name in LABELS}


def parse_json_line(line: str) -> Any:
    """Parse one JSONL line; malformed JSON and a key named twice (at any depth) are ContractErrors."""
    try:
        obj = loads_keeping_duplicates(line)
    except json.JSONDecodeError as exc:
        if "\x00" in line:  # say what it is: zero-filled blocks a crash left, or binary data
            raise ContractError(f"malformed JSON: NUL byte at column {line.index(chr(0)) + 1}; the file is "
                                "corrupt (zero-filled by a crash, or binary data): restore or drop the line") from None
        raise ContractError(f"malformed JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}") from None
    except RecursionError:
        raise ContractError("malformed JSON: nested too deeply") from None
    problem = duplicate_key(obj)
    if problem:
        raise ContractError(problem)
    return obj


def _json_type(value: Any) -> str:
    """A parsed value's JSON type, as the user wrote it (not Python's: "got _Object", "got NoneType")."""
    for kind, name in ((bool, "a boolean"), (str, "a string"), ((int, float), "a number"), (Mapping, "an object"),
                       (list, "an array")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def validate_record(obj: Any) -> Record:
    """Check one parsed JSON value against the contract; the error says what is wrong."""
    if not isinstance(obj, Mapping):
        raise ContractError(f"record must be a JSON object, got {_json_type(obj)}")
    bad = bad_string(obj)
    if bad:
        raise ContractError(bad)
    extra = set(obj) - _TOP_KEYS
    if extra:
        raise ContractError(f"unexpected field(s) {sorted(extra)}; a record has id, text, labels, metadata")
    for key in ("id", "text", "labels"):
        if key not in obj:
            raise ContractError(f"missing field {key!r}")

    rid = obj["id"]
    if not isinstance(rid, str) or not rid.strip():
        raise ContractError("id must be a non-empty string")

    text = obj["text"]
    if not isinstance(text, str):
        raise ContractError(f"text must be a string, got {_json_type(text)}")
    try:
        _, raw = split_prefix(text)
    except ValueError as exc:
        raise ContractError(f"text has a bad context prefix: {exc}") from None
    problem = text_problem(raw)
    if problem:
        raise ContractError(problem)

    labels = obj["labels"]
    if not isinstance(labels, Mapping):
        raise ContractError(f"labels must be an object of the 18 categories, got {_json_type(labels)}")
    unknown = set(labels) - _LABEL_SET
    if unknown:
        raise ContractError(f"unknown label(s) {sorted(unknown)}; valid labels: {', '.join(LABELS)}")
    missing = [name for name in LABELS if name not in labels]
    if missing:
        raise ContractError(f"missing label(s) {missing}; every record carries all {len(LABELS)} labels")
    for name in LABELS:
        value = labels[name]
        # bool is an int subclass in Python; JSON true/false is a type error here.
        if isinstance(value, bool) or value not in (0, 1):
            raise ContractError(f"label {name!r} must be 0 or 1, got {json.dumps(value)}")

    metadata = obj.get("metadata", {})
    if not isinstance(metadata, Mapping):
        raise ContractError(f"metadata must be an object, got {_json_type(metadata)}")
    if not isinstance(metadata.get("source", ""), str) or not metadata.get("source"):
        raise ContractError("metadata.source must name where the record came from (e.g. 'offline')")
    # merge prefixes an unprefixed text from these: an unknown one must be this line's reject, not the step's crash
    for key, valid in (("audience", AUDIENCES), ("surface", SURFACES)):
        value = metadata.get(key)
        if value not in (None, "") and value not in valid:
            raise ContractError(f"metadata.{key} {json.dumps(value)[:40]} is not one of {', '.join(valid)}")

    return Record(
        id=rid,
        text=text,
        labels={name: int(labels[name]) for name in LABELS},
        metadata=dict(metadata),
    )


@dataclass
class RejectedRecord:
    """A line that broke the contract: its file, line number, the reason (with the fix) and the raw line."""

    path: str
    line: int
    reason: str
    raw: str

    def to_dict(self) -> dict[str, Any]:
        """The rejects-file row: file, line, reason, raw."""
        return {"file": self.path, "line": self.line, "reason": self.reason, "raw": self.raw}


@dataclass
class ReadResult:
    """What reading a JSONL file gave: the valid records and the rejected lines."""

    records: list[Record]
    rejects: list[RejectedRecord]

    @property
    def total(self) -> int:
        """Non-blank lines read."""
        return len(self.records) + len(self.rejects)

    @property
    def reject_fraction(self) -> float:
        """The share of lines rejected (0 for an empty file)."""
        return len(self.rejects) / self.total if self.total else 0.0


def iter_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """``(line number, text, problem)`` for every non-blank line; ``problem`` names a line that is not UTF-8.

    Lines end at "\\n" only (a JSON string may hold U+2028); a leading byte-order mark is dropped.
    """
    data = Path(path).read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        try:
            yield lineno, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield lineno, raw.decode("utf-8", "backslashreplace"), (
                f"line is not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}; "
                "re-save the file as UTF-8")


def parse_lines(path: Path, seen_ids: dict[str, tuple[str, int]] | None = None) -> ReadResult:
    """Validate every non-blank line of a JSONL file; nothing is raised for a bad line.

    ``seen_ids`` (id -> (file, line)), when given, spans files: an id an earlier file holds is a
    duplicate here too, and this file's ids are added to it.
    """
    path = Path(path)
    records: list[Record] = []
    rejects: list[RejectedRecord] = []
    seen: dict[str, tuple[str, int]] = {} if seen_ids is None else seen_ids
    for lineno, line, problem in iter_lines(path):
        if problem:
            rejects.append(RejectedRecord(str(path), lineno, problem, line))
            continue
        try:
            record = validate_record(parse_json_line(line))
        except ContractError as exc:
            rejects.append(RejectedRecord(str(path), lineno, str(exc), line))
            continue
        if record.id in seen:
            where, first = seen[record.id]
            at = f"line {first}" if where == str(path) else f"{where} line {first}"
            rejects.append(RejectedRecord(str(path), lineno, f"duplicate id {record.id!r} (first on {at})", line))
            continue
        seen[record.id] = (str(path), lineno)
        records.append(record)
    return ReadResult(records, rejects)


def read_records(
    path: str | os.PathLike,
    *,
    rejects_path: str | os.PathLike | None = None,
    max_reject_fraction: float = 0.0,
    seen_ids: dict[str, tuple[str, int]] | None = None,
) -> ReadResult:
    """Read a JSONL file of records, writing bad lines to ``rejects_path``.

    Raises ``TooManyRejectsError`` when more than ``max_reject_fraction`` of the lines are bad.
    The rejects file is written before the error, so the user can see every bad line.
    ``seen_ids``: ids already read from other files (see :func:`parse_lines`).
    """
    path = Path(path)
    if not path.exists():
        raise ContractError(f"{path}: no such file; run the step that writes it first (content-moderation status)")
    result = parse_lines(path, seen_ids)
    if rejects_path is not None:
        write_jsonl(rejects_path, (r.to_dict() for r in result.rejects))
    if result.rejects and result.reject_fraction > max_reject_fraction:
        first = result.rejects[0]
        where = f" (all listed in {rejects_path})" if rejects_path else ""
        raise TooManyRejectsError(
            f"{path}: {len(result.rejects)} of {result.total} lines break the data contract "
            f"({result.reject_fraction:.1%} > allowed {max_reject_fraction:.1%}){where}; "
            f"first: line {first.line}: {first.reason}. Fix the lines or raise the allowed fraction."
        )
    return result


def _dumps(obj: Any, **kwargs: Any) -> str:
    """JSON text that can always be written as UTF-8: a lone surrogate (only a reject's raw text
    or a caller's bug can hold one) is written as its \\u escape instead of crashing the write."""
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, **kwargs)
    return text


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write one JSON object a line, atomically; returns the number of lines."""
    n = 0
    with atomic_write(path) as fh:
        for row in rows:
            fh.write(_dumps(row, sort_keys=False))
            fh.write("\n")
            n += 1
    return n


def write_records(path: str | os.PathLike, records: Iterable[Record]) -> int:
    """Validate and atomically write records; an invalid record aborts the write."""
    def checked() -> Iterator[dict[str, Any]]:
        for record in records:
            row = record.to_dict()
            try:
                validate_record(row)
            except ContractError as exc:
                raise ContractError(f"refusing to write {path}: record {record.id!r}: {exc}") from None
            yield row

    return write_jsonl(path, checked())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write one JSON document (indented), atomically."""
    with atomic_write(path) as fh:
        fh.write(_dumps(obj, indent=2, sort_keys=False))
        fh.write("\n")
