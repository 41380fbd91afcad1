"""Ingest the public labelled sets into contract records.

Every mapping from a public set's labels to the 18 categories lives in one table,
``resources/external_sources.yaml``; this module only reads files, normalises text, applies
the table, caps each source with a balanced deterministic sample, and writes records.

A set found in none of ``IngestParams.roots`` is skipped and reported, so the pipeline runs
(with an empty output) on a machine that has no copy of the data.
"""

from __future__ import annotations

import csv
import html
import logging
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import ftfy
import yaml

from components.core.contract import (
    ContractError,
    Record,
    RejectedRecord,
    TooManyRejectsError,
    make_labels,
    write_jsonl,
    write_records,
)
from components.core.params import IngestParams
from components.core.taxonomy import SURFACES, split_prefix

log = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "paired")

# --------------------------------------------------------------------------- normalisation

# "RT @name:" / "RT @name" anywhere (the retweeted author, not someone addressed).
_RT_MENTION_RE = re.compile(r"(?<!\w)RT\s*@\w+:?")
# A leading bare "RT" / "RT:" marker.
_RT_LEADING_RE = re.compile(r"^\s*RT(?::|\s+|$)")
# @mentions (also ".@name"); the look-behind keeps e-mail addresses (name@host) intact.
_MENTION_RE = re.compile(r"(?<![\w@])@\w+")
# Markdown links [text](url): keep the text.
_MD_LINK_RE = re.compile(r"\[([^\]\n]*)\]\(\s*(?:https?://|www\.)[^)\s]*\s*\)", re.IGNORECASE)
_URL_RE = re.compile(r"(?:\bhttps?://|\bwww\.)\S*", re.IGNORECASE)
# Private-use code points (old carrier emoji such as Davidson's &#57361;) render as nothing.
_PRIVATE_USE_RE = re.compile("[\ue000-\uf8ff]")
_WS_RE = re.compile(r"\s+")


def _normalise_once(text: str, strip_urls: bool) -> str:
    text = ftfy.fix_text(text)
    for _ in range(3):  # "&amp;amp;" is common in scraped tweets; unescape to a fixed point
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _PRIVATE_USE_RE.sub("", text)
    text = _RT_MENTION_RE.sub(" ", text)
    text = _RT_LEADING_RE.sub(" ", text)
    text = _MENTION_RE.sub("@user", text)
    if strip_urls:
        text = _MD_LINK_RE.sub(r"\1", text)
        text = _URL_RE.sub(" ", text)
    return _WS_RE.sub(" ", text).strip()


def normalize_social_text(text: str, *, strip_urls: bool) -> str:
    """Clean scraped social text consistently across sources; idempotent.

    Fixes mojibake (ftfy), unescapes HTML entities, drops retweet markers ("RT @name:" and a
    leading "RT"), replaces every @mention with "@user", strips URLs when asked (tweets: t.co
    links are truncation artefacts; never for SMS, where links are real contact details),
    collapses whitespace. Applied to a fixed point, so normalising twice changes nothing.
    """
    for _ in range(5):
        cleaned = _normalise_once(text, strip_urls)
        if cleaned == text:
            break
        text = cleaned
    return text


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


def _data_files(spec: dict) -> list[str]:
    if spec["format"] == "paired":
        return [name for f in spec["files"] for name in (f["text"], f["labels"])]
    return list(spec["files"])


# --------------------------------------------------------------------------- readers


@dataclass
class _Row:
    index: int  # 0-based over every data row of the source, across its files, in file order
    file: str
    line: int  # 1-based line in `file` where the row starts
    text: str
    label: str
    error: str | None = None


def _read_delimited(spec: dict, folder: Path, start: int) -> list[_Row]:
    rows: list[_Row] = []
    index = start
    delimiter = "\t" if spec["format"] == "tsv" else ","
    # SMSSpamCollection-style TSV has bare quotes inside texts: no quoting at all.
    quoting = csv.QUOTE_NONE if spec["format"] == "tsv" else csv.QUOTE_MINIMAL
    for name in spec["files"]:
        path = folder / name
        with open(path, encoding="utf-8", newline="") as fh:
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
                    rows.append(_Row(index, str(path), line, "", "",
                                     f"row has {len(fields)} field(s), the header has {len(header)}"))
                else:
                    text = spec["join"].join(fields[i] for i in text_idx)
                    rows.append(_Row(index, str(path), line, text, fields[label_idx].strip()))
                index += 1
    return rows


def _read_lines(path: Path) -> list[str]:
    # Split on "\n" only: str.splitlines() would also split on U+2028 etc. inside a tweet.
    content = path.read_text("utf-8")
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _read_paired(spec: dict, folder: Path, start: int) -> list[_Row]:
    rows: list[_Row] = []
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
            rows.append(_Row(index, str(text_path), i + 1, text, label.strip()))
            index += 1
    return rows


