"""`content-moderation env`: serve the moderation environment, or play it with an agent."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from flows.cli.app import fail
from flows.settings import apply_defaults, find_root

env_app = typer.Typer(
    name="env",
    help="The OpenEnv moderation environment: serve it over HTTP/WebSocket, or score a moderator on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

AGENT_HELP = "classifier (an exported model folder), claude (anthropic SDK), local (OpenAI-compatible server), " \
             "random, approve-all"


@env_app.command()
def serve(
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Interface to bind (0.0.0.0 to expose it).")] = "127.0.0.1",
    max_sessions: Annotated[int, typer.Option("--max-sessions", help="Concurrent WebSocket sessions.")] = 64,
    datasets: Annotated[Optional[Path], typer.Option("--datasets", help="Also serve real items from the research-only "
                        "public sets (LIAR, SDCNL, cyberbullying) read from this folder, e.g. ../shared/datasets; "
                        "they are never committed.")] = None,
) -> None:
    """Serve the environment: /reset /step /state (HTTP sessions by episode id), /ws, /health, /schema, /metadata, /docs."""
    import uvicorn

    from moderation_env.server import create_moderation_app

    apply_defaults(find_root())
    bank = _bank(datasets)
    console.print(f"moderation environment on http://{host}:{port}  (docs: /docs, WebSocket: /ws)")
    uvicorn.run(create_moderation_app(bank=bank, max_concurrent_envs=max_sessions), host=host, port=port,
                log_level="warning")


def _bank(datasets: Optional[Path]):
    """The committed bank (None), or it plus the research-only sets read from ``datasets``."""
    if datasets is None:
        return None
    from moderation_env.build_items import extended_bank

    try:
        bank = extended_bank(datasets)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise fail(f"--datasets {datasets}: {exc}") from None
    console.print(f"item bank {bank.version}: {len(bank.items)} items (research-only sets included)")
    return bank


def _step_line(task: str, rec, max_steps: int) -> str:
    parts = ", ".join(f"{k} {v:.2f}" for k, v in rec.components.items() if k not in ("reward", "correctness"))
    line = (f"[{task}] {rec.step:>2}/{max_steps} {rec.content_id:<28} {','.join(rec.labels):<24} "
            f"{rec.action:<14} conf {rec.confidence:.2f}  reward {rec.reward:+.3f}  ({parts})")
    return line + (f"  error: {rec.error}" if rec.error else "")


@env_app.command()
def run(
    agent: Annotated[str, typer.Option("--agent", "-a", help=AGENT_HELP)] = "random",
    task: Annotated[str, typer.Option("--task", "-t", help="A task name or 'all'.")] = "all",
    seed: Annotated[int, typer.Option("--seed", help="Episode seed: the same seed serves the same items.")] = 42,
    url: Annotated[Optional[str], typer.Option("--url", help="Play a served environment (e.g. http://127.0.0.1:8000) "
                                                              "instead of one in this process.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="classifier: an exported model folder "
                                                                  "(default models/moderation/release).")] = None,
    variant: Annotated[Optional[str], typer.Option("--variant", help="classifier: fp32, fp16 or int8.")] = None,
    llm_model: Annotated[Optional[str], typer.Option("--llm-model", help="claude/local: the model name.")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="claude: API endpoint; local: the server's "
                                                                       "/v1 URL (default http://127.0.0.1:8080/v1).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Report path "
                                                   "(default reports/env_run_<agent>.json).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the per-task scores.")] = False,
    datasets: Annotated[Optional[Path], typer.Option("--datasets", help="Also serve real items from the research-only "
                        "public sets (LIAR, SDCNL, cyberbullying) read from this folder, e.g. ../shared/datasets; "
                        "they are never committed.")] = None,
) -> None:
    """Score a moderator on the environment's tasks: one line per step, then per-task scores; writes a JSON report."""
    from moderation_env.agents import AGENTS, make_agent
    from moderation_env.environment import TASKS, ModerationEnvironment
    from moderation_env.runner import LocalSession, RemoteSession, expand_tasks, run_tasks

    root = find_root()
    apply_defaults(root)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if agent not in AGENTS:
        raise fail(f"unknown agent {agent!r}; agents: {', '.join(AGENTS)}")
    try:
        tasks = expand_tasks(task)
    except ValueError as exc:
        raise fail(str(exc)) from None
    options: dict = {}
    if agent == "classifier":
        options = {"variant": variant}
    elif agent in ("claude", "local"):
        options = {"model": llm_model, "base_url": base_url}
    try:
        moderator = make_agent(agent, seed=seed, model_folder=model or root / "models/moderation/release", **options)
    except Exception as exc:  # a missing model folder or API key: its message says what to do
        raise fail(f"{agent}: {exc}") from None
    if url and datasets:
        raise fail("--datasets changes the bank of an environment in this process; with --url the server's bank "
                    "is used (start it with: content-moderation env serve --datasets ...)")
    try:
        session = RemoteSession(url) if url else LocalSession(ModerationEnvironment(bank=_bank(datasets)))
    except ConnectionError as exc:
        raise fail(f"{exc}; start one with: content-moderation env serve") from None

    def on_step(task_name: str, rec) -> None:
        if not quiet:
            console.print(_step_line(task_name, rec, TASKS[task_name].max_steps), markup=False)

    try:
        report = run_tasks(session, moderator, tasks, seed, on_step)
    finally:
        session.close()
    report["url"] = url
    report["bank_version"] = None if url else session.env.bank.version
    table = Table(title=f"{agent} · seed {seed}")
    for col in ("task", "steps", "score", "total reward"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for ep in report["episodes"]:
        table.add_row(ep["task"], str(len(ep["steps"])), f"{ep['score']:.3f}", f"{ep['total_reward']:+.3f}")
    table.add_row("[bold]mean[/]", "", f"[bold]{report['mean_score']:.3f}[/]", "")
    console.print(table)
    if report["agent_failures"]:
        err.print(f"[yellow]{report['agent_failures']} answers from the {agent} agent were unusable "
                  "(scored as request_review, confidence 0)[/]")
    path = output or root / "reports" / f"env_run_{agent.replace('-', '_')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"report: {path}")
