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
from components.core.params import ParamsError, read_params_file, validate_params


def _plain(value: Any) -> Any:
    """ruamel's round-trip containers as plain dicts/lists, for validation."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def set_params(path: Path, overrides: Mapping[str, Any]) -> None:
    """Apply dotted overrides (``{"train.profile": "production"}``) to a params file.

    The file must read cleanly first (UTF-8, valid YAML, no key twice: a ParamsError names the line);
    the result must validate (a ParamsError names each bad key) before it replaces the file.
    """
    from ruamel.yaml import YAML

    path = Path(path)
    read_params_file(path)  # the same strict reading as load_params: one message per problem, no traceback
    yaml = YAML()  # round-trip: comments, key order and flow style survive
    yaml.preserve_quotes = True
    doc = yaml.load(path.read_text("utf-8")) or {}
    for key, value in overrides.items():
        node = doc
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if part not in node:
                node[part] = {}
            elif not isinstance(node[part], Mapping):
                raise ParamsError(f"cannot set {key}: {'.'.join(parts[:i + 1])} is a "
                                  f"{type(node[part]).__name__}, not a section")
            node = node[part]
        node[parts[-1]] = value
    validate_params(_plain(doc), path=path)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