def _read_rows(spec: dict, folder: Path) -> list[_Row]:
    if spec["format"] == "paired":
        return _read_paired(spec, folder, 0)
    return _read_delimited(spec, folder, 0)


def load_source(spec: dict, folder: Path) -> list[tuple[str, str]]:
    """(raw text, raw label value) for every well-formed row of one source, in file order."""
    spec = check_spec(spec.get("key", "?"), spec)
    return [(r.text, r.label) for r in _read_rows(spec, Path(folder)) if r.error is None]


# --------------------------------------------------------------------------- caps


def _allocate(sizes: dict[Any, int], cap: int) -> dict[Any, int]:
    """How many rows each class gets under ``cap``: as even as possible, leftovers to larger classes.

    Each class gets up to ceil(cap / n_classes); capacity a small class cannot use goes to the
    classes with the most rows left (ties by class order), and the total never exceeds ``cap``.
    """
    alloc = {c: 0 for c in sizes}
    remaining = min(cap, sum(sizes.values()))
    active = [c for c in sizes if sizes[c] > 0]
    while remaining > 0 and active:
        share = remaining // len(active)
        if share == 0:
            order = sorted(active, key=lambda c: -(sizes[c] - alloc[c]))  # stable: class order on ties
            for c in order[:remaining]:
                alloc[c] += 1
            break
        for c in active:
            take = min(share, sizes[c] - alloc[c])
            alloc[c] += take
            remaining -= take
        active = [c for c in active if alloc[c] < sizes[c]]
    return alloc


def _cap_sample(candidates: list[tuple[_Row, tuple[str, ...]]], cap: int | None, seed: int, key: str):
    if cap is None or len(candidates) <= cap:
        return candidates
    by_class: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for pos, (_, labels) in enumerate(candidates):
        by_class[labels].append(pos)
    classes = sorted(by_class)  # deterministic order: () first, then by label names
    alloc = _allocate({c: len(by_class[c]) for c in classes}, cap)
    chosen: list[int] = []
    for c in classes:
        rng = random.Random(f"{seed}:{key}:{'+'.join(c) or 'none'}")
        chosen.extend(rng.sample(by_class[c], alloc[c]))
    return [candidates[pos] for pos in sorted(chosen)]


# --------------------------------------------------------------------------- ingest


def _resolve_roots(params: IngestParams, project_root: Path) -> list[Path]:
    roots = []
    for r in params.roots:
        p = Path(r).expanduser()
        roots.append((p if p.is_absolute() else Path(project_root) / p).resolve())
    return roots


def _find_folder(spec: dict, roots: list[Path]) -> tuple[Path | None, Path | None]:
    """First root whose <folder> holds every data file of the source."""
    for root in roots:
        folder = root / spec["folder"]
        if not folder.is_dir():
            continue
        absent = [f for f in _data_files(spec) if not (folder / f).is_file()]
        if absent:
            log.warning("%s: %s lacks %s; trying the next root", spec["key"], folder, absent)
            continue
        return root, folder
    return None, None


def _to_record(key: str, spec: dict, row: _Row, text: str, labels: list[str]) -> Record:
    rid = f"{key}-{row.index}"
    return Record(
        id=rid,
        text=text,
        labels=make_labels(labels),
        metadata={
            "source": f"external:{key}",
            "category": labels[0] if labels else None,
            "group": rid,
            "audience": "GENERAL",
            "surface": spec["surface"],
            "original_label": str(row.label),
        },
    )


def _check_text(text: str) -> str | None:
    """Why a normalised text cannot become a record, or None."""
    if not text:
        return "text is empty after normalisation"
    try:
        has_prefix = split_prefix(text)[0] is not None
    except ValueError:  # looks like a prefix but names an unknown audience/surface
        has_prefix = True
    if has_prefix:
        return "text starts with a bracketed [X][Y] tag that would be read as a context prefix"
    return None


