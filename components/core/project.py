"""Where the project is: the one rule every command and step uses to find the checkout's root."""

from __future__ import annotations

from pathlib import Path


class ProjectNotFoundError(RuntimeError):
    pass


def find_root(start: Path | None = None, *, default: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) holding both
    dvc.yaml and params.yaml.

    Raises ProjectNotFoundError when there is none, unless ``default`` is given (then returned).
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() and (folder / "params.yaml").exists():
            return folder
    if default is not None:
        return default
    raise ProjectNotFoundError(
        f"no project found at or above {here}: run this inside the content-moderation checkout "
        "(the folder with dvc.yaml and params.yaml)"
    )
