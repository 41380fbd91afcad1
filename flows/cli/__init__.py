"""`content-moderation`: the command line of the pipeline. `--help` on every command documents it.

One small module per group of commands; each registers its commands on the one ``app``
(``flows/cli/app.py``), which imports none of them, so there is no import cycle.
"""

from flows.cli.app import app

# Each module registers its commands on ``app`` when imported; `--help` lists them in this order.
from flows.cli import pipeline  # noqa: E402,F401,I001  stage, status, run
from flows.cli import data  # noqa: E402,F401  review, validate
from flows.cli import scoring  # noqa: E402,F401  predict, showcase
from flows.cli import evaluate  # noqa: E402,F401  evaluate
from flows.cli import registry  # noqa: E402,F401  deploy, promote, rollback, lineage
from flows.cli import serve  # noqa: E402,F401  serve
from flows.cli.env import env_app
from flows.cli.generate import generate

app.command()(generate)
app.add_typer(env_app, name="env")

__all__ = ["app"]
