"""`review` and `validate`: read generated examples, and check a JSONL file against the data contract."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli.app import app, console, fail, project_params, setup

REVIEW_KINDS = ("positives", "negatives", "perturbations")


@app.command()
def review(
    category: Annotated[str, typer.Argument(help="A category name, e.g. threats.")],
    kind: Annotated[str, typer.Argument(help="positives, negatives or perturbations.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many examples to show.")] = 10,
) -> None:
    """Print generated examples of one category readably, with their labels and context."""
    from components.core.contract import read_records
    from components.core.taxonomy import LABELS

    root = setup()
    if category not in LABELS:
        raise fail(f"unknown category {category!r}; valid categories: {', '.join(LABELS)}")
    if kind not in REVIEW_KINDS:
        raise fail(f"unknown kind {kind!r}; valid kinds: {', '.join(REVIEW_KINDS)}")
    p = project_params(root).paths
    path = {
        "positives": root / p.positives / f"{category}.jsonl",
        "negatives": root / p.negatives / f"{category}.jsonl",
        "perturbations": root / p.perturbations,
    }[kind]
    if not path.exists():
        raise fail(f"{path} does not exist yet; run `content-moderation run --to generate-{kind}` first")
    records = [r for r in read_records(path, max_reject_fraction=1.0).records if r.metadata.get("category") == category]
    table = Table(title=f"{category} · {kind} · {min(limit, len(records))} of {len(records)}", show_lines=True)
    table.add_column("id", style="dim", no_wrap=True)
    table.add_column("context", no_wrap=True)
    table.add_column("text")
    table.add_column("labels")
    for r in records[:limit]:
        ctx = f"{r.metadata.get('audience', '?')}/{r.metadata.get('surface', '?')}"
        extra = f"\n[dim]{r.metadata['perturbation']}[/]" if "perturbation" in r.metadata else ""
        table.add_row(r.id, ctx + extra, r.text, ", ".join(r.positive_labels()) or "-")
    console.print(table)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="A JSONL file to check against the data contract.")],
    show: Annotated[int, typer.Option(help="How many bad lines to list.")] = 20,
) -> None:
    """Check a JSONL file against the data contract; exit 1 if any line breaks it."""
    from components.core.contract import ContractError, parse_lines

    logging.basicConfig(level=logging.WARNING)
    if not file.exists():
        raise fail(f"{file}: no such file")
    if not file.is_file():
        raise fail(f"{file}: not a file; pass a JSONL file (one record a line)")
    try:
        result = parse_lines(file)
    except ContractError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{file}: cannot read it ({exc.strerror})") from None
    console.print(f"{file}: {len(result.records)} valid, {len(result.rejects)} invalid of {result.total} lines", highlight=False)
    for r in result.rejects[:show]:
        console.print(f"  line {r.line}: {r.reason}", highlight=False)
    if len(result.rejects) > show:
        console.print(f"  ... and {len(result.rejects) - show} more", highlight=False)
    if result.rejects:
        raise typer.Exit(1)
