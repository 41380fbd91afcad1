"""`content-moderation`: the command line of the pipeline. `--help` on every command documents it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from flows.settings import apply_defaults, find_root

app = typer.Typer(
    name="content-moderation",
    help="Train, judge, promote and serve the 18-category content-moderation classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

REVIEW_KINDS = ("positives", "negatives", "perturbations")


def _setup(verbose: bool = False) -> Path:
    root = find_root()
    apply_defaults(root)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return root


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _params(root: Path):
    from components.params import ParamsError, load_params

    try:
        return load_params(root / "params.yaml")
    except ParamsError as exc:
        raise _fail(str(exc)) from None


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="The DAG step to run, e.g. generate-positives or merge.")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run one DAG step on params.yaml (what each dvc.yaml stage calls)."""
    from components.contract import ContractError
    from flows.stages import STAGES

    root = _setup(verbose)
    if name not in STAGES:
        raise _fail(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    params = _params(root)
    try:
        stats = STAGES[name](root, params)
    except (ContractError, ValueError) as exc:
        raise _fail(f"{name}: {exc}") from None
    console.print(f"[green]{name}[/] done in {stats['seconds']}s", highlight=False)


def _count_records(path: Path) -> int | None:
    """Records in a JSONL output (a folder: all its data files, rejects not counted)."""
    if path.is_dir():
        files = [f for f in sorted(path.glob("*.jsonl")) if "rejects" not in f.name]
    elif "rejects" in path.name:
        files = []
    else:
        files = [path] if path.suffix == ".jsonl" and path.exists() else []
    if not files:
        return None
    return sum(sum(1 for line in open(f, encoding="utf-8") if line.strip()) for f in files)


def pipeline_status(root: Path) -> list[dict]:
    """Each dvc.yaml stage: up to date or stale (and why), and its outputs with record counts."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stale = repo.status()
        rows = []
        for st in repo.index.stages:
            if not getattr(st, "cmd", None):
                continue
            outs = []
            for out in st.outs:
                p = Path(out.fs_path)
                parts = {f.stem: _count_records(f) for f in sorted(p.glob("*.jsonl"))} if p.is_dir() else {}
                outs.append({"path": str(p.relative_to(root)), "exists": p.exists(), "records": _count_records(p),
                             "files": {k: v for k, v in parts.items() if v is not None and len(parts) <= 4}})
            changes = stale.get(st.addressing, [])
            rows.append({"stage": st.name, "up_to_date": not changes, "changes": changes, "outs": outs})
    return rows


@app.command()
def status(json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """Each pipeline step: up to date or stale, with record counts of what it wrote."""
    root = _setup()
    rows = pipeline_status(root)
    if json_out:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="pipeline")
    for col in ("step", "state", "outputs (records)"):
        table.add_column(col)
    for row in rows:
        state = "[green]up to date[/]" if row["up_to_date"] else "[yellow]stale[/]"
        outs = "\n".join(
            f"{o['path']}  [dim]missing[/]" if not o["exists"]
            else f"{o['path']}  {o['records']:,} records"
            + (f" ({', '.join(f'{k} {v:,}' for k, v in o['files'].items())})" if o["files"] else "")
            if o["records"] is not None else o["path"]
            for o in row["outs"] if not o["path"].startswith("reports/")
        )
        table.add_row(row["stage"], state, outs)
    console.print(table)


def _dvc(root: Path, *args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "dvc"), *args]
    console.print(f"$ {' '.join(['dvc', *args])}", style="dim", highlight=False)
    if subprocess.run(cmd, cwd=root).returncode:
        raise _fail(f"dvc {' '.join(args)} failed (its output is above)")


@app.command()
def run(
    from_step: Annotated[Optional[str], typer.Option("--from", help="Rerun from this step onwards (forced).")] = None,
    to_step: Annotated[Optional[str], typer.Option("--to", help="Stop after this step (and what it needs).")] = None,
) -> None:
    """Run the pipeline through DVC: only stale steps run; a second run does nothing."""
    from flows.stages import STAGES

    root = _setup()
    for step in (from_step, to_step):
        if step and step not in STAGES:
            raise _fail(f"unknown step {step!r}; steps: {', '.join(STAGES)}")
    if from_step:
        _dvc(root, "repro", "--force", "--single-item", from_step)
    _dvc(root, "repro", *([to_step] if to_step else []))
    status()


@app.command()
def review(
    category: Annotated[str, typer.Argument(help="A category name, e.g. threats.")],
    kind: Annotated[str, typer.Argument(help="positives, negatives or perturbations.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many examples to show.")] = 10,
) -> None:
    """Print generated examples of one category readably, with their labels and context."""
    from components.contract import read_records
    from components.taxonomy import LABELS

    root = _setup()
    if category not in LABELS:
        raise _fail(f"unknown category {category!r}; valid categories: {', '.join(LABELS)}")
    if kind not in REVIEW_KINDS:
        raise _fail(f"unknown kind {kind!r}; valid kinds: {', '.join(REVIEW_KINDS)}")
    p = _params(root).paths
    path = {
        "positives": root / p.positives / f"{category}.jsonl",
        "negatives": root / p.negatives / f"{category}.jsonl",
        "perturbations": root / p.perturbations,
    }[kind]
    if not path.exists():
        raise _fail(f"{path} does not exist yet; run `content-moderation run --to generate-{kind}` first")
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
    from components.contract import ContractError, parse_lines

    logging.basicConfig(level=logging.WARNING)
    if not file.exists():
        raise _fail(f"{file}: no such file")
    try:
        result = parse_lines(file)
    except ContractError as exc:
        raise _fail(str(exc)) from None
    console.print(f"{file}: {len(result.records)} valid, {len(result.rejects)} invalid of {result.total} lines", highlight=False)
    for r in result.rejects[:show]:
        console.print(f"  line {r.line}: {r.reason}", highlight=False)
    if len(result.rejects) > show:
        console.print(f"  ... and {len(result.rejects) - show} more", highlight=False)
    if result.rejects:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