def ingest(
    params: IngestParams,
    project_root: Path,
    *,
    sources: dict[str, dict] | None = None,
) -> tuple[list[Record], list[RejectedRecord], dict]:
    """Read every public set found under ``params.roots`` and map it through the table.

    Returns (records, rejects, stats). ``sources`` overrides the table (default: the YAML).
    """
    started = time.perf_counter()
    table = load_sources() if sources is None else {k: check_spec(k, v) for k, v in sources.items()}
    unknown_caps = sorted(set(params.caps) - set(table))
    if unknown_caps:
        raise SourceTableError(
            f"ingest.caps names unknown source(s) {unknown_caps}; valid: {', '.join(table)}"
        )
    roots = _resolve_roots(params, Path(project_root))
    records: list[Record] = []
    rejects: list[RejectedRecord] = []
    stats: dict[str, Any] = {
        "roots_searched": [str(r) for r in roots],
        "sources": {},
        "missing": [],
    }

    for key, spec in table.items():
        root, folder = _find_folder(spec, roots)
        if folder is None:
            stats["missing"].append(key)
            log.info("%s: folder %r not found under any root; skipped", key, spec["folder"])
            continue
        t0 = time.perf_counter()
        rows = _read_rows(spec, folder)
        dropped: Counter[str] = Counter()
        src_rejects: list[RejectedRecord] = []
        candidates: list[tuple[_Row, tuple[str, ...], str]] = []
        for row in rows:
            if row.error is not None:
                src_rejects.append(RejectedRecord(row.file, row.line, f"{key} row {row.index}: {row.error}", row.text))
                continue
            if row.label not in spec["mapping"]:
                dropped[row.label] += 1
                continue
            text = normalize_social_text(row.text, strip_urls=spec["strip_urls"])
            problem = _check_text(text)
            if problem:
                src_rejects.append(RejectedRecord(
                    row.file, row.line, f"{key} row {row.index} (label {row.label!r}): {problem}", row.text))
                continue
            candidates.append((row, tuple(spec["mapping"][row.label]), text))

        cap = params.caps.get(key)
        sampled = _cap_sample([(r, lab) for r, lab, _ in candidates], cap, params.seed, key)
        text_by_index = {r.index: t for r, _, t in candidates}
        kept = [_to_record(key, spec, r, text_by_index[r.index], list(lab)) for r, lab in sampled]

        label_counts: Counter[str] = Counter()
        for rec in kept:
            label_counts.update(rec.positive_labels())
        original = Counter(rec.metadata["original_label"] for rec in kept)
        stats["sources"][key] = {
            "root": str(root),
            "folder": str(folder),
            "files": _data_files(spec),
            "rows_read": len(rows),
            "dropped": dict(sorted(dropped.items())),
            "dropped_total": sum(dropped.values()),
            "rejected": len(src_rejects),
            "eligible": len(candidates),
            "cap": cap,
            "kept": len(kept),
            "negatives": sum(1 for rec in kept if not any(rec.labels.values())),
            "labels": dict(sorted(label_counts.items())),
            "original_labels": dict(sorted(original.items())),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        log.info("%s: %d rows from %s, kept %d, dropped %d, rejected %d",
                 key, len(rows), folder, len(kept), sum(dropped.values()), len(src_rejects))
        records.extend(kept)
        rejects.extend(src_rejects)

    per = stats["sources"].values()
    total_labels: Counter[str] = Counter()
    for s in per:
        total_labels.update(s["labels"])
    stats["totals"] = {
        "sources_found": len(stats["sources"]),
        "sources_missing": len(stats["missing"]),
        "rows_read": sum(s["rows_read"] for s in per),
        "dropped": sum(s["dropped_total"] for s in per),
        "rejected": sum(s["rejected"] for s in per),
        "kept": len(records),
        "negatives": sum(s["negatives"] for s in per),
        "labels": dict(sorted(total_labels.items())),
    }
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return records, rejects, stats


def run(params: IngestParams, project_root: Path, out_path: Path, rejects_path: Path) -> dict:
    """Ingest, write records and rejects atomically, enforce the reject budget; return stats."""
    records, rejects, stats = ingest(params, project_root)
    if not stats["sources"]:
        log.warning(
            "no public labelled set found under any of %s; writing an empty %s and continuing "
            "without real data (add the sets under one of ingest.roots in params.yaml to use them)",
            stats["roots_searched"], out_path,
        )
    write_jsonl(rejects_path, (r.to_dict() for r in rejects))
    over = []
    for key, s in stats["sources"].items():
        considered = s["rows_read"] - s["dropped_total"]
        frac = s["rejected"] / considered if considered else 0.0
        if s["rejected"] and frac > params.max_reject_fraction:
            over.append(f"{key}: {s['rejected']} of {considered} rows rejected ({frac:.1%}) from {s['folder']}")
    if over:
        first = rejects[0]
        raise TooManyRejectsError(
            "ingest: too many rejected rows (allowed "
            f"{params.max_reject_fraction:.1%} per source): " + "; ".join(over)
            + f". Every rejected row is listed with its file, line and reason in {rejects_path} "
            f"(first: {first.path} line {first.line}: {first.reason}). Fix or replace the source files, "
            "correct the source's columns in components/resources/external_sources.yaml, or raise "
            "ingest.max_reject_fraction in params.yaml."
        )
    n = write_records(out_path, records)
    stats["written"] = n
    stats["out_path"] = str(out_path)
    stats["rejects_path"] = str(rejects_path)
    log.info("ingest: wrote %d records to %s (%d rejects to %s)", n, out_path, len(rejects), rejects_path)
    return stats
