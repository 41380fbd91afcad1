"""The generate-positives and generate-negatives steps, over any backend.

Volumes and multi-label overlap are planned here, once, for every backend: a backend only
writes texts. Each category's file is written atomically, so a killed run keeps what it had.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from components.contract import Record, make_labels, write_records
from components.dedup import diversity
from components.generate.base import Draft, GenerationBackend
from components.params import GenerateParams
from components.taxonomy import LABELS

log = logging.getLogger(__name__)


def make_backend(params: GenerateParams) -> GenerationBackend:
    if params.backend == "offline":
        from components.generate.offline import OfflineBackend

        return OfflineBackend(params.seed, params.style)
    raise ValueError(
        f"generate.backend={params.backend!r} is not available in this version; "
        "set generate.backend: offline in params.yaml"
    )


def overlap_plan(category: str, params: GenerateParams) -> list[tuple[tuple[str, ...], int]]:
    """How many of a category's positives carry which co-labels, e.g. [((), 350), (("threats",), 150)]."""
    total = params.positives_per_category
    plan = []
    for partner, rate in sorted(params.overlap.get(category, {}).items()):
        n = round(total * rate)
        if n:
            plan.append(((partner,), n))
    plan.insert(0, ((), total - sum(n for _, n in plan)))
    return [(co, n) for co, n in plan if n > 0]


def to_records(drafts: list[Draft], prefix: str, category: str | None, backend: str) -> list[Record]:
    return [
        Record(
            id=f"{prefix}-{i:05d}",
            text=d.text,
            labels=make_labels(d.labels),
            metadata={
                "source": backend,
                "category": category,
                "kind": d.kind,
                "group": f"{prefix}-{i:05d}",
                "audience": d.audience,
                "surface": d.surface,
                **({"template": d.template} if d.template is not None else {}),
                **({"co_labels": [l for l in d.labels if l != category]} if len(d.labels) > 1 else {}),
                **d.extra,
            },
        )
        for i, d in enumerate(drafts)
    ]


def _summary(records_by_category: dict[str, list[Record]]) -> dict:
    texts = [r.text for rs in records_by_category.values() for r in rs]
    label_counts = Counter(l for rs in records_by_category.values() for r in rs for l in r.positive_labels())
    return {
        "records": len(texts),
        "per_category": {c: len(rs) for c, rs in records_by_category.items()},
        "label_counts": {l: label_counts.get(l, 0) for l in LABELS},
        "diversity": diversity(texts),
        "diversity_per_category": {c: diversity([r.text for r in rs]) for c, rs in records_by_category.items()},
    }


def generate_positives(params: GenerateParams, out_dir: Path, categories: list[str] | None = None,
                       backend: GenerationBackend | None = None) -> dict:
    """Write ``<out_dir>/<category>.jsonl`` for every category; return the step's statistics."""
    backend = backend or make_backend(params)
    written: dict[str, list[Record]] = {}
    for category in categories or LABELS:
        drafts: list[Draft] = []
        for co_labels, count in overlap_plan(category, params):
            drafts.extend(backend.positives(category, count, co_labels))
        records = to_records(drafts, f"{backend.name}-pos-{category}", category, backend.name)
        write_records(Path(out_dir) / f"{category}.jsonl", records)
        written[category] = records
        log.info("positives %-20s %d", category, len(records))
    return {"backend": backend.name, **_summary(written)}


def generate_negatives(params: GenerateParams, out_dir: Path, innocuous_path: Path,
                       categories: list[str] | None = None, backend: GenerationBackend | None = None) -> dict:
    """Write hard negatives per category and the innocuous file; return the step's statistics."""
    backend = backend or make_backend(params)
    written: dict[str, list[Record]] = {}
    for category in categories or LABELS:
        drafts = backend.negatives(category, params.negatives_for(category))
        records = to_records(drafts, f"{backend.name}-neg-{category}", category, backend.name)
        write_records(Path(out_dir) / f"{category}.jsonl", records)
        written[category] = records
        log.info("negatives %-20s %d", category, len(records))
    innocuous = to_records(backend.innocuous(params.innocuous), f"{backend.name}-inn", None, backend.name)
    write_records(innocuous_path, innocuous)
    stats = _summary(written)
    stats["innocuous"] = diversity([r.text for r in innocuous])
    return {"backend": backend.name, **stats}
