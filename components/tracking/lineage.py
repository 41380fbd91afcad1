"""The experiment lineage: v1 … v16 of DESIGN.md as data, and how new runs continue it.

The table lives in ``resources/lineage.yaml``. Each version names a parent and a set of param
overrides (dotted ``params.yaml`` keys); a version's effective overrides are its ancestors'
applied first, then its own. ``reported`` holds only the figures recorded at the time.

Loading validates everything once: versions unique and well-formed, parents known, no cycles,
every override key a real key of :class:`components.core.params.Params`, and the params that result
from each version's overrides still valid.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from components.core.params import Params

RESOURCE = "resources/lineage.yaml"
_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")


class LineageError(ValueError):
    pass


@dataclass(frozen=True)
class Experiment:
    version: str
    parent: str | None
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def number(self) -> int:
        return version_number(self.version)


@dataclass(frozen=True)
class LineageTable:
    experiments: dict[str, Experiment]  # in file order

    def __iter__(self):
        return iter(self.experiments.values())

    def __len__(self) -> int:
        return len(self.experiments)

    def __getitem__(self, version: str) -> Experiment:
        try:
            return self.experiments[version]
        except KeyError:
            raise LineageError(f"unknown lineage version {version!r}; known: {', '.join(self.experiments)}") from None

    def ancestors(self, version: str) -> list[str]:
        """Root first, ending with ``version`` itself."""
        chain = []
        cur: str | None = version
        while cur is not None:
            chain.append(cur)
            cur = self[cur].parent
        return chain[::-1]

    def overrides_for(self, version: str) -> dict[str, Any]:
        return merge_overrides(self[v].overrides for v in self.ancestors(version))

    def latest(self) -> str:
        return max(self.experiments, key=version_number)


# ---------------------------------------------------------------------------------------------
# versions


def version_number(version: str) -> int:
    m = _VERSION_RE.match(str(version))
    if not m:
        raise LineageError(f"lineage version {version!r} is not of the form v<N> (v1, v2, ...)")
    return int(m.group(1))


def next_version(existing_versions: Iterable[str]) -> str:
    """The version after the highest one given: ``v16`` → ``v17``; nothing given → ``v1``.

    Strings that are not versions are ignored, so tag values read back from a store can be
    passed as they are.
    """
    numbers = [int(m.group(1)) for v in existing_versions if v and (m := _VERSION_RE.match(str(v)))]
    return f"v{max(numbers, default=0) + 1}"


# ---------------------------------------------------------------------------------------------
# overrides


def merge_overrides(chain: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge dotted overrides, earlier (ancestor) first.

    A later key replaces the same key and anything beneath it (``generate.overlap`` replaces an
    earlier ``generate.overlap.csam.threats``); the result keeps the order they must be applied in.
    """
    out: dict[str, Any] = {}
    for overrides in chain:
        for key, value in overrides.items():
            for old in [k for k in out if k == key or k.startswith(key + ".")]:
                del out[old]
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a nested params dict with dotted overrides applied in order."""
    out = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = copy.deepcopy(value)
    return out


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip_optional(args[0])
    return tp


def check_param_key(key: str, model: type[BaseModel] = Params) -> None:
    """Raise LineageError unless ``key`` names a real (possibly nested) params key."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise LineageError(f"override key {key!r} is not a dotted params key")
    tp: Any = model
    walked: list[str] = []
    for part in parts:
        tp = _strip_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = tp.model_fields
            if part not in fields:
                where = ".".join(walked) or "params.yaml"
                raise LineageError(
                    f"override key {key!r}: {where} has no key {part!r}; valid: {', '.join(fields)}"
                )
            tp = fields[part].annotation
        elif typing.get_origin(tp) in (dict, Mapping):
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        else:
            raise LineageError(f"override key {key!r}: {'.'.join(walked)} is a value, it has no key {part!r}")
        walked.append(part)


