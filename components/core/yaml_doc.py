"""Reading a YAML file a person edits (params.yaml) strictly, with messages that name the line.

PyYAML accepts a key written twice (the last one silently wins) and reports syntax errors over
several lines; a file that is not UTF-8 raises a bare ``UnicodeDecodeError``. Here each of these
is one :class:`YamlFileError` naming the file, the line and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """A YAML file that cannot be read as one document of unique keys; the message says where and why."""


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: its data and its node tree (for the line of any key)."""

    path: Path
    data: Any
    node: yaml.Node | None

    def line_of(self, keys: Sequence[Any]) -> int | None:
        """The 1-based line of the deepest of ``keys`` (a path of mapping keys) found in the file."""
        node, line = self.node, None
        for key in keys:
            if not isinstance(node, yaml.MappingNode):
                break
            match = next(((k, v) for k, v in node.value
                          if isinstance(k, yaml.ScalarNode) and k.value == str(key)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        return line


def _mark(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"


def _check_nodes(node: yaml.Node | None, where: str, path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            here = f"{where}.{name}" if where else str(name)
            if name is not None and name in first:
                raise YamlFileError(
                    f"{path} line {key.start_mark.line + 1}: {here} is written twice (first on line {first[name]}); "
                    "keep one of them")
            if name is not None:
                first[name] = key.start_mark.line + 1
            _check_nodes(value, here, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _check_nodes(value, f"{where}[{i}]", path)
    elif isinstance(node, yaml.ScalarNode):
        try:
            node.value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a "\\ud800" escape in a double-quoted string
            raise YamlFileError(
                f"{path} line {node.start_mark.line + 1}: {where or 'a value'} holds a lone surrogate "
                f"U+{ord(node.value[exc.start]):04X}, which is not valid UTF-8; write the whole character") from None


def read_yaml(path: str | os.PathLike) -> YamlDocument:
    """Read one YAML document: UTF-8, valid syntax, no key written twice at any depth."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise YamlFileError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlFileError(f"{path} line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8; re-save the file as "
                            "UTF-8") from None
    try:
        loader = yaml.SafeLoader(text)  # one parse: the node tree gives the lines, then the data
        try:
            node = loader.get_single_node()
            _check_nodes(node, "", path)
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise YamlFileError(f"{path} {_mark(exc)}: not valid YAML: {problem}; fix the indentation or quoting "
                            "there") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return YamlDocument(path, data, node)
