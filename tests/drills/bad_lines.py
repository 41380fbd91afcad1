"""Drill: bad lines of 20 kinds mixed into the reviewed files of data/incoming, then the real merge.

Injected: lines that break the data contract (malformed or truncated JSON, a BOM or a NUL byte mid-file,
bytes that are not UTF-8, a lone surrogate, a key named twice, a field missing, of the wrong type or
unknown, an empty text, a bad context prefix, a label that is unknown or not 0/1, bad metadata, an
id used twice in a file or across files), spread over several reviewed files among good lines, beside
generated inputs that are all valid. Full form: 50 lines of each kind (1,000) among 2,000 good ones in
5 files; light form: 6 of each kind (120) among 150 good ones in 3 files.

The merge (``components.merge.merge`` over ``pipeline_sources``, the project's merge params) runs
twice: with the project's ``max_reject_fraction`` it must refuse, and still list every bad line;
with the fraction raised it must write the splits. Checked: every bad line is in rejects.jsonl at
its file and line, with its raw text and a reason naming its fault; no other line is; every good
line is in exactly one split with its text; the counts are exact; the input files are untouched.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components.core.contract import ContractError, Record, make_labels, read_records, write_records
from components.core.params import load_params
from components.core.taxonomy import AUDIENCES, LABELS, SURFACES, split_prefix
from components.merge import pipeline_sources, merge
from tests.conftest import ROOT

# Ordinary words: random runs of them share no word 3-shingle (so de-duplication keeps every line) and
# no 5-gram with the behavioural suite (which merge drops), yet read like text.
WORDS = ("garden window river ticket market morning yellow bicycle kitchen letter summer silver engine pocket "
         "harbor blanket village thunder pencil island mirror candle orange forest meadow bottle ladder "
         "compass lantern rabbit anchor basket button carpet castle cellar cherry chimney circus cloud "
         "copper cotton dragon feather fiddle garlic ginger glacier hammer hazel helmet honey jacket jungle "
         "kettle kitten lemon marble meadowlark needle nutmeg oyster paddle parrot pebble pepper pillow "
         "pirate planet pumpkin puzzle quilt radish raven ribbon rocket saddle salmon sandal shadow shovel "
         "spider squirrel stable sugar teapot tiger timber tomato tunnel turnip velvet violin walnut wagon "
         "whistle willow wizard wool zebra acorn almond apron attic badge barrel beacon biscuit bramble "
         "bucket cabbage canoe cedar chalk clover cobble cricket crystal daisy denim dune ember fern fjord "
         "flannel fossil gravel grove hedge ivory jasmine juniper kayak kelp lagoon lilac linen lumen maple "
         "meteor moss nectar oak onyx opal orchard otter paprika pine plum quartz reed saffron sage shell "
         "slate sparrow spruce thistle thyme tulip umber vapor walrus wheat yarrow yew").split()
ALL_LABELS = json.dumps(make_labels())


def _row(rid: str, text: str, rng: random.Random, **over) -> dict:
    labels = make_labels(rng.sample(LABELS, rng.choice((0, 1, 1, 2))))
    meta = {"source": "review", "reviewer": f"r{rng.randrange(9)}"}
    if rng.random() < 0.5:
        meta |= {"audience": rng.choice(AUDIENCES), "surface": rng.choice(SURFACES)}
    return {"id": rid, "text": text, "labels": labels, "metadata": meta, **over}


def _dump(row) -> bytes:
    return json.dumps(row).encode()  # ASCII: a lone surrogate is written as its \u escape


def _without(row: dict, key: str) -> dict:
    return {k: v for k, v in row.items() if k != key}


def _text_bytes(row: dict, raw: bytes) -> bytes:
    """The row's line with ``raw`` bytes inside its text string."""
    return _dump({**row, "text": "@@"}).replace(b"@@", raw)


