"""`stage`, `run` and `status`: the DAG's steps, run one at a time, as train-flow, or inspected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from flows.cli.app import app, console, fail, project_params, setup
from flows.dvc_state import stage_names

@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="The DAG step to run, e.g. generate-positives or merge.")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run one DAG step on params.yaml (what each dvc.yaml stage calls)."""
    from components.core.contract import ContractError
    from components.tracking import TrackingError
    from flows.stages import STAGES
    from flows.train_flow import PipelineBusyError, pipeline_lock

    root = setup(verbose)
    names = stage_names(root)
    if name not in names:
        raise fail(f"unknown stage {name!r}; stages: {', '.join(names)}")
    params = project_params(root)
    try:
        with pipeline_lock(root):
            stats = STAGES[name](root, params)
    except (ContractError, ValueError, OSError, TrackingError, PipelineBusyError) as exc:
        # OSError: a full disk (export's DiskFullError), a path that is a file, a missing input: its message names it
        raise fail(f"{name}: {exc}") from None
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
    return sum(sum(1 for line in open(f, "rb") if line.strip()) for f in files)  # bytes: never a decode error


def pipeline_status(root: Path) -> list[dict]:
    """Each dvc.yaml stage: up to date or stale (and why), and its outputs with record counts.

    Raises ``dvc.lock.LockError`` while another DVC command (a `dvc repro`) holds the repository lock.
    """
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
    from dvc.exceptions import DvcException
    from dvc.lock import LockError

    root = setup()
    params = project_params(root)  # a broken params.yaml is named here, line and fix, before DVC reads it
    try:
        rows = pipeline_status(root)
    except LockError:
        raise fail("the pipeline is busy: a `dvc repro` (or another DVC command) holds its lock "
                   "(.dvc/tmp/lock); run status again when it has finished") from None
    except DvcException as exc:
        raise fail(f"dvc cannot read the pipeline: {' '.join(str(exc).split())}") from None
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
    _print_registry(root, params)
    _print_report(root, params)


def _print_report(root: Path, params) -> None:
    """Where the run's report page is: the file, and its copy in MLflow (or why it is not there)."""
    page = root / params.paths.reports / "report.html"
    if not page.exists():
        console.print("report: not written yet (the report step writes it after register)", highlight=False)
        return
    console.print(f"report: {page.resolve().as_uri()}", highlight=False)
    try:
        logged = json.loads((root / params.paths.reports / "report.json").read_text("utf-8")).get("mlflow") or {}
    except (OSError, ValueError, AttributeError):
        return
    if logged.get("artifact_uri"):
        console.print(f"report in MLflow: {logged['artifact_uri']} (run {logged.get('run_id')})", highlight=False)
    elif logged.get("reason"):
        console.print(f"report in MLflow: not logged ({logged['reason']})", highlight=False)


def _print_registry(root: Path, params) -> None:
    """The champion (version, macro F1, when promoted) and the last run's verdict."""
    from components import tracking
    from flows.settings import tracking_uri

    last = root / params.paths.reports / "registry.json"
    if last.exists():
        r = json.loads(last.read_text())
        verdict = "[green]promoted to champion[/]" if r["promoted"] else "[yellow]stayed candidate[/]"
        reasons = list(r["reasons"])
        # The gate has dozens of checks over four tiers: the summary, and where every failing one is detailed.
        failed = reasons[0].removeprefix("gate failed: ").split(", ") if reasons[0].startswith("gate failed: ") else []
        why = "; ".join(reasons) if len(failed) <= 3 else (
            f"gate failed {len(failed)} checks, first {', '.join(failed[:3])}; every check with its figures is in "
            f"{params.paths.reports}/report.html")
        console.print(f"last run: {r['lineage_version']} → {r['model_name']} version {r['version']}, "
                      f"macro F1 {r['macro_f1']:.4f}, {verdict} ({why})", highlight=False)
        if r.get("experiment_id"):
            console.print(f"in the MLflow UI (mlflow ui --backend-store-uri {tracking.redact_uri(tracking_uri())}): "
                          f"http://127.0.0.1:5000{tracking.experiment_ui_path(r['experiment_id'])}", highlight=False)
    try:
        champ = tracking.champion(tracking_uri(), params.track.model_name,
                                  retry=tracking.RetryPolicy(attempts=1))
    except tracking.TrackingError as exc:
        console.print(f"champion: unknown ({exc})", highlight=False)
        return
    if champ is None:
        console.print(f"champion: none yet ({params.track.model_name} has no version that passed the gate)")
    else:
        f1 = "?" if champ["macro_f1"] is None else f"{champ['macro_f1']:.4f}"
        console.print(f"champion: {params.track.model_name} version {champ['version']}, macro F1 {f1}, "
                      f"promoted {champ['promoted_at'] or '?'}", highlight=False)


