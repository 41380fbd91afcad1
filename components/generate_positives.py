"""The generate-positives step: every category's positives, with multi-label overlap planned once
for every backend (``generate.overlap``); each category's file is written atomically."""

from __future__ import annotations

import logging
from pathlib import Path

from components.core.contract import Record, write_records
from components.core.project import find_root
from components.core.taxonomy import LABELS
from components.generation import REJECTS_FILE, make_backend, overlap_plan, summary, to_records, with_llm_report
from components.generation.base import Draft, GenerationBackend, Job

log = logging.getLogger(__name__)


def generate_positives(params: GenerateParams, out_dir: Path, categories: list[str] | None = None,
                       backend: GenerationBackend | None = None) -> dict:
    """Write ``<out_dir>/<category>.jsonl`` for every category; return the step's statistics."""
    backend = backend or make_backend(params, root=find_root(out_dir, default=Path.cwd()))
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
        return {"backend": backend.name, **summary(written)}

    return with_llm_report(backend, jobs, Path(out_dir) / REJECTS_FILE, run)
