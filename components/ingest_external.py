"""Ingest the public labelled sets into contract records.

Every mapping from a public set's labels to the 18 categories lives in one table,
``resources/external_sources.yaml`` (read by ``components/external/sources.py`` with the files'
readers; text cleaning in ``components/text/social.py``); this module applies the table, cuts
each text to ``IngestParams.max_chars``, caps each source with a balanced deterministic sample,
rejects rows whose text is not valid UTF-8 or has no visible character, or whose label columns
are malformed (with their file and line), and writes records. Every record carries its source
(``metadata.source = external:<key>``) and its evaluation group (``metadata.eval_group``).

A set found in none of ``IngestParams.roots`` is skipped and reported, so the pipeline runs
(with an empty output) on a machine that has no copy of the data.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from components.core.contract import (
    Record,
    RejectedRecord,
    TooManyRejectsError,
    make_labels,
    text_problem,
    utf8_problem,
    write_jsonl,
    write_records,
)
from components.core.params import IngestParams
from components.core.taxonomy import split_prefix
# The table, the readers and the text cleaning, also reached from here (tests, moderation_env/build_items.py).
from components.external.sources import (  # noqa: F401
    FORMATS,
    Row,
    SourceTableError,
    check_spec,
    data_files,
    load_source,
    load_sources,
    map_labels,
    read_rows,
)
from components.external import SOURCE_PREFIX
from components.text.social import cap_chars, normalize_social_text

log = logging.getLogger(__name__)

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


def _cap_sample(candidates: list[tuple[Row, tuple[str, ...]]], cap: int | None, seed: int, key: str):
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
        absent = [f for f in data_files(spec) if not (folder / f).is_file()]
        if absent:
            log.warning("%s: %s lacks %s; trying the next root", spec["key"], folder, absent)
            continue
        return root, folder
    return None, None


def _to_record(key: str, spec: dict, row: Row, text: str, labels: list[str], chars: int) -> Record:
    rid = f"{key}-{row.index}"
    meta = {
        "source": f"{SOURCE_PREFIX}{key}",
        "category": labels[0] if labels else None,
        "group": rid,
        "audience": "GENERAL",
        "surface": spec["surface"],
        "original_label": str(row.label),
        "eval_group": spec["eval_group"],
    }
    if chars > len(text):
        meta["chars_before_cap"] = chars  # the normalised text was cut to ingest.max_chars
    return Record(id=rid, text=text, labels=make_labels(labels), metadata=meta)


def _check_text(text: str) -> str | None:
    """Why a normalised text cannot become a record, or None."""
    if not text:
        return "text is empty after normalisation"
    problem = text_problem(text)
    if problem:
        return problem
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
        rows = read_rows(spec, folder)
        dropped: Counter[str] = Counter()
        src_rejects: list[RejectedRecord] = []
        candidates: list[tuple[Row, tuple[str, ...], str, int]] = []
        for row in rows:
            if row.error is not None:
                src_rejects.append(RejectedRecord(row.file, row.line, f"{key} row {row.index}: {row.error}", row.text))
                continue
            if problem := utf8_problem(row.text):
                src_rejects.append(RejectedRecord(row.file, row.line, f"{key} row {row.index}: text {problem}",
                                                  row.text))
                continue
            labels = map_labels(spec, row)
            if labels is None:
                dropped[row.label] += 1
                continue
            full = normalize_social_text(row.text, strip_urls=spec["strip_urls"], strip_html=spec["strip_html"])
            text = cap_chars(full, params.max_chars)
            problem = _check_text(text)
            if problem:
                src_rejects.append(RejectedRecord(
                    row.file, row.line, f"{key} row {row.index} (label {row.label!r}): {problem}", row.text))
                continue
            candidates.append((row, tuple(labels), text, len(full)))

        cap = params.caps.get(key)
        sampled = _cap_sample([(r, lab) for r, lab, _, _ in candidates], cap, params.seed, key)
        text_by_index = {r.index: (t, n) for r, _, t, n in candidates}  # (capped text, characters before the cap)
        kept = [_to_record(key, spec, r, text_by_index[r.index][0], list(lab), text_by_index[r.index][1])
                for r, lab in sampled]

        label_counts: Counter[str] = Counter()
        for rec in kept:
            label_counts.update(rec.positive_labels())
        original = Counter(rec.metadata["original_label"] for rec in kept)
        stats["sources"][key] = {
            "root": str(root),
            "eval_group": spec["eval_group"],
            "folder": str(folder),
            "files": data_files(spec),
            "rows_read": len(rows),
            "dropped": dict(sorted(dropped.items())),
            "dropped_total": sum(dropped.values()),
            "rejected": len(src_rejects),
            "eligible": len(candidates),
            "cap": cap,
            "kept": len(kept),
            "negatives": sum(1 for rec in kept if not any(rec.labels.values())),
            "truncated": sum(1 for rec in kept if "chars_before_cap" in rec.metadata),
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
        "truncated": sum(s["truncated"] for s in per),
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