# kind -> variants: (make(row) -> line bytes, what its rejects reason must say). Each bad line is made from a
# valid row with an id of its own, so only the injected fault can reject it.
Variant = tuple[Callable[[dict], bytes], str]
MALFORMED = "malformed JSON"
KINDS: dict[str, list[Variant]] = {
    "malformed_json": [
        (lambda r: _dump(r).replace(b'", "text"', b'" "text"', 1), MALFORMED),
        (lambda r: _dump(r).replace(b'"', b"'"), MALFORMED),
        (lambda r: _dump(r)[:-1] + b", }", MALFORMED),
        (lambda r: _dump(r) + b' {"id": "x"}', "malformed JSON: Extra data"),
        (lambda r: _dump({**r, "metadata": "@@"}).replace(b'"@@"', b"[" * 5000 + b"]" * 5000), "nested too deeply"),
    ],
    "truncated_line": [(lambda r, f=f: _dump(r)[: int(len(_dump(r)) * f)], MALFORMED) for f in (0.9, 0.5, 0.2, 0.7)],
    "not_an_object": [(lambda r: _dump([r]), "must be a JSON object, got an array"),
                      (lambda r: _dump(r["text"]), "must be a JSON object, got a string"),
                      (lambda r: b"42", "must be a JSON object, got a number"),
                      (lambda r: b"null", "must be a JSON object, got null")],
    "bom_mid_file": [(lambda r: b"\xef\xbb\xbf" + _dump(r), "malformed JSON: Unexpected UTF-8 BOM")],
    "invalid_utf8": [(lambda r, b=b: _text_bytes(r, b"caf" + b + b" au lait"), "line is not UTF-8")
                     for b in (b"\xe9", b"\x93", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80")],
    "nul_byte": [(lambda r: _text_bytes(r, b"zero\x00byte"), "malformed JSON: NUL byte"),
                 (lambda r: b"\x00" * 64, "malformed JSON: NUL byte at column 1")],
    "lone_surrogate": [(lambda r: _dump({**r, "text": r["text"] + " \ud83d"}), "lone surrogate U+D83D"),
                       (lambda r: _dump({**r, "metadata": {**r["metadata"], "note": "\udc00"}}),
                        "metadata.note: not valid UTF-8: lone surrogate")],
    "duplicate_key": [(lambda r: _dump(r).replace(b'"labels": {', b'"labels": {"spam": 1, ', 1), "duplicate key"),
                      (lambda r: _dump(r).replace(b'"text":', b'"text": "first", "text":', 1), "duplicate key")],
    "unexpected_field": [(lambda r: _dump({**r, "label": "spam"}), "unexpected field(s) ['label']"),
                         (lambda r: _dump({**r, "Text": r["text"]}), "unexpected field(s) ['Text']")],
    "missing_id": [(lambda r: _dump(_without(r, "id")), "missing field 'id'"),
                   (lambda r: _dump({**r, "id": ""}), "id must be a non-empty string"),
                   (lambda r: _dump({**r, "id": 7}), "id must be a non-empty string")],
    "missing_text": [(lambda r: _dump(_without(r, "text")), "missing field 'text'")],
    "empty_text": [(lambda r, t=t: _dump({**r, "text": t}), "text is empty")
                   for t in ("", "   ", "\u200b\u200d\u2060", "\u3164", "[ADULT][MESSAGE]   ")],
    "text_not_a_string": [(lambda r, t=t: _dump({**r, "text": t}), f"text must be a string, got {got}")
                          for t, got in ((42, "a number"), (["a", "list"], "an array"), (None, "null"),
                                         ({"t": "x"}, "an object"), (True, "a boolean"))],
    "bad_context_prefix": [(lambda r: _dump({**r, "text": "[KIDS][MESSAGE] " + r["text"]}), "bad context prefix"),
                           (lambda r: _dump({**r, "text": "[GENERAL][DM] " + r["text"]}), "bad context prefix"),
                           (lambda r: _dump({**r, "metadata": {**r["metadata"], "audience": "KIDS"}}),
                            'metadata.audience "KIDS" is not one of')],
    "missing_labels": [(lambda r: _dump(_without(r, "labels")), "missing field 'labels'"),
                       (lambda r: _dump({**r, "labels": _without(r["labels"], "spam")}), "missing label(s) ['spam']"),
                       (lambda r: _dump({**r, "labels": [k for k, v in r["labels"].items() if v]}),
                        "labels must be an object")],
    "unknown_label": [(lambda r: _dump({**r, "labels": {**r["labels"], "violence": 1}}), "unknown label(s) ['violence']"),
                      (lambda r: _dump({**r, "labels": {("threat" if k == "threats" else k): v
                                                        for k, v in r["labels"].items()}}), "unknown label(s) ['threat']")],
    "label_not_0_or_1": [(lambda r, v=v: _dump({**r, "labels": {**r["labels"], "spam": "@@"}}).replace(b'"@@"', v),
                          "label 'spam' must be 0 or 1") for v in (b"2", b"-1", b'"1"', b"true", b"0.5", b"null", b"NaN")],
    "bad_metadata": [(lambda r: _dump({**r, "metadata": "review"}), "metadata must be an object, got a string"),
                     (lambda r: _dump({**r, "metadata": ["review"]}), "metadata must be an object, got an array"),
                     (lambda r: _dump({**r, "metadata": {"reviewer": "r1"}}), "metadata.source must name"),
                     (lambda r: _dump({**r, "metadata": {"source": ""}}), "metadata.source must name"),
                     (lambda r: _dump({**r, "metadata": {"source": 3}}), "metadata.source must name")],
    # the id of a good line read earlier (same file / an earlier file); the reason is filled in at placement
    "duplicate_id_same_file": [(_dump, "duplicate id")],
    "duplicate_id_other_file": [(_dump, "duplicate id")],
}
assert len(KINDS) == 20


@dataclass
class Line:
    data: bytes
    good_id: str | None = None      # a good line: its id ...
    raw_text: str | None = None     # ... and its text without prefix
    labels: dict | None = None
    kind: str | None = None         # a bad line: its kind and what its reason must say
    reason: str = ""


def _base_inputs(root: Path, paths, rng: random.Random, per_category: int = 20, negatives: int = 100) -> int:
    """Valid generated inputs (every category in every split) where the pipeline keeps them."""
    def record(rid: str, labels) -> Record:
        return Record(rid, " ".join(rng.choices(WORDS, k=14)), make_labels(labels),
                      {"source": "offline", "category": labels[0] if labels else "none"})

    pos = [record(f"offline-pos-{c}-{i:03d}", [c]) for c in LABELS for i in range(per_category)]
    neg = [record(f"offline-neg-{i:03d}", []) for i in range(negatives)]
    write_records(root / paths.positives / "all.jsonl", pos)
    write_records(root / paths.negatives / "all.jsonl", neg)
    return len(pos) + len(neg)


def _reviewed_files(n_files: int, n_good: int, per_kind: int, rng: random.Random) -> list[list[Line]]:
    """The reviewed files' lines: good lines in order, the bad ones mixed in at random places (never
    first: a byte-order mark at the start of a file is allowed and dropped)."""
    good = []
    for i in range(n_good):
        row = _row(f"review-{i:05d}", " ".join(rng.choices(WORDS, k=12)), rng)
        prefixed = rng.random() < 0.3
        if prefixed:
            row["text"] = f"[{rng.choice(AUDIENCES)}][{rng.choice(SURFACES)}] {row['text']}"
        good.append(Line(_dump(row), row["id"], split_prefix(row["text"])[1], row["labels"]))
    bad: list[tuple[int, Line]] = []
    for kind, variants in KINDS.items():
        for n in range(per_kind):
            make, reason = variants[n % len(variants)]
            row = _row(f"bad-{kind}-{n:03d}", " ".join(rng.choices(WORDS, k=12)), rng)
            # a duplicate of another file's id must not be in the first file
            f = 1 + n % (n_files - 1) if kind == "duplicate_id_other_file" else n % n_files
            bad.append((f, Line(make(row), kind=kind, reason=reason)))
    files: list[list[Line]] = [[] for _ in range(n_files)]
    for i, line in enumerate(good):
        files[i % n_files].append(line)
    for f, line in bad:
        files[f].insert(rng.randint(1, len(files[f])), line)
    return files


def _fill_duplicate_ids(files: list[list[Line]], names: list[Path], rng: random.Random) -> None:
    """Give each duplicate-id line the id of a good line read before it (its file, or an earlier one)."""
    earlier: list[tuple[str, Path, int]] = []
    for name, lines in zip(names, files):
        here: list[tuple[str, Path, int]] = []
        for lineno, line in enumerate(lines, start=1):
            if line.good_id:
                here.append((line.good_id, name, lineno))
            elif line.kind in ("duplicate_id_same_file", "duplicate_id_other_file"):
                owner, where, at = rng.choice(here if line.kind == "duplicate_id_same_file" else earlier)
                row = json.loads(line.data)
                line.data = _dump({**row, "id": owner})
                line.reason = f"duplicate id {owner!r} (first on {'' if where == name else f'{where} '}line {at})"
        earlier += here


def _digest(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def run(workdir: Path, light: bool) -> dict:
    t0 = time.perf_counter()
    per_kind, n_good, n_files = (6, 150, 3) if light else (50, 2000, 5)
    rng = random.Random(20261201)
    params = load_params(ROOT / "params.yaml")
    paths, root = params.paths, Path(workdir) / "project"
    n_base = _base_inputs(root, paths, rng)
    incoming = root / paths.incoming
    incoming.mkdir(parents=True, exist_ok=True)
    names = [incoming / f"reviewed-{i + 1:02d}.jsonl" for i in range(n_files)]
    files = _reviewed_files(n_files, n_good, per_kind, rng)
    _fill_duplicate_ids(files, names, rng)
    for name, lines in zip(names, files):
        name.write_bytes(b"\n".join(line.data for line in lines) + b"\n")
    placed = {(str(name), lineno): line for name, lines in zip(names, files)
              for lineno, line in enumerate(lines, start=1)}
    bad = {where: line for where, line in placed.items() if line.kind}
    good = {line.good_id: line for line in placed.values() if line.good_id}
    inputs = [p for s in pipeline_sources(paths, root) for p in s.files]
    before = _digest(inputs)
    splits, rejects_path = root / paths.splits, root / paths.splits / "rejects.jsonl"

    # 1. the project's own allowance: the step refuses, and every bad line is listed anyway
    refused = ""
    try:
        merge(pipeline_sources(paths, root), params.merge, splits, rejects_path)
    except ContractError as exc:
        refused = str(exc)
    listed_when_refused = sum(1 for line in rejects_path.read_bytes().splitlines() if line.strip())
    wrote_splits_when_refused = any(splits.glob("train.jsonl"))

    # 2. raised: the splits are written
    raised = params.merge.model_copy(update={"max_reject_fraction": 0.5})
    t_merge = time.perf_counter()
    stats = merge(pipeline_sources(paths, root), raised, splits, rejects_path)
    merge_s = time.perf_counter() - t_merge

    rows = [json.loads(line) for line in rejects_path.read_text("utf-8").splitlines()]
    per_kind_figures = {k: {"injected": 0, "rejected": 0, "reason_named": 0, "raw_kept": 0} for k in KINDS}
    for line in bad.values():
        per_kind_figures[line.kind]["injected"] += 1
    unexpected, reasons = [], {}
    for row in rows:
        line = bad.get((row["file"], row["line"]))
        if line is None:
            unexpected.append(row)
            continue
        figures = per_kind_figures[line.kind]
        figures["rejected"] += 1
        figures["reason_named"] += line.reason in row["reason"]
        figures["raw_kept"] += row["raw"] == line.data.decode("utf-8", "backslashreplace")
        reasons.setdefault(line.kind, row["reason"][:160])
    seen_rejects = Counter((row["file"], row["line"]) for row in rows)
    not_rejected = [f"{w[0]}:{w[1]} ({bad[w].kind})" for w in bad if w not in seen_rejects]

    merged = {}
    copies = Counter()
    for name in ("train", "val", "test", "real_test"):
        for record in read_records(splits / f"{name}.jsonl").records:
            copies[record.id] += 1
            merged[record.id] = record
    missing = [i for i in good if i not in merged]
    altered = [i for i, line in good.items() if i in merged and (
        split_prefix(merged[i].text)[1] != line.raw_text
        or any(v and not merged[i].labels[k] for k, v in line.labels.items()))]
    bad_ids_in_splits = sorted(i for i in merged if i.startswith("bad-"))
    per_file = {Path(f).name: v for f, v in stats["inputs"]["per_file"].items() if Path(f).parent == incoming}
    per_file_expected = {n.name: {"records": sum(1 for ln in lines if ln.good_id),
                                  "rejects": sum(1 for ln in lines if ln.kind)} for n, lines in zip(names, files)}
    untouched = _digest(inputs) == before

    lost_good, lost_bad = len(missing), len(not_rejected)
    wrong_reason = sum(f["injected"] - f["reason_named"] for f in per_kind_figures.values())
    passed = (not lost_good and not lost_bad and not unexpected and not wrong_reason and not altered
              and not bad_ids_in_splits and max(copies.values()) == 1 and untouched
              and stats["inputs"]["rejects"] == len(bad) and stats["inputs"]["records"] == n_good + n_base
              and per_file == per_file_expected and bool(refused) and listed_when_refused == len(bad)
              and not wrote_splits_when_refused
              and all(f["raw_kept"] == f["injected"] for f in per_kind_figures.values()))
    return {
        "injected": (f"{len(bad)} bad lines of {len(KINDS)} kinds ({per_kind} each) mixed at random places among "
                     f"{n_good} good lines in {n_files} reviewed files of data/incoming, beside {n_base} valid "
                     "generated records; the real merge run with the project's max_reject_fraction "
                     f"({params.merge.max_reject_fraction}), then with it raised to 0.5"),
        "happened": (f"with {params.merge.max_reject_fraction}: the merge refused ({refused[:200]!r}) and still listed "
                     f"{listed_when_refused} lines in rejects.jsonl; raised: {len(rows)} rejects, each at its file and "
                     f"line with its raw text, {sum(f['reason_named'] for f in per_kind_figures.values())} with the "
                     f"reason naming the fault; {n_good - len(missing)} of {n_good} good lines in the splits, once "
                     "each; input files byte-identical" if untouched else "input files CHANGED"),
        "lost": "nothing" if not (lost_good or lost_bad) else
                f"{lost_good} good lines missing from the splits, {lost_bad} bad lines missing from rejects",
        "passed": passed,
        "bad_lines": len(bad), "good_lines": n_good, "files": n_files, "generated_records": n_base,
        "rejects_written": len(rows), "rejects_not_injected": len(unexpected), "bad_lines_not_rejected": not_rejected[:10],
        "reasons_not_naming_the_fault": wrong_reason, "good_lines_missing": missing[:10],
        "good_lines_altered": altered[:10], "bad_ids_in_splits": bad_ids_in_splits[:10],
        "ids_more_than_once": sum(1 for c in copies.values() if c > 1),
        "inputs_untouched": untouched, "per_file": per_file, "per_kind": per_kind_figures,
        "first_reason_per_kind": reasons, "refused_at_project_fraction": refused[:300],
        "rejects_listed_when_refused": listed_when_refused, "merge_seconds": round(merge_s, 2),
        "drill_seconds": round(time.perf_counter() - t0, 1),
    }
