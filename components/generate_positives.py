"""The generate-positives step: every category's positives, with multi-label overlap planned once
for every backend (``generate.overlap``); each category's file is written atomically."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from components.core.contract import Record, write_records
from components.core.params import GenerateParams
from components.core.project import find_root
from components.core.taxonomy import LABELS
from components.generation import REJECTS_FILE, MapFn, overlap_plan, run_generation, summary, to_records
from components.generation.base import Draft, GenerationBackend, Job

log = logging.getLogger(__name__)


def generate_positives(params: GenerateParams, out_dir: Path, categories: list[str] | None = None,
                       backend: GenerationBackend | None = None, map_fn: MapFn | None = None) -> dict:
    """Write ``<out_dir>/<category>.jsonl`` for every category; return the step's statistics.

    ``map_fn``: run each category as a part of its own (see ``components.generation.run_generation``).
    """
    out_dir = Path(out_dir)
    name, written, llm = run_generation(
        params, find_root(out_dir, default=Path.cwd()), list(categories or LABELS), functools.partial(_jobs, params),
        functools.partial(_write, params, out_dir), out_dir / REJECTS_FILE, backend=backend, map_fn=map_fn)
    return {"backend": name, **summary(written), **({"llm": llm} if llm else {})}


def _jobs(params: GenerateParams, category: str) -> list[Job]:
    return [Job("positives", category, n, co) for co, n in overlap_plan(category, params)]


def _write(params: GenerateParams, out_dir: Path, backend: GenerationBackend, category: str) -> list[Record]:
    drafts: list[Draft] = []
    for co_labels, count in overlap_plan(category, params):
        drafts.extend(backend.positives(category, count, co_labels))
    records = to_records(drafts, f"{backend.name}-pos-{category}", category, backend.name)
    write_records(out_dir / f"{category}.jsonl", records)
    log.info("positives %-20s %d", category, len(records))
    return records
