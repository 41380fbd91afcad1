"""The generate-negatives step: hard negatives per category (texts that share a category's
vocabulary but are not it) and the innocuous file."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from components.core.contract import Record, write_records
from components.core.params import GenerateParams
from components.core.project import find_root
from components.core.taxonomy import LABELS
from components.generation import REJECTS_FILE, MapFn, run_generation, summary, to_records
from components.generation.base import GenerationBackend, Job
from components.text.dedup import diversity

log = logging.getLogger(__name__)


def generate_negatives(params: GenerateParams, out_dir: Path, innocuous_path: Path | None,
                       categories: list[str] | None = None, backend: GenerationBackend | None = None,
                       map_fn: MapFn | None = None) -> dict:
    """Write hard negatives per category and the innocuous file (None: skip it); return the step's statistics.

    ``map_fn``: run each category, and the innocuous file, as a part of its own
    (see ``components.generation.run_generation``).
    """
    out_dir = Path(out_dir)
    keys: list[str | None] = [*(categories or LABELS), *([None] if innocuous_path is not None else [])]
    name, written, llm = run_generation(
        params, find_root(out_dir, default=Path.cwd()), keys, functools.partial(_jobs, params),
        functools.partial(_write, params, out_dir, innocuous_path), out_dir / REJECTS_FILE, backend=backend,
        map_fn=map_fn)
    innocuous = written.pop(None, None)
    stats = summary(written)
    if innocuous is not None:
        stats["innocuous"] = diversity([r.text for r in innocuous])
    return {"backend": name, **stats, **({"llm": llm} if llm else {})}


def generate_innocuous(params: GenerateParams, path: Path, backend: GenerationBackend | None = None) -> dict:
    """Only the innocuous file (``params.innocuous`` texts); its rejects go beside it."""
    path = Path(path)
    name, written, llm = run_generation(
        params, find_root(path.parent, default=Path.cwd()), [None], functools.partial(_jobs, params),
        functools.partial(_write, params, path.parent, path), path.with_name(f"_{path.stem}{REJECTS_FILE}"),
        backend=backend)
    records = written[None]
    return {"backend": name, "records": len(records), "innocuous": diversity([r.text for r in records]),
            **({"llm": llm} if llm else {})}


def _jobs(params: GenerateParams, category: str | None) -> list[Job]:
    if category is None:
        return [Job("innocuous", None, params.innocuous)]
    return [Job("negatives", category, params.negatives_for(category))]


def _write(params: GenerateParams, out_dir: Path, innocuous_path: Path | None, backend: GenerationBackend,
           category: str | None) -> list[Record]:
    """One category's hard negatives to ``<out_dir>/<category>.jsonl``, or (None) the innocuous file."""
    if category is None:
        records = to_records(backend.innocuous(params.innocuous), f"{backend.name}-inn", None, backend.name)
        write_records(innocuous_path, records)
        return records
    drafts = backend.negatives(category, params.negatives_for(category))
    records = to_records(drafts, f"{backend.name}-neg-{category}", category, backend.name)
    write_records(out_dir / f"{category}.jsonl", records)
    log.info("negatives %-20s %d", category, len(records))
    return records
