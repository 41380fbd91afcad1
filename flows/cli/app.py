"""The `content-moderation` application object and what every command shares: the project root,
the offline defaults, logging, params.yaml and the one way to fail with a message."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperGroup

from flows.settings import apply_defaults, find_root

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def shown(value: str, limit: int = 60) -> str:
    """A command-line value as it can be printed: quoted, bad bytes escaped, long ones cut."""
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"'{text if len(text) <= limit else text[: limit - 1] + '…'}'"


def argument_problem(value: str) -> str | None:
    """Why a command-line value is unusable (bytes that are not UTF-8), or None."""
    from components.core.validity import non_utf8

    found = non_utf8(value)
    if found is None:
        return None
    at, what = found
    return (f"is not valid UTF-8 ({what} at character {at}); pass UTF-8 text "
            "(set the terminal to UTF-8, e.g. export LANG=C.UTF-8; rename a file whose name is not UTF-8)")


class _CheckedGroup(TyperGroup):
    """The command group that refuses, before any command runs, an argument that is not UTF-8:
    argv carries such bytes as surrogates, which crash the first print or tokenizer that meets them."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        for i, value in enumerate(args, start=1):
            problem = argument_problem(value)
            if problem:
                err.print(f"[bold red]error:[/] argument {i} {shown(value)} {problem}", highlight=False)
                ctx.exit(2)
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="content-moderation",
    cls=_CheckedGroup,
    help="Train, judge, promote and serve the 18-category content-moderation classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def setup(verbose: bool = False) -> Path:
    """Find the project root, apply the offline defaults and set up logging; returns the root."""
    root = find_root()
    apply_defaults(root)
    # Our own loggers at INFO; libraries (onnxruntime's quantiser logs every tensor) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("components", "flows"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    return root


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise (``raise fail(...)``)."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def project_params(root: Path):
    """params.yaml of the project, validated; a bad file ends the command with its message."""
    from components.core.params import ParamsError, load_params

    try:
        return load_params(root / "params.yaml")
    except ParamsError as exc:
        raise fail(str(exc)) from None