@app.command()
def run(
    from_step: Annotated[Optional[str], typer.Option("--from", help="Rerun this step even if current; what it changes reruns after it.")] = None,
    to_step: Annotated[Optional[str], typer.Option("--to", help="Stop after this step (and run only what it needs).")] = None,
    experiment: Annotated[Optional[str], typer.Option("--experiment", help="Reproduce a lineage version (v1..v16): writes its param overrides into params.yaml first.")] = None,
    task_runner: Annotated[str, typer.Option("--task-runner", help="default, or dask: the generation steps run one "
                                             "Prefect task per category on a Dask task runner.")] = "default",
    dask_workers: Annotated[int, typer.Option("--dask-workers", help="dask: processes of the local cluster.")] = 2,
    dask_address: Annotated[Optional[str], typer.Option("--dask-address", help="dask: a running scheduler "
                                                         "(tcp://host:8786) instead of a local cluster.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run train-flow in this process on an ephemeral Prefect: only stale steps run; a second run is all cached."""
    root = setup(verbose)  # before Prefect is imported: it reads PREFECT_HOME once
    from components.tracking import TrackingError
    from flows.task_runners import FanOut
    from flows.train_flow import PipelineBusyError, run_in_process

    try:
        fan_out = FanOut(task_runner, dask_workers, dask_address)
    except ValueError as exc:
        raise fail(str(exc)) from None

    names = stage_names(root)
    for step in (from_step, to_step):
        if step and step not in names:
            raise fail(f"unknown step {step!r}; steps: {', '.join(names)}")
    if experiment:
        _apply_experiment(root, experiment)
    params = project_params(root)  # validate before starting Prefect
    try:
        summary = run_in_process(root, to_step=to_step, force=[from_step] if from_step else None, fan_out=fan_out)
    except (PipelineBusyError, TrackingError, ValueError, OSError) as exc:
        raise fail(f"{exc}\nSteps that finished are kept and committed; run again to resume.") from None
    console.print("train-flow:", highlight=False)
    for name, info in summary.items():
        style = "dim" if info["state"] == "Cached" else "green"
        console.print(f"  [{style}]{name}: {info['state']}[/] ({info['seconds']} s)", highlight=False)
    if to_step is None or to_step in ("evaluate", "register"):
        _print_verdict(root, params)
        _print_registry(root, params)


def _apply_experiment(root: Path, version: str) -> None:
    """Write a lineage version's overrides (and track.reproduces) into params.yaml, keeping its comments."""
    from components.tracking.lineage import LineageError, load_lineage
    from components.core.params import ParamsError
    from flows.params_file import set_params

    try:
        overrides = load_lineage().overrides_for(version)
    except LineageError as exc:
        raise fail(str(exc)) from None
    try:
        set_params(root / "params.yaml", {**overrides, "track.reproduces": version})
    except ParamsError as exc:
        raise fail(f"{version}'s overrides do not give valid params: {exc}") from None
    shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items()) or "none (as its parent)"
    console.print(f"params.yaml now reproduces {version}: {shown}. `git checkout params.yaml` returns to the "
                  "defaults.", highlight=False)


def _print_verdict(root: Path, params) -> None:
    """The gate's verdict on the model the last evaluation judged, in one screen."""
    path = root / params.paths.reports / "metrics.json"
    if not path.exists():
        return
    m = json.loads(path.read_text())
    gate = m["gate"]
    verdict = "[green]PASSED[/]" if gate["passed"] else "[red]FAILED[/]"
    console.print(f"quality gate {verdict}: served variant {m['served_variant']}, test macro F1 "
                  f"{m['test']['macro_f1']:.4f}, micro F1 {m['test']['micro_f1']:.4f}; release folder "
                  f"{params.paths.model}/release")
    failing = [c for c in gate["checks"] if not c["passed"]]
    regression = next((c for c in gate["checks"] if c["name"] == "no_regression"), None)
    if regression is not None and regression["passed"]:
        console.print(f"  no_regression: {regression['detail']}", highlight=False)
    for check in failing:
        console.print(f"  failing {check['name']}: {check['detail']}", highlight=False)
    if failing:
        console.print("  the model stays a candidate; see reports/metrics.json and `content-moderation showcase`")
