"""The `content-moderation` application object and what every command shares: the project root,
the offline defaults, logging, params.yaml and the one way to fail with a message."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

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


def setup(verbose: bool = False) -> Path:
    root = find_root()
    apply_defaults(root)
    # Our own loggers at INFO; libraries (onnxruntime's quantiser logs every tensor) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("components", "flows"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    return root


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def project_params(root: Path):
    from components.core.params import ParamsError, load_params

    try:
        return load_params(root / "params.yaml")
    except ParamsError as exc:
        raise fail(str(exc)) from None
