"""The merge step: union of every source, de-duplication, enrichment, prefixes, split.

Order of work, and why:
1. Read every input through the contract; bad lines go to the rejects file with reasons.
2. Exact duplicates (same context, same normalised text) keep the first copy, by source
   priority: reviewed examples, then real data, then generated. A copy with other labels
   is a conflict: counted, and the first copy's labels win.
3. Near-duplicates with the same labels and audience from a *different* group are removed:
   they would let the model see a test example in training. A perturbation shares its
   source's group, so it is kept beside it on purpose.
4. Enrichment rules (data) add labels, e.g. contact_info wherever a phone number appears.
5. The context prefix is applied from each record's audience and surface.
6. A multi-label stratified split over *groups* (iterative stratification), so every group
   sits on one side: no perturbation of a test example is ever trained on.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

from components.core.contract import ContractError, Record, RejectedRecord, read_records, write_jsonl, write_records
from components.text.dedup import NearDuplicateIndex, normalize
from components.text.enrich import enrich
from components.core.params import MergeParams, Paths
from components.core.taxonomy import LABELS, ContextPrefix, split_prefix

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Source:
    """One input of the merge: a name (for statistics), its files, and its priority (lower wins)."""

    name: str
    files: tuple[Path, ...]
    priority: int


def jsonl_files(path: Path) -> tuple[Path, ...]:
    """A JSONL file, or the JSONL files of a folder (sorted; files starting with '_' skipped)."""
    path = Path(path)
    if path.is_dir():
        return tuple(sorted(p for p in path.glob("*.jsonl") if not p.name.startswith("_")))
    return (path,) if path.exists() else ()


class SplitError(ValueError):
    pass


def pipeline_sources(paths: Paths, root: Path) -> list[Source]:
    """The merge step's inputs from ``params.paths``, with their priority (lower wins a duplicate):
    people's reviews (``incoming/``), then real data, then generated text, then perturbations."""
    return [
        Source("incoming", jsonl_files(root / paths.incoming), 0),
        Source("external", jsonl_files(root / paths.external), 1),
        Source("positives", jsonl_files(root / paths.positives), 2),
        Source("negatives", jsonl_files(root / paths.negatives), 2),
        Source("innocuous", jsonl_files(root / paths.innocuous), 2),
        Source("perturbations", jsonl_files(root / paths.perturbations), 3),
    ]


def _read_all(sources: list[Source], params: MergeParams) -> tuple[list[tuple[int, Record]], list[RejectedRecord], dict]:
    rows: list[tuple[int, Record]] = []
    rejects: list[RejectedRecord] = []
    per_file = {}
    for source in sources:
        for path in source.files:
            result = read_records(path, max_reject_fraction=1.0)
            rejects += result.rejects
            per_file[str(path)] = {"records": len(result.records), "rejects": len(result.rejects)}
            rows += [(source.priority, r) for r in result.records]
    return rows, rejects, per_file


def _with_context(record: Record, params: MergeParams) -> Record:
    """Prefix the text from metadata audience/surface; a text that has a prefix keeps it."""
    prefix, raw = split_prefix(record.text)
    if prefix is None:
        prefix = ContextPrefix(record.metadata.get("audience") or params.default_audience,
                               record.metadata.get("surface") or params.default_surface)
    meta = {**record.metadata, "audience": prefix.audience, "surface": prefix.surface, "group": record.group}
    return Record(record.id, prefix.apply(raw), dict(record.labels), meta)


def deduplicate(records: list[Record], threshold: float) -> tuple[list[Record], dict]:
    """Exact then near-duplicate removal over records already in priority order."""
    kept: list[Record] = []
    seen_exact: dict[tuple[str, str], Record] = {}
    near_indexes: dict[tuple, NearDuplicateIndex] = {}
    kept_by_key: dict[str, Record] = {}
    stats = Counter()
    for record in records:
        prefix, _ = split_prefix(record.text)
        key = (prefix.render() if prefix else "", normalize(record.text))
        first = seen_exact.get(key)
        if first is not None and first.group != record.group:
            stats["exact_duplicates_removed"] += 1
            if first.labels != record.labels:
                stats["label_conflicts"] += 1
            continue
        seen_exact.setdefault(key, record)
        bucket = (prefix.audience if prefix else "", tuple(record.label_vector()))
        index = near_indexes.setdefault(bucket, NearDuplicateIndex(threshold))
        matches, minhash = index.query(record.text)
        if any(kept_by_key[m].group != record.group for m in matches):
            stats["near_duplicates_removed"] += 1
            continue
        index.insert(record.id, minhash)
        kept_by_key[record.id] = record
        kept.append(record)
    return kept, dict(stats)