def _base_params() -> dict[str, Any]:
    return Params().model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# loading


def _check_reported(version: str, reported: Any) -> dict[str, Any]:
    if reported is None:
        return {}
    if not isinstance(reported, dict):
        raise LineageError(f"{version}: reported must be a mapping of figures")
    for name, value in reported.items():
        values = value.values() if isinstance(value, dict) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise LineageError(f"{version}: reported.{name} must be a number or a mapping of numbers, got {v!r}")
    return reported


def parse_lineage(raw: Any, where: str = RESOURCE) -> LineageTable:
    if not isinstance(raw, dict) or not isinstance(raw.get("versions"), list):
        raise LineageError(f"{where}: expected a top-level 'versions' list")
    experiments: dict[str, Experiment] = {}
    for i, entry in enumerate(raw["versions"]):
        if not isinstance(entry, dict):
            raise LineageError(f"{where}: versions[{i}] is not a mapping")
        unknown = set(entry) - {"version", "parent", "description", "overrides", "reported", "notes"}
        if unknown:
            raise LineageError(f"{where}: versions[{i}] has unknown fields {sorted(unknown)}")
        version = str(entry.get("version", ""))
        version_number(version)
        if version in experiments:
            raise LineageError(f"{where}: version {version} is listed twice")
        parent = entry.get("parent")
        if parent is not None:
            parent = str(parent)
            version_number(parent)
        overrides = entry.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise LineageError(f"{where}: {version}.overrides must be a mapping of dotted params keys")
        for key in overrides:
            try:
                check_param_key(str(key))
            except LineageError as exc:
                raise LineageError(f"{where}: {version}: {exc}") from None
        notes = entry.get("notes") or []
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise LineageError(f"{where}: {version}.notes must be a list of strings")
        experiments[version] = Experiment(
            version=version,
            parent=parent,
            description=str(entry.get("description") or "").strip(),
            overrides={str(k): v for k, v in overrides.items()},
            reported=_check_reported(version, entry.get("reported")),
            notes=tuple(notes),
        )
    if not experiments:
        raise LineageError(f"{where}: no versions")

    roots = [e.version for e in experiments.values() if e.parent is None]
    if not roots:
        raise LineageError(f"{where}: no root version (one with parent: null)")
    for e in experiments.values():
        if e.parent is not None and e.parent not in experiments:
            raise LineageError(f"{where}: {e.version}'s parent {e.parent} is not in the table")
        if not e.description:
            raise LineageError(f"{where}: {e.version} has no description")
    for e in experiments.values():  # cycles: walking up must reach a root within len() steps
        seen = {e.version}
        cur = e.parent
        while cur is not None:
            if cur in seen:
                raise LineageError(f"{where}: the parents of {e.version} form a cycle through {cur}")
            seen.add(cur)
            cur = experiments[cur].parent

    table = LineageTable(experiments)
    base = _base_params()
    for e in table:
        try:
            Params.model_validate(apply_overrides(base, table.overrides_for(e.version)))
        except ValidationError as exc:
            errs = "; ".join(f"{'.'.join(map(str, er['loc']))}: {er['msg']}" for er in exc.errors())
            raise LineageError(f"{where}: {e.version}'s overrides give invalid params: {errs}") from None
    return table


def load_lineage(path: str | Path | None = None) -> LineageTable:
    """The lineage table: the packaged one, or the YAML file at ``path``."""
    if path is None:
        text = resources.files("components").joinpath(RESOURCE).read_text("utf-8")
        where = f"components/{RESOURCE}"
    else:
        text = Path(path).read_text("utf-8")
        where = str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LineageError(f"{where}: not valid YAML: {exc}") from None
    return parse_lineage(raw, where)


def overrides_for(version: str, table: LineageTable | None = None) -> dict[str, Any]:
    """The dotted overrides that reproduce ``version``: its ancestors' first, then its own."""
    return (table or load_lineage()).overrides_for(version)
