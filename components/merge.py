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
   Public real text (source ``external:<key>``) is split on its own, PER SOURCE: a share
   ``real_test_fraction`` of each set goes to ``real_test.jsonl`` (never trained on, never used to
   tune thresholds), the rest to train and val in the same val:train ratio as everything else, so
   val holds real text in the proportion train does. test.jsonl thus holds no public real text.
   De-duplication runs first, so no same-label near-duplicate of a real_test text is trained on.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

from components.core.contract import ContractError, Record, RejectedRecord, read_records, write_jsonl, write_records
from components.text.dedup import NearDuplicateIndex, normalize
from components.text.enrich import enrich
from components.external import SOURCE_PREFIX, eval_group, is_real
from components.quality.behaviour import shares_ngram, suite_ngrams
from components.core.params import MergeParams, Paths
from components.core.taxonomy import LABELS, ContextPrefix, split_prefix

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")  # every category must be in each of these
REAL_TEST = "real_test"  # held-out public real text: covers only what the real sets cover


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
    seen_ids: dict = {}  # ids are unique across every input: a later copy (lower priority) is a reject
    for source in sources:
        for path in source.files:
            result = read_records(path, max_reject_fraction=1.0, seen_ids=seen_ids)
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


def deduplicate(records: list[Record], threshold: float,
                hashes: dict | None = None) -> tuple[list[Record], dict]:
    """Exact then near-duplicate removal over records already in priority order; ``hashes``, when
    given, receives the MinHash of every kept record by id."""
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
        if hashes is not None:
            hashes[record.id] = minhash
        kept_by_key[record.id] = record
        kept.append(record)
    return kept, dict(stats)


def _label_matrix(groups: dict[str, list[Record]], keys: list[str], extra: int = 0) -> np.ndarray:
    """One row per group: its 18 labels (any record), a no-label column, then ``extra`` zero columns."""
    y = np.zeros((len(keys), len(LABELS) + 1 + extra), dtype=np.int8)
    for i, key in enumerate(keys):
        for r in groups[key]:
            vec = r.label_vector()
            y[i, : len(LABELS)] |= np.array(vec, dtype=np.int8)
            if not any(vec):
                y[i, len(LABELS)] = 1
    return y


MIN_STRATIFIED = 20  # below this many groups iterative stratification is erratic (it may take none of 4)


def _take(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, taken) row indices: ``fraction`` of the rows, multi-label stratified, fixed by ``seed``.
    Fewer than MIN_STRATIFIED rows: a seeded draw of round(fraction * n) rows (none when that is 0)."""
    n = len(y)
    every = np.arange(n)
    if n < MIN_STRATIFIED:
        taken = np.sort(np.random.default_rng(seed).permutation(n)[: round(fraction * n)])
        return np.setdiff1d(every, taken), taken
    split = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    return next(split.split(np.zeros((n, 1)), y))


def split_groups(records: list[Record], params: MergeParams) -> dict[str, list[Record]]:
    """Iterative multi-label stratification over groups, stratified by label, 'no label' and source."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[r.group].append(r)
    keys = sorted(groups)
    sources = sorted({_source_family(r) for r in records})
    y = _label_matrix(groups, keys, len(sources))
    for i, key in enumerate(keys):
        for r in groups[key]:
            y[i, len(LABELS) + 1 + sources.index(_source_family(r))] = 1
    rest_idx, test_idx = _take(y, params.test_fraction, params.seed)
    val_share = params.val_fraction / (1 - params.test_fraction)
    train_sub, val_sub = _take(y[rest_idx], val_share, params.seed)
    assignment = {"train": rest_idx[train_sub], "val": rest_idx[val_sub], "test": test_idx}
    return {
        name: sorted((r for i in idx for r in groups[keys[i]]), key=lambda r: r.id)
        for name, idx in assignment.items()
    }


def _real_source(group: list[Record]) -> str | None:
    """The public set a group belongs to, or None when any record of it is not real text from that
    one set (e.g. a reviewed copy in incoming/ sharing its group): such a group is split as usual."""
    sources = {r.source for r in group}
    only = sources.pop() if len(sources) == 1 else ""
    return only if only.startswith(SOURCE_PREFIX) else None


def split_real(records: list[Record], params: MergeParams) -> dict[str, list[Record]]:
    """Per public set, by group, fixed by seed: ``real_test_fraction`` of its groups to real_test,
    the rest to val (share ``val_fraction / (1 - test_fraction)``) and train. Stratified on the
    label vector + 'no label', so each category's positives are spread; the seed is mixed with the
    source's name so each set draws on its own."""
    by_source: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_source[r.source][r.group].append(r)
    val_share = params.val_fraction / (1 - params.test_fraction)
    out: dict[str, list[Record]] = {"train": [], "val": [], REAL_TEST: []}
    for source in sorted(by_source):
        groups = by_source[source]
        keys = sorted(groups)
        y = _label_matrix(groups, keys)
        seed = zlib.crc32(f"{params.seed}:{source}".encode())
        rest, held = _take(y, params.real_test_fraction, seed)
        train_sub, val_sub = _take(y[rest], val_share, seed)
        for name, idx in (("train", rest[train_sub]), ("val", rest[val_sub]), (REAL_TEST, held)):
            out[name] += [r for i in idx for r in groups[keys[i]]]
    return {name: sorted(rs, key=lambda r: r.id) for name, rs in out.items()}


