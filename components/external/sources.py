"""The public labelled sets: the mapping table (``resources/external_sources.yaml``) and the readers
of their files (CSV, TSV, paired text/label files), and ``map_labels``, which applies an entry's
mapping to a row: one label column, a composite key over several columns with fallbacks, or
several 0/1 label columns (multi-label).

A byte that is not UTF-8 never fails a whole file: it is kept as a surrogate escape and the ingest
step rejects that row, with its file and line.
"""

from __future__ import annotations

import csv
import re
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


# Every key an entry may hold; any other key is a typo and fails with the source's name.
KNOWN_KEYS = frozenset({
    "folder", "files", "format", "text", "join", "label", "mapping", "label_columns", "surface",
    "strip_urls", "strip_html", "eval_group", "licence", "commit", "commit_files",
})
KEY_SEP = "|"  # joins the values of a composite `label` ("Fraud|account alert")
_GROUP_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def check_spec(key: str, spec: dict) -> dict:
    """Validate one source entry and return a normalised copy.

    In the copy ``text`` is a list of columns, ``mapping`` keys are stripped strings (composite
    keys re-joined with ``|``), ``label_columns`` is ``{column: [labels]}``, and ``join``,
    ``strip_html`` and ``eval_group`` hold their defaults where absent. Checking a checked copy
    again returns an equal copy.
    """
    def fail(msg: str) -> None:
        raise SourceTableError(f"external_sources.yaml: source {key!r}: {msg}")

    if not isinstance(spec, dict):
        fail("an entry is a mapping of keys (folder, files, format, ...)")
    spec = {k: v for k, v in spec.items() if k != "key"}
    unknown = sorted(set(spec) - KNOWN_KEYS)
    if unknown:
        fail(f"unknown key(s) {unknown}; valid keys: {sorted(KNOWN_KEYS)}")
    spec["key"] = key
    for req in ("folder", "files", "format", "surface", "strip_urls"):
        if req not in spec:
            fail(f"missing {req!r}")
    if spec["format"] not in FORMATS:
        fail(f"format {spec['format']!r} is not one of {FORMATS}")
    if spec["surface"] not in SURFACES:
        fail(f"surface {spec['surface']!r} is not one of {SURFACES}")
    for flag in ("strip_urls", "strip_html"):
        if not isinstance(spec.get(flag, False), bool):
            fail(f"{flag} must be true or false")
    spec.setdefault("strip_html", False)
    spec.setdefault("join", " ")
    group = spec.setdefault("eval_group", key)
    if not isinstance(group, str) or not _GROUP_RE.match(group):
        fail(f"eval_group {group!r} must be a lower-case name (letters, digits, _), e.g. email")
    if not spec["files"]:
        fail("files is empty")
    if spec["format"] == "paired":
        for f in spec["files"]:
            if not isinstance(f, dict) or set(f) != {"text", "labels"}:
                fail("paired files are listed as {text: ..., labels: ...}")
        if "label_columns" in spec or "label" in spec:
            fail("paired sources have one label per line: no `label_columns`, no `label`")
    else:
        if not all(isinstance(f, str) for f in spec["files"]):
            fail("csv/tsv files are listed as plain file names")
        if not spec.get("text"):
            fail("csv/tsv sources need `text` (list of columns)")
        if isinstance(spec["text"], str):
            spec["text"] = [spec["text"]]
        if "label_columns" in spec:
            if "label" in spec or "mapping" in spec:
                fail("`label_columns` replaces `label` + `mapping`: give one or the other")
        elif not spec.get("label"):
            fail("csv/tsv sources need `label` (a column, or a list of columns for composite keys) "
                 "or `label_columns`")
        if "label" in spec and not isinstance(spec["label"], str) and (
                not isinstance(spec["label"], list) or len(spec["label"]) != len(set(spec["label"]))
                or not all(isinstance(c, str) and c for c in spec["label"])):
            fail(f"label {spec['label']!r} must be a column name or a list of distinct column names")

    def checked(where: str, labels) -> list[str]:
        labels = [] if labels is None else labels
        if not isinstance(labels, list):
            fail(f"{where}: labels are a list, e.g. [spam] or [] for no label; got {labels!r}")
        try:
            make_labels(labels)
        except ContractError as exc:
            fail(f"{where}: {exc}")
        return list(labels)

    if "label_columns" in spec:
        cols = spec["label_columns"]
        if not isinstance(cols, dict) or not cols:
            fail("label_columns must map each 0/1 column to its labels, e.g. {hd: [hate_speech]}")
        spec["label_columns"] = {str(c).strip(): checked(f"label_columns {c!r}", v) for c, v in cols.items()}
        return spec

    mapping = {}
    width = len(spec["label"]) if isinstance(spec.get("label"), list) else 1  # paired: one value a line
    for raw, labels in (spec.get("mapping") or {}).items():
        parts = [p.strip() for p in str(raw).split(KEY_SEP)]
        if len(parts) > width:
            fail(f"mapping {raw!r} has {len(parts)} parts but `label` names {width} column(s) {spec['label']}")
        if width > 1 and any(not p for p in parts):
            fail(f"mapping {raw!r}: a composite key has no empty part")
        mapping[KEY_SEP.join(parts)] = checked(f"mapping {raw!r}", labels)
    if not mapping:
        fail("mapping is empty")
    spec["mapping"] = mapping
    return spec


