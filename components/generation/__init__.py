"""What the generate-positives and generate-negatives steps share, over any backend
(the steps themselves: ``components/generate_positives.py``, ``components/generate_negatives.py``).

Volumes and multi-label overlap are planned here, once, for every backend: a backend only
writes texts. Each category's file is written atomically, so a killed run keeps what it had.
An LLM backend is first handed every job of the step (``prefetch``), so its requests run
together (one pool of concurrent requests, or one Message Batch); fanned out (``run_generation``
with a ``map_fn``), each category is a part of its own, run where ``map_fn`` sends it. Its rejects go to
``<out_dir>/_rejects.jsonl`` (the merge step skips files starting with ``_``) and its token
usage and cost to the step's statistics under ``llm``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from components.core.contract import Record, make_labels, write_jsonl, write_records
from components.text.dedup import diversity
from components.generation.base import Draft, GenerationBackend, Job
from components.generation.errors import TooManyLLMRejectsError
from components.generation.tally import Tally
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


@dataclass
class Part:
    """One share of a generate step as it comes back from whoever ran it (this process or a worker):
    the records written per key (a category, or None for the innocuous file) and, for an LLM
    backend, its counters per category, its rejects, and a reject-limit error to raise once the
    rejects are written."""

    backend: str
    written: dict[str | None, list[Record]]
    llm_meta: dict | None = None
    tallies: dict[str, Tally] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)
    error: Exception | None = None


# A step's parts: (backend, key) -> that key's records, written to its file.
WriteOne = Callable[[GenerationBackend, "str | None"], list[Record]]
JobsOf = Callable[["str | None"], list[Job]]
# How parts run: ``map_fn(fn, items)`` -> fn(item) for each item, in order (builtin ``map`` runs them here;
# train-flow passes one that runs them as Prefect tasks on a Dask task runner: flows/task_runners.py).
MapFn = Callable[[Callable, list], Iterable]


def run_part(backend: GenerationBackend, keys: list[str | None], jobs_of: JobsOf, write_one: WriteOne) -> Part:
    """Write ``keys`` with ``backend``; an LLM backend is first handed every job of them (``prefetch``),
    so their requests run together (one pool of concurrent requests, or one Message Batch)."""
    jobs = [job for key in keys for job in jobs_of(key)]
    prefetch, tallies = getattr(backend, "prefetch", None), getattr(backend, "tallies", None)
    written: dict[str | None, list[Record]] = {}
    error = None
    try:
        if prefetch is not None:
            prefetch(jobs)
        for key in keys:
            written[key] = write_one(backend, key)
    except TooManyLLMRejectsError as exc:
        if tallies is None:
            raise
        error = exc  # raised by run_generation after the rejects that explain it are written
    if tallies is None:
        return Part(backend.name, written)
    per_category, rejects = tallies(jobs)
    return Part(backend.name, written, backend.llm_meta(), per_category, rejects, error)


def _run_part_on_worker(params: GenerateParams, root: Path, jobs_of: JobsOf, write_one: WriteOne,
                        keys: list[str | None]) -> Part:
    """``run_part`` in another process: the backend (an HTTP client, a cache) is made there."""
    return run_part(make_backend(params, root=root, progress=False), keys, jobs_of, write_one)


def run_generation(params: GenerateParams, root: Path, keys: list[str | None], jobs_of: JobsOf, write_one: WriteOne,
                   rejects_path: Path, *, backend: GenerationBackend | None = None,
                   map_fn: MapFn | None = None) -> tuple[str, dict[str | None, list[Record]], dict | None]:
    """Run a generate step: every key's file written, an LLM backend's rejects to ``rejects_path``.

    Without ``map_fn`` the whole step is one part on one backend (``backend``, or the one params name).
    With it, each key is a part of its own run by ``map_fn`` on a backend made where it runs; a key's
    records never depend on the other keys (each has its own seeded generator, each request its own
    cache key), so both ways write the same bytes.

    Returns ``(backend name, {key: records}, the llm statistics or None)``.
    Raises TooManyLLMRejectsError after writing the rejects; any other error of a part as it is.
    """
    if map_fn is None:
        parts = [run_part(backend or make_backend(params, root=root), keys, jobs_of, write_one)]
    elif backend is not None:
        raise ValueError("a backend object stays in this process: pass either backend or map_fn, not both")
    else:
        parts = list(map_fn(functools.partial(_run_part_on_worker, params, root, jobs_of, write_one),
                            [[key] for key in keys]))
    written = {k: v for part in parts for k, v in part.written.items()}
    meta = next((part.llm_meta for part in parts if part.llm_meta is not None), None)
    if meta is None:
        return parts[0].backend, written, None
    write_jsonl(rejects_path, [row for part in parts for row in part.rejects])
    error = next((part.error for part in parts if part.error is not None), None)
    if error is not None:
        raise error
    llm = llm_stats(meta, {c: t for part in parts for c, t in part.tallies.items()})
    log.info("%s: %d requests, %d from the cache, %d rejected, $%.4f (with cached answers $%.4f)", parts[0].backend,
             llm["requests"], llm["cached"], llm["rejected"], llm["cost_usd"], llm["cost_usd_with_cache"])
    return parts[0].backend, written, llm


def llm_stats(meta: dict, per_category: dict[str, Tally]) -> dict:
    """A step's ``llm`` statistics: the backend's ``meta``, the totals and ``per_category``."""
    total = Tally()
    for tally in per_category.values():
        total.add(tally)
    return {**meta, **total.to_dict(), "per_category": {c: t.to_dict() for c, t in per_category.items()}}


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