def split_all(records: list[Record], params: MergeParams) -> dict[str, list[Record]]:
    """train/val/test for everything but public real text; public real text per set (``split_real``)."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[r.group].append(r)
    real = [r for g in groups.values() if _real_source(g) for r in g]
    real_ids = {r.id for r in real}
    rest = [r for r in records if r.id not in real_ids]
    splits = split_groups(rest, params) if rest else {s: [] for s in SPLITS}
    held = split_real(real, params)
    return {
        "train": sorted(splits["train"] + held["train"], key=lambda r: r.id),
        "val": sorted(splits["val"] + held["val"], key=lambda r: r.id),
        "test": splits["test"],
        REAL_TEST: held[REAL_TEST],
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


def real_statistics(splits: dict[str, list[Record]], hashes: dict, threshold: float) -> dict:
    """Public real text per split: its share of each split, each set's records per split, and per set
    what real_test holds (records, no-label, positives per category). ``leaks_to_train_val``: real_test
    records with a near-duplicate in train or val that de-duplication kept because its labels or
    audience differ (a contrast pair is kept on purpose): a diagnostic, expected near 0."""
    real = {s: [r for r in rs if is_real(r)] for s, rs in splits.items()}
    per_source: dict[str, dict[str, int]] = defaultdict(lambda: {s: 0 for s in splits})
    for s, rs in real.items():
        for r in rs:
            per_source[r.source][s] += 1
    held: dict[str, list[Record]] = defaultdict(list)
    for r in real[REAL_TEST]:
        held[r.source].append(r)
    index = NearDuplicateIndex(threshold)
    for r in (*splits["train"], *splits["val"]):
        if r.id in hashes:
            index.insert(r.id, hashes[r.id])
    leaks = sum(bool(index.query(r.text)[0]) for r in real[REAL_TEST])
    return {
        "share": {s: round(len(real[s]) / len(rs), 4) if rs else 0.0 for s, rs in splits.items()},
        "per_source": {src: per_source[src] for src in sorted(per_source)},
        REAL_TEST: {
            src: {
                "records": len(rs),
                "eval_group": sorted({eval_group(r) for r in rs}),
                "no_label": sum(not any(r.label_vector()) for r in rs),
                "per_category": {c: n for c in LABELS if (n := sum(r.labels[c] for r in rs))},
            }
            for src, rs in sorted(held.items())
        },
        "leaks_to_train_val": leaks,
    }


def merge(sources: list[Source], params: MergeParams, out_dir: Path, rejects_path: Path) -> dict:
    """Read, de-duplicate, enrich, prefix and split; write train/val/test/real_test JSONL; return statistics."""
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

    # The behavioural suite judges the model: no record sharing a word 5-gram with it may be trained,
    # tuned or tested on (components/quality/behaviour.py), whatever its source.
    suite = suite_ngrams()
    overlaps = [shares_ngram(split_prefix(r.text)[1], suite) for r in records]
    clean = [r for r, hit in zip(records, overlaps) if not hit]
    suite_overlap = Counter(r.source for r, hit in zip(records, overlaps) if hit)
    hashes: dict = {}
    kept, dedup_stats = deduplicate(clean, params.near_duplicate_threshold, hashes)
    splits = split_all(kept, params)
    stats = split_statistics(splits)
    if stats["groups_across_splits"]:
        raise SplitError(f"{stats['groups_across_splits']} groups ended up in more than one split")
    missing = [(c, s) for c in LABELS for s in SPLITS if stats["per_category"][c][s] == 0]
    if missing:
        raise SplitError(
            f"categories absent from a split: {missing}; generate more examples of them or raise "
            "merge.val_fraction / merge.test_fraction"
        )
    real = real_statistics(splits, hashes, params.near_duplicate_threshold)
    for name, rs in splits.items():
        write_records(Path(out_dir) / f"{name}.jsonl", rs)
    return {
        "inputs": {"records": len(rows), "rejects": len(rejects), "per_file": per_file},
        "dedup": {"exact_duplicates_removed": 0, "near_duplicates_removed": 0, "label_conflicts": 0, **dedup_stats},
        "enrichment": dict(sorted(enriched.items())),
        "behaviour_suite_overlap_removed": {"total": len(records) - len(clean), **dict(sorted(suite_overlap.items()))},
        **stats,
        "real_text": real,
    }