def map_labels(spec: dict, row: Row) -> list[str] | None:
    """The labels of a row by the table; None when its raw value is not in the mapping (dropped).

    ``label_columns``: the union, in table order, of the labels of every column that holds 1.
    ``label``/``mapping``: the longest key made of the row's leading label values wins, so with
    ``label: [category, subcategory]`` the key "Fraud|delivery" beats the fallback "Fraud".
    """
    if spec.get("label_columns"):
        out: list[str] = []
        for col, value in zip(spec["label_columns"], row.values):
            if value == "1":
                out += [lab for lab in spec["label_columns"][col] if lab not in out]
        return out
    for n in range(len(row.values), 0, -1):
        labels = spec["mapping"].get(KEY_SEP.join(row.values[:n]))
        if labels is not None:
            return list(labels)
    return None


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
    label: str  # the raw label as recorded (metadata.original_label): "2", "Fraud|delivery", "hd+vo", "none"
    error: str | None = None
    values: tuple[str, ...] = ()  # the stripped values of the label column(s), in table order


def label_columns_of(spec: dict) -> list[str]:
    """The columns a csv/tsv row's labels are read from: `label` (one or composite) or `label_columns`."""
    if spec.get("label_columns"):
        return list(spec["label_columns"])
    return [spec["label"]] if isinstance(spec["label"], str) else list(spec["label"])


def _label_of(spec: dict, values: tuple[str, ...]) -> tuple[str, str | None]:
    """(the raw label as recorded, why the values are unusable or None)."""
    if not spec.get("label_columns"):
        return KEY_SEP.join(values), None
    bad = [f"{c}={v!r}" for c, v in zip(spec["label_columns"], values) if v not in ("0", "1")]
    if bad:
        return "", f"label column(s) must hold 0 or 1: {', '.join(bad)}"
    return "+".join(c for c, v in zip(spec["label_columns"], values) if v == "1") or "none", None


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
            label_cols = label_columns_of(spec)
            absent = [c for c in [*spec["text"], *label_cols] if c not in header]
            if absent:
                raise SourceTableError(
                    f"{path}: no column(s) {absent}; the file has {header}. "
                    f"Fix `text`/`label`/`label_columns` for source {spec['key']!r} in external_sources.yaml"
                )
            text_idx = [header.index(c) for c in spec["text"]]
            label_idx = [header.index(c) for c in label_cols]
            need = max([*text_idx, *label_idx]) + 1
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
                    values = tuple(fields[i].strip() for i in label_idx)
                    label, error = _label_of(spec, values)
                    rows.append(Row(index, str(path), line, text, label, error, values))
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
            rows.append(Row(index, str(text_path), i + 1, text, label.strip(), values=(label.strip(),)))
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