def split_groups(records: list[Record], params: MergeParams) -> dict[str, list[Record]]:
    """Iterative multi-label stratification over groups, stratified by label, 'no label' and source."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[r.group].append(r)
    keys = sorted(groups)
    sources = sorted({_source_family(r) for r in records})
    columns = len(LABELS) + 1 + len(sources)
    y = np.zeros((len(keys), columns), dtype=np.int8)
    for i, key in enumerate(keys):
        for r in groups[key]:
            vec = r.label_vector()
            y[i, : len(LABELS)] |= np.array(vec, dtype=np.int8)
            if not any(vec):
                y[i, len(LABELS)] = 1
            y[i, len(LABELS) + 1 + sources.index(_source_family(r))] = 1
    x = np.zeros((len(keys), 1))
    first = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=params.test_fraction, random_state=params.seed)
    rest_idx, test_idx = next(first.split(x, y))
    val_share = params.val_fraction / (1 - params.test_fraction)
    second = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=val_share, random_state=params.seed)
    train_sub, val_sub = next(second.split(x[rest_idx], y[rest_idx]))
    assignment = {"train": rest_idx[train_sub], "val": rest_idx[val_sub], "test": test_idx}
    return {
        name: sorted((r for i in idx for r in groups[keys[i]]), key=lambda r: r.id)
        for name, idx in assignment.items()
    }


def _source_family(record: Record) -> str:
    """'external:davidson' stays itself; generated text is grouped by what made it."""
    return record.source


def split_statistics(splits: dict[str, list[Record]]) -> dict:
    stats: dict = {"records": {s: len(rs) for s, rs in splits.items()}}
    stats["per_category"] = {
        c: {s: sum(r.labels[c] for r in rs) for s, rs in splits.items()} for c in LABELS
    }
    stats["no_label"] = {s: sum(not any(r.label_vector()) for r in rs) for s, rs in splits.items()}
    stats["per_source"] = {s: dict(sorted(Counter(r.source for r in rs).items())) for s, rs in splits.items()}
    stats["label_cardinality"] = {
        s: round(float(np.mean([sum(r.label_vector()) for r in rs])) if rs else 0.0, 4) for s, rs in splits.items()
    }
    stats["multi_label_records"] = {s: sum(sum(r.label_vector()) > 1 for r in rs) for s, rs in splits.items()}
    owners = defaultdict(set)
    for s, rs in splits.items():
        for r in rs:
            owners[r.group].add(s)
    stats["groups"] = {s: len({r.group for r in rs}) for s, rs in splits.items()}
    stats["groups_across_splits"] = sum(len(v) > 1 for v in owners.values())
    return stats


def merge(sources: list[Source], params: MergeParams, out_dir: Path, rejects_path: Path) -> dict:
    """Read, de-duplicate, enrich, prefix and split; write train/val/test JSONL; return statistics."""
    rows, rejects, per_file = _read_all(sources, params)
    write_jsonl(rejects_path, (r.to_dict() for r in rejects))
    total = len(rows) + len(rejects)
    if total == 0:
        raise ContractError("merge: no input records; run the generate steps first (content-moderation run)")
    if rejects and len(rejects) / total > params.max_reject_fraction:
        raise ContractError(
            f"merge: {len(rejects)} of {total} input lines break the data contract "
            f"(> {params.max_reject_fraction:.1%}); see {rejects_path}. First: {rejects[0].path} line "
            f"{rejects[0].line}: {rejects[0].reason}"
        )
    rows.sort(key=lambda pr: pr[0])  # stable: file order kept within a priority
    records = [_with_context(r, params) for _, r in rows]

    enriched = Counter()
    for r in records:
        r.labels, fired = enrich(r.text, r.labels)
        for name in fired:
            enriched[name] += 1
            enriched[f"{name}@{r.source}"] += 1

    kept, dedup_stats = deduplicate(records, params.near_duplicate_threshold)
    splits = split_groups(kept, params)
    stats = split_statistics(splits)
    if stats["groups_across_splits"]:
        raise SplitError(f"{stats['groups_across_splits']} groups ended up in more than one split")
    missing = [(c, s) for c in LABELS for s in SPLITS if stats["per_category"][c][s] == 0]
    if missing:
        raise SplitError(
            f"categories absent from a split: {missing}; generate more examples of them or raise "
            "merge.val_fraction / merge.test_fraction"
        )
    for name, rs in splits.items():
        write_records(Path(out_dir) / f"{name}.jsonl", rs)
    return {
        "inputs": {"records": len(rows), "rejects": len(rejects), "per_file": per_file},
        "dedup": {"exact_duplicates_removed": 0, "near_duplicates_removed": 0, "label_conflicts": 0, **dedup_stats},
        "enrichment": dict(sorted(enriched.items())),
        **stats,
    }
