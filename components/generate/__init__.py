"""The generate-positives and generate-negatives steps, over any backend.

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

from components.contract import Record, make_labels, write_jsonl, write_records
from components.dedup import diversity
from components.generate.base import Draft, GenerationBackend, Job
from components.params import GenerateParams
from components.taxonomy import LABELS

log = logging.getLogger(__name__)

REJECTS_FILE = "_rejects.jsonl"


def project_root(near: Path | None = None) -> Path:
    """The folder with dvc.yaml at or above ``near`` (an output folder), else the working directory."""
    here = Path(near or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    return Path.cwd()


def make_backend(params: GenerateParams, *, root: Path | None = None, progress: bool | None = None,
                 environ: Mapping[str, str] | None = None) -> GenerationBackend:
    """The backend ``generate.backend`` names. LLM backends read their key from ``environ``
    (default: the process environment) and keep their cache under ``root`` (default: the project root)."""
    if params.backend == "offline":
        from components.generate.offline import OfflineBackend

        return OfflineBackend(params.seed, params.style)
    environ = os.environ if environ is None else environ
    llm = params.llm
    cache_dir = Path(llm.cache_dir)
    if not cache_dir.is_absolute():
        cache_dir = (root or project_root()) / cache_dir
    if params.backend == "claude":
        from components.generate.claude import claude_backend

        return claude_backend(params.claude, params.seed, cache_dir, environ, progress)
    if params.backend == "local":
        from components.generate.local import local_backend

        return local_backend(params.local, params.seed, cache_dir, environ, progress)
    raise ValueError(f"generate.backend={params.backend!r}: use offline, claude or local")


def _with_llm_report(backend: GenerationBackend, jobs: list[Job], rejects_path: Path, run):
    """Run ``run()`` after handing the backend every job; write its rejects file, also when they fail the step."""
    prefetch, report = getattr(backend, "prefetch", None), getattr(backend, "report", None)
    shown_anyway: tuple = ()
    if report is not None:
        from components.generate.llm import TooManyLLMRejectsError

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
    backend = backend or make_backend(params, root=project_root(out_dir))
    categories = list(categories or LABELS)
    jobs = [Job("positives", c, n, co) for c in categories for co, n in overlap_plan(c, params)]

    def run() -> dict:
        written: dict[str, list[Record]] = {}
        for category in categories:
            drafts: list[Draft] = []
            for co_labels, count in overlap_plan(category, params):
                drafts.extend(backend.positives(category, count, co_labels))
            records = to_records(drafts, f"{backend.name}-pos-{category}", category, backend.name)
            write_records(Path(out_dir) / f"{category}.jsonl", records)
            written[category] = records
            log.info("positives %-20s %d", category, len(records))
        return {"backend": backend.name, **_summary(written)}

    return _with_llm_report(backend, jobs, Path(out_dir) / REJECTS_FILE, run)


def generate_negatives(params: GenerateParams, out_dir: Path, innocuous_path: Path | None,
                       categories: list[str] | None = None, backend: GenerationBackend | None = None) -> dict:
    """Write hard negatives per category and the innocuous file (None: skip it); return the step's statistics."""
    backend = backend or make_backend(params, root=project_root(out_dir))
    categories = list(categories or LABELS)
    jobs = [Job("negatives", c, params.negatives_for(c)) for c in categories]
    if innocuous_path is not None:
        jobs.append(Job("innocuous", None, params.innocuous))

    def run() -> dict:
        written: dict[str, list[Record]] = {}
        for category in categories:
            drafts = backend.negatives(category, params.negatives_for(category))
            records = to_records(drafts, f"{backend.name}-neg-{category}", category, backend.name)
            write_records(Path(out_dir) / f"{category}.jsonl", records)
            written[category] = records
            log.info("negatives %-20s %d", category, len(records))
        stats = _summary(written)
        if innocuous_path is not None:
            innocuous = to_records(backend.innocuous(params.innocuous), f"{backend.name}-inn", None, backend.name)
            write_records(innocuous_path, innocuous)
            stats["innocuous"] = diversity([r.text for r in innocuous])
        return {"backend": backend.name, **stats}

    return _with_llm_report(backend, jobs, Path(out_dir) / REJECTS_FILE, run)


def generate_innocuous(params: GenerateParams, path: Path, backend: GenerationBackend | None = None) -> dict:
    """Only the innocuous file (``params.innocuous`` texts); its rejects go beside it."""
    backend = backend or make_backend(params, root=project_root(Path(path).parent))
    jobs = [Job("innocuous", None, params.innocuous)]

    def run() -> dict:
        records = to_records(backend.innocuous(params.innocuous), f"{backend.name}-inn", None, backend.name)
        write_records(path, records)
        return {"backend": backend.name, "records": len(records), "innocuous": diversity([r.text for r in records])}

    path = Path(path)
    return _with_llm_report(backend, jobs, path.with_name(f"_{path.stem}{REJECTS_FILE}"), run)
