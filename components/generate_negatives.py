"""The generate-negatives step: hard negatives per category (texts that share a category's
vocabulary but are not it) and the innocuous file."""

from __future__ import annotations

import logging
from pathlib import Path

from components.core.contract import Record, write_records
from components.core.project import find_root
from components.core.taxonomy import LABELS
from components.generation import REJECTS_FILE, make_backend, overlap_plan, summary, to_records, with_llm_report
from components.generation.base import GenerationBackend, Job
from components.text.dedup import diversity

log = logging.getLogger(__name__)


def generate_negatives(params: GenerateParams, out_dir: Path, innocuous_path: Path | None,
                       categories: list[str] | None = None, backend: GenerationBackend | None = None) -> dict:
    """Write hard negatives per category and the innocuous file (None: skip it); return the step's statistics."""
    backend = backend or make_backend(params, root=find_root(out_dir, default=Path.cwd()))
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
        stats = summary(written)
        if innocuous_path is not None:
            innocuous = to_records(backend.innocuous(params.innocuous), f"{backend.name}-inn", None, backend.name)
            write_records(innocuous_path, innocuous)
            stats["innocuous"] = diversity([r.text for r in innocuous])
        return {"backend": backend.name, **stats}

    return with_llm_report(backend, jobs, Path(out_dir) / REJECTS_FILE, run)


def generate_innocuous(params: GenerateParams, path: Path, backend: GenerationBackend | None = None) -> dict:
    """Only the innocuous file (``params.innocuous`` texts); its rejects go beside it."""
    backend = backend or make_backend(params, root=find_root(Path(path).parent, default=Path.cwd()))
    jobs = [Job("innocuous", None, params.innocuous)]

    def run() -> dict:
        records = to_records(backend.innocuous(params.innocuous), f"{backend.name}-inn", None, backend.name)
        write_records(path, records)
        return {"backend": backend.name, "records": len(records), "innocuous": diversity([r.text for r in records])}

    path = Path(path)
    return with_llm_report(backend, jobs, path.with_name(f"_{path.stem}{REJECTS_FILE}"), run)
