"""`python -m flows.cli <command>`: the same commands as `content-moderation`."""

from flows.cli import app

app(prog_name="content-moderation")
