"""Edit params.yaml in place, the way `dvc exp run --set-param` does: comments and order kept.

The edited file is validated as a whole before it replaces the old one (atomically), so a bad
override never leaves a broken params.yaml behind.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.core.contract import atomic_write
from components.core.params import Params, ParamsError


def _plain(value: Any) -> Any:
    """ruamel's round-trip containers as plain dicts/lists, for validation."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def set_params(path: Path, overrides: Mapping[str, Any]) -> None:
    """Apply dotted overrides (``{"train.profile": "production"}``) to a params file."""
    from pydantic import ValidationError
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments, key order and flow style survive
    yaml.preserve_quotes = True
    doc = yaml.load(path.read_text("utf-8")) or {}
    for key, value in overrides.items():
        node = doc
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), Mapping):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    try:
        Params.model_validate(_plain(doc))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ParamsError(problems) from None
    buf = io.StringIO()
    yaml.dump(doc, buf)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
