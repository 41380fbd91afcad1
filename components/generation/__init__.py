"""What the generate-positives and generate-negatives steps share, over any backend
(the steps themselves: ``components/generate_positives.py``, ``components/generate_negatives.py``).

Volumes and multi-label overlap are planned here, once, for every backend: a backend only
writes texts. Each category's file is written atomically, so a killed run keeps what it had.
An LLM backend is first handed every job of the step (``prefetch``), so its requests run
together (one pool of concurrent requests, or one Message Batch); its rejects go to
``<out_dir>/_rejects.jsonl`` (the merge step skips files starting with ``_``) and its token
usage and cost to the step's statistics under ``llm``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from components.core.contract import Record, make_labels, write_jsonl, write_records
from components.text.dedup import diversity
from components.generation.base import Draft, GenerationBackend, Job
from components.core.params import GenerateParams
from components.core.project import find_root
from components.core.taxonomy import LABELS

log = logging.getLogger(__name__)

REJECTS_FILE = "_rejects.jsonl"


def make_backend(params: GenerateParams, *, root: Path | None = None, progress: bool | None = None,
                 environ: Mapping[str, str] | None = None) -> GenerationBackend:
    """The backend ``generate.backend`` names. LLM backends read their key from ``environ``
    (default: the process environment) and keep their cache under ``root`` (default: the project root)."""
    if params.backend == "offline":
        from components.generation.offline import OfflineBackend

        return OfflineBackend(params.seed, params.style)
    environ = os.environ if environ is None else environ
    llm = params.llm
    cache_dir = Path(llm.cache_dir)
    if not cache_dir.is_absolute():
        cache_dir = (root or find_root(default=Path.cwd())) / cache_dir
    if params.backend == "claude":
        from components.generation.claude import claude_backend

        return claude_backend(params.claude, params.seed, cache_dir, environ, progress)
    if params.backend == "local":
        from components.generation.local import local_backend

        return local_backend(params.local, params.seed, cache_dir, environ, progress)
    raise ValueError(f"generate.backend={params.backend!r}: use offline, claude or local")


def with_llm_report(backend: GenerationBackend, jobs: list[Job], rejects_path: Path, run):
    """Run ``run()`` after handing the backend every job; write its rejects file, also when they fail the step."""
    prefetch, report = getattr(backend, "prefetch", None), getattr(backend, "report", None)
    shown_anyway: tuple = ()
    if report is not None:
        from components.generation.errors import TooManyLLMRejectsError

        shown_anyway = (TooManyLLMRejectsError,)
    try:
        if prefetch is not None:
            prefetch(jobs)
        stats = run()
    except shown_anyway:
        write_jsonl(rejects_path, report(jobs)["rejects"])
        raise
    if report is not None:
        llm = report(jobs)
        write_jsonl(rejects_path, llm["rejects"])
        stats["llm"] = llm["stats"]
        log.info("%s: %d requests, %d from the cache, %d rejected, $%.4f (with cached answers $%.4f)", backend.name,
                 stats["llm"]["requests"], stats["llm"]["cached"], stats["llm"]["rejected"], stats["llm"]["cost_usd"],
                 stats["llm"]["cost_usd_with_cache"])
    return stats


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


def summary(records_by_category: dict[str, list[Record]]) -> dict:
    texts = [r.text for rs in records_by_category.values() for r in rs]
    label_counts = Counter(l for rs in records_by_category.values() for r in rs for l in r.positive_labels())
    return {
        "records": len(texts),
        "per_category": {c: len(rs) for c, rs in records_by_category.items()},
        "label_counts": {l: label_counts.get(l, 0) for l in LABELS},
        "diversity": diversity(texts),
        "diversity_per_category": {c: diversity([r.text for r in rs]) for c, rs in records_by_category.items()},
    }
