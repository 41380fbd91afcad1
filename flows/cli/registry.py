"""`deploy`, `promote`, `rollback` and `lineage`: the nightly deployment and the model registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table
from typing import Annotated

from flows.cli.app import app, console, fail, project_params, setup

def _deployment_spec(root: Path, name: str) -> dict:
    import yaml

    path = root / "prefect.yaml"
    if not path.exists():
        raise fail(f"{path} not found: the deployments are defined there")
    specs = {d.get("name"): d for d in (yaml.safe_load(path.read_text()) or {}).get("deployments") or []}
    if name not in specs:
        raise fail(f"prefect.yaml defines no deployment {name!r}; it defines: {', '.join(map(str, specs)) or 'none'}")
    return specs[name]


def _prefect_api_reachable(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url.rstrip("/") + "/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@app.command()
def deploy(
    name: Annotated[str, typer.Option("--name", help="The deployment in prefect.yaml.")] = "nightly",
    cron: Annotated[Optional[str], typer.Option("--cron", help="Override the schedule, e.g. '30 2 * * *'.")] = None,
    timezone: Annotated[Optional[str], typer.Option("--timezone", help="IANA timezone of the schedule.")] = None,
) -> None:
    """Serve train-flow/<name> (prefect.yaml) against the Prefect server at PREFECT_API_URL until stopped.

    Runs on the schedule and whenever someone runs `prefect deployment run 'train-flow/nightly'`.
    """
    import os

    root = setup()  # before Prefect is imported: it reads PREFECT_HOME once
    from prefect.schedules import Cron

    from flows.train_flow import train_flow

    spec = _deployment_spec(root, name)
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise fail("PREFECT_API_URL is not set: start a server (`prefect server start --host 127.0.0.1`) and "
                    "`export PREFECT_API_URL=http://127.0.0.1:4200/api`, then deploy again")
    if not _prefect_api_reachable(api):
        raise fail(f"no Prefect server answers at {api}: start one with `prefect server start --host 127.0.0.1` "
                    "(or point PREFECT_API_URL at yours)")
    schedule = (spec.get("schedules") or [{}])[0]
    cron = cron or schedule.get("cron") or "0 3 * * *"
    timezone = timezone or schedule.get("timezone") or "UTC"
    console.print(f"serving train-flow/{name} on cron {cron!r} ({timezone}) from {root}; Ctrl-C stops it",
                  highlight=False)
    train_flow.serve(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        parameters=spec.get("parameters") or {},
        description=spec.get("description"),
        tags=spec.get("tags") or [],
        global_limit=spec.get("concurrency_limit") or 1,
        pause_on_shutdown=False,
    )


def _registry_call(fn, *args, **kwargs):
    from components.tracking import RegistryError, TrackingError

    try:
        return fn(*args, **kwargs)
    except (RegistryError, TrackingError) as exc:
        raise fail(str(exc)) from None


def _who(who: Optional[str]) -> str:
    import getpass

    return who or getpass.getuser()


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="The registered model version to make champion.")],
    why: Annotated[str, typer.Option("--why", help="Why (recorded as a tag).")],
    who: Annotated[Optional[str], typer.Option("--who", help="Who (recorded as a tag; default: your user name).")] = None,
) -> None:
    """Make a model version champion by hand (who and why are recorded; a gate override is flagged)."""
    from components import tracking
    from flows.settings import tracking_uri

    root = setup()
    params = project_params(root)
    champ = _registry_call(tracking.promote, tracking_uri(), version, _who(who), why, params.track.model_name)
    console.print(f"{params.track.model_name} champion is now version {champ['version']}", highlight=False)


@app.command()
def rollback(
    why: Annotated[str, typer.Option("--why", help="Why (recorded as a tag).")],
    who: Annotated[Optional[str], typer.Option("--who", help="Who (recorded as a tag; default: your user name).")] = None,
) -> None:
    """Move champion back to the version the current champion replaced."""
    from components import tracking
    from flows.settings import tracking_uri

    root = setup()
    params = project_params(root)
    champ = _registry_call(tracking.rollback, tracking_uri(), _who(who), why, params.track.model_name)
    console.print(f"{params.track.model_name} champion rolled back to version {champ['version']}", highlight=False)


lineage_app = typer.Typer(help="The experiment lineage (v1 … v16 of the design, and every run since).",
                          no_args_is_help=True)
app.add_typer(lineage_app, name="lineage")


@lineage_app.command("import")
def lineage_import() -> None:
    """Record the sixteen historical experiments in MLflow as runs (idempotent)."""
    from components import tracking
    from flows.settings import artifact_location, tracking_uri

    root = setup()
    params = project_params(root)
    uri = tracking_uri()
    ids = _registry_call(tracking.import_lineage, uri, params.track.experiment,
                         artifact_location=artifact_location(root, uri))
    console.print(f"lineage: {len(ids)} historical runs in experiment {params.track.experiment!r} "
                  f"({tracking.redact_uri(uri)})", highlight=False)


@lineage_app.command("show")
def lineage_show() -> None:
    """The lineage table: version, parent, overrides and the figures reported at the time."""
    from components.tracking.lineage import load_lineage

    table = Table(title="experiment lineage", box=box.SIMPLE)
    for col in ("version", "parent", "overrides", "reported", "description"):
        table.add_column(col, overflow="fold")
    for exp in load_lineage():
        table.add_row(exp.version, exp.parent or "", json.dumps(exp.overrides), json.dumps(exp.reported),
                      exp.description)
    console.print(table)
