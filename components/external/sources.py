"""The public labelled sets: the mapping table (``resources/external_sources.yaml``) and the readers
of their files (CSV, TSV, paired text/label files).

A byte that is not UTF-8 never fails a whole file: it is kept as a surrogate escape and the ingest
step rejects that row, with its file and line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from components.core.contract import ContractError, make_labels
from components.core.taxonomy import SURFACES

FORMATS = ("csv", "tsv", "paired")

# --------------------------------------------------------------------------- the table


class SourceTableError(ValueError):
    """external_sources.yaml is malformed; the message names the source and the key."""


@cache
def _raw_table() -> dict:
    text = resources.files("components").joinpath("resources/external_sources.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def load_sources() -> dict[str, dict]:
    """The mapping table, validated: {key: spec}, in table order."""
    table = _raw_table().get("sources") or {}
    out = {}
    for key, spec in table.items():
        out[key] = check_spec(key, spec)
    return out


def check_spec(key: str, spec: dict) -> dict:
    """Validate one source entry and return a normalised copy (mapping keys as strings)."""
    def fail(msg: str) -> None:
        raise SourceTableError(f"external_sources.yaml: source {key!r}: {msg}")

    spec = dict(spec)
    spec["key"] = key
    for req in ("folder", "files", "format", "mapping", "surface", "strip_urls"):
        if req not in spec:
            fail(f"missing {req!r}")
    if spec["format"] not in FORMATS:
        fail(f"format {spec['format']!r} is not one of {FORMATS}")
    if spec["surface"] not in SURFACES:
        fail(f"surface {spec['surface']!r} is not one of {SURFACES}")
    if not isinstance(spec["strip_urls"], bool):
        fail("strip_urls must be true or false")
    if not spec["files"]:
        fail("files is empty")
    if spec["format"] == "paired":
        for f in spec["files"]:
            if not isinstance(f, dict) or set(f) != {"text", "labels"}:
                fail("paired files are listed as {text: ..., labels: ...}")
    else:
        if not all(isinstance(f, str) for f in spec["files"]):
            fail("csv/tsv files are listed as plain file names")
        if not spec.get("text") or not spec.get("label"):
            fail("csv/tsv sources need `text` (list of columns) and `label` (a column)")
        if isinstance(spec["text"], str):
            spec["text"] = [spec["text"]]
    mapping = {}
    for raw, labels in (spec["mapping"] or {}).items():
        if labels is None:
            labels = []
        try:
            make_labels(labels)
        except ContractError as exc:
            fail(f"mapping {raw!r}: {exc}")
        mapping[str(raw).strip()] = list(labels)
    if not mapping:
        fail("mapping is empty")
    spec["mapping"] = mapping
    spec.setdefault("join", " ")
    return spec


def data_files(spec: dict) -> list[str]:
    """The data files of a source, as the table lists them."""
    if spec["format"] == "paired":
        return [name for f in spec["files"] for name in (f["text"], f["labels"])]
    return list(spec["files"])


# --------------------------------------------------------------------------- readers


@dataclass
class Row:
    """One data row of a public set, where it was read, and why it is unusable (``error``), if it is."""

    index: int  # 0-based over every data row of the source, across its files, in file order
    file: str
    line: int  # 1-based line in `file` where the row starts
    text: str
    label: str
    error: str | None = None


def _read_delimited(spec: dict, folder: Path, start: int) -> list[Row]:
    rows: list[Row] = []
    index = start
    delimiter = "\t" if spec["format"] == "tsv" else ","
    # SMSSpamCollection-style TSV has bare quotes inside texts: no quoting at all.
    quoting = csv.QUOTE_NONE if spec["format"] == "tsv" else csv.QUOTE_MINIMAL
    for name in spec["files"]:
        path = folder / name
        # A byte that is not UTF-8 is kept as a surrogate escape: its row is rejected, not the file.
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
            header = next(reader, None)
            if header is None:
                continue
            header = [h.strip() for h in header]
            wanted = [*spec["text"], spec["label"]]
            absent = [c for c in wanted if c not in header]
            if absent:
                raise SourceTableError(
                    f"{path}: no column(s) {absent}; the file has {header}. "
                    f"Fix `text`/`label` for source {spec['key']!r} in external_sources.yaml"
                )
            text_idx = [header.index(c) for c in spec["text"]]
            label_idx = header.index(spec["label"])
            need = max([*text_idx, label_idx]) + 1
            while True:
                line = reader.line_num + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                if not fields or all(not f.strip() for f in fields):
                    continue
                if len(fields) < need:
                    rows.append(Row(index, str(path), line, "", "",
                                     f"row has {len(fields)} field(s), the header has {len(header)}"))
                else:
                    text = spec["join"].join(fields[i] for i in text_idx)
                    rows.append(Row(index, str(path), line, text, fields[label_idx].strip()))
                index += 1
    return rows


def _read_lines(path: Path) -> list[str]:
    # Split on "\n" only: str.splitlines() would also split on U+2028 etc. inside a tweet.
    content = path.read_text("utf-8", errors="surrogateescape")  # bad bytes: that row is rejected
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _read_paired(spec: dict, folder: Path, start: int) -> list[Row]:
    rows: list[Row] = []
    index = start
    for pair in spec["files"]:
        text_path, label_path = folder / pair["text"], folder / pair["labels"]
        texts, labels = _read_lines(text_path), _read_lines(label_path)
        if len(texts) != len(labels):
            raise SourceTableError(
                f"{text_path} has {len(texts)} lines but {label_path} has {len(labels)}: "
                "the files are out of step; restore both from the same upstream copy"
            )
        for i, (text, label) in enumerate(zip(texts, labels)):
            rows.append(Row(index, str(text_path), i + 1, text, label.strip()))
            index += 1
    return rows


def read_rows(spec: dict, folder: Path) -> list[Row]:
    """Every data row of a source's files, in file order; a row that cannot be read carries its error."""
    if spec["format"] == "paired":
        return _read_paired(spec, folder, 0)
    return _read_delimited(spec, folder, 0)


def load_source(spec: dict, folder: Path) -> list[tuple[str, str]]:
    """(raw text, raw label value) for every well-formed row of one source, in file order."""
    spec = check_spec(spec.get("key", "?"), spec)
    return [(r.text, r.label) for r in read_rows(spec, Path(folder)) if r.error is None]
