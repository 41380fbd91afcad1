"""`content-moderation generate`: a quick, targeted batch of examples outside the pipeline.

Registered in ``flows/cli/__init__.py`` with ``app.command()(generate)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import console, fail, project_params, setup

KINDS = ("positives", "negatives", "innocuous")
BACKENDS = ("offline", "claude", "local")


def generate(
    backend: Annotated[Optional[str], typer.Option(
        "--backend", "-b", help="offline, claude or local (default: generate.backend in params.yaml).")] = None,
    category: Annotated[Optional[list[str]], typer.Option(
        "--category", "-c", help="A category to generate; repeat for several (default: all 18).")] = None,
    count: Annotated[int, typer.Option(
        "--count", "-n", min=1, help="Examples per category (innocuous: in all).")] = 25,
    kind: Annotated[str, typer.Option(
        "--kind", "-k", help="positives, negatives (hard negatives) or innocuous.")] = "positives",
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Where to write (a folder; for innocuous a file). Default: the pipeline's paths, "
                      "which `content-moderation review` reads; `content-moderation run` regenerates them.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Generate a quick, targeted batch of examples with any backend, outside the pipeline.

    Uses params.yaml (generate.*) for everything but the backend, categories and volume. Claude
    needs ANTHROPIC_API_KEY; answers are cached (generate.<backend>.cache_dir), so a rerun costs
    nothing and an interrupted one resumes. Shows requests, examples, rejects and spend as it goes.
    """
    from rich.table import Table

    from components.core.contract import ContractError
    from components.generate_negatives import generate_innocuous, generate_negatives
    from components.generate_positives import generate_positives
    from components.generation import make_backend
    from components.core.taxonomy import LABELS

    root = setup(verbose)
    if backend is not None and backend not in BACKENDS:
        raise fail(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if kind not in KINDS:
        raise fail(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    unknown = [c for c in category or () if c not in LABELS]
    if unknown:
        raise fail(f"unknown category {', '.join(unknown)}; valid categories: {', '.join(LABELS)}")
    if category and kind == "innocuous":
        raise fail("innocuous texts belong to no category: leave out --category")
    categories = list(dict.fromkeys(category)) if category else list(LABELS)

    params = project_params(root)
    volume = {"positives": {"positives_per_category": count},
              "negatives": {"hard_negatives_default": count, "hard_negatives": {}},
              "innocuous": {"innocuous": count}}[kind]
    gen = params.generate.model_copy(update={**volume, **({"backend": backend} if backend else {})})
    paths = params.paths
    target = out or root / {"positives": paths.positives, "negatives": paths.negatives, "innocuous": paths.innocuous}[kind]
    if kind == "innocuous" and out is not None and out.suffix != ".jsonl":
        target = out / "innocuous.jsonl"

    try:
        b = make_backend(gen, root=root, progress=True)
        if kind == "positives":
            stats = generate_positives(gen, target, categories=categories, backend=b)
        elif kind == "negatives":
            stats = generate_negatives(gen, target, None, categories=categories, backend=b)
        else:
            stats = generate_innocuous(gen, target, backend=b)
    except (ContractError, ValueError) as exc:
        raise fail(f"generate {kind}: {exc}") from None

    llm = stats.get("llm")
    table = Table(title=f"{kind} · {b.name}" + (f" · {llm['model']}" if llm else ""))
    table.add_column("category")
    table.add_column("records", justify="right")
    if llm:
        for col in ("requests", "cached", "rejected", "USD"):
            table.add_column(col, justify="right")
    per_category = stats.get("per_category") or {"innocuous": stats.get("records", 0)}
    for name, n in per_category.items():
        row = [name, f"{n:,}"]
        if llm:
            c = llm["per_category"].get(name, {})
            row += [str(c.get("requests", 0)), str(c.get("cached", 0)), str(c.get("rejected", 0)),
                    f"{c.get('cost_usd', 0):.4f}"]
        table.add_row(*row)
    console.print(table)
    if llm:
        priced = "" if llm["priced"] else " (no price for this model: add it to components/resources/prompts/pricing.yaml)"
        console.print(f"{llm['requests']} requests, {llm['cached']} answers from the cache, {llm['retries']} retries, "
                      f"{llm['rejected']} rejected ({', '.join(f'{k} {v}' for k, v in llm['rejected_by_reason'].items()) or 'none'}); "
                      f"spent ${llm['cost_usd']:.4f} (the data cost ${llm['cost_usd_with_cache']:.4f} in all){priced}",
                      highlight=False)
    where = target if kind == "innocuous" else f"{target}/<category>.jsonl"
    console.print(f"wrote {where}", highlight=False)
    if out is None and kind != "innocuous":
        console.print(f"read them: content-moderation review {categories[0]} {kind}", highlight=False)
