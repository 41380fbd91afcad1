"""What a dvc.yaml stage's code reads, found statically: the project modules its flows/stages.py
function imports (transitively, counting imports anywhere in a module, inside functions too), the
resource files those modules open, and the ``params`` it reads. Used by test_dvc_deps.py."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from components.core.params import Params
from tests.conftest import ROOT

PACKAGES = ("components", "flows", "moderation_env")
STAGES_MODULE = "flows.stages"
# A concrete project path written in code instead of taken from params.paths.
HIDDEN_PATH = re.compile(r"^(data|models|reports)/[^/\s{}]+")


def module_file(name: str) -> Path | None:
    """The file of a project module or package, or None when ``name`` is not one (e.g. a function)."""
    base = ROOT.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text("utf-8"), filename=str(path))


def _with_parents(name: str) -> set[str]:
    """``a.b.c`` imports ``a``, ``a.b`` and ``a.b.c``: each that is a project module."""
    parts = name.split(".")
    return {m for i in range(1, len(parts) + 1) if module_file(m := ".".join(parts[:i]))}


def imports_in(node: ast.AST, module: str, is_package: bool) -> set[str]:
    """Project modules imported anywhere under ``node`` (``from pkg import mod`` counts ``pkg.mod``)."""
    found: set[str] = set()
    for n in ast.walk(node):
        names: list[str] = []
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (n.level - 1)]
                source = ".".join(base + ([n.module] if n.module else []))
            else:
                source = n.module or ""
            names = [source, *(f"{source}.{a.name}" for a in n.names)]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found |= _with_parents(name)
    return found


def closure(seeds: set[str]) -> set[str]:
    """Every project module reachable from ``seeds`` by imports (flows/stages.py is not expanded:
    each stage counts only its own function's imports of it)."""
    seen: set[str] = set()
    todo = list(seeds)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None or name == STAGES_MODULE:
            continue
        todo += imports_in(_tree(path), name, path.name == "__init__.py")
    return seen


def stage_function(function_name: str) -> ast.FunctionDef:
    tree = _tree(module_file(STAGES_MODULE))
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function_name)


def stage_modules(function_name: str) -> set[str]:
    """The project modules a stage's code is made of: flows/stages.py's top-level imports, its function's
    imports, and everything those import."""
    tree = _tree(module_file(STAGES_MODULE))
    top = ast.Module(body=[n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))],
                     type_ignores=[])
    seeds = imports_in(top, STAGES_MODULE, False) | imports_in(stage_function(function_name), STAGES_MODULE, False)
    return closure(seeds | {STAGES_MODULE})


def _strings(path: Path) -> list[str]:
    """String constants of a module, and the constant start of each f-string (``f"offline/{x}.yaml"``)."""
    out = []
    for n in ast.walk(_tree(path)):
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.append(n.value)
        elif isinstance(n, ast.JoinedStr) and n.values and isinstance(n.values[0], ast.Constant):
            out.append(str(n.values[0].value))
    return out


def resources_read(module: str) -> set[str]:
    """Files and folders under ``<package>/resources`` a module names (relative to the project root)."""
    path = module_file(module)
    package = ROOT / module.split(".")[0]
    found = set()
    for s in _strings(path):
        if not s or len(s) > 200 or not ("/" in s or "." in s) or s.startswith(("/", ".")):
            continue
        if any(c.isspace() for c in s):  # prose, not a file name
            continue
        for base in (package, package / "resources"):
            candidate = (base / s.rstrip("/")).resolve()
            inside = candidate.is_relative_to(package / "resources") and candidate != package / "resources"
            if inside and candidate.exists():
                found.add(candidate.relative_to(ROOT).as_posix())
    return found


def hidden_paths(module: str) -> set[str]:
    """Project paths (``data/...``, ``models/...``, ``reports/...``) written in a module's code."""
    return {s for s in _strings(module_file(module)) if HIDDEN_PATH.match(s)}


def params_read(function_name: str) -> set[str]:
    """Dotted params a stage function reads: ``params.merge`` -> "merge", ``params.track.model_name`` -> ..."""
    found = set()
    for n in ast.walk(stage_function(function_name)):
        if not isinstance(n, ast.Attribute):
            continue
        chain, node = [], n
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "params":
            found.add(".".join(reversed(chain)))
    # keep the longest chains only: params.paths.splits, not also params.paths
    return {c for c in found if not any(o != c and o.startswith(c + ".") for o in found)}


def passes_whole_params(function_name: str) -> bool:
    """Whether the stage function hands the whole ``params`` object to its component."""
    for n in ast.walk(stage_function(function_name)):
        if isinstance(n, ast.Call) and not (isinstance(n.func, ast.Name) and n.func.id == "_report"):
            if any(isinstance(a, ast.Name) and a.id == "params" for a in [*n.args, *(k.value for k in n.keywords)]):
                return True
    return False


SECTIONS = tuple(Params.model_fields)  # paths, generate, ..., track


def whole_params_reads(module: str) -> set[str]:
    """Dotted params read from a ``params`` name that holds the whole Params (its first attribute is a
    section), in one module: what a component that is handed all of params.yaml reads."""
    found = set()
    for n in ast.walk(_tree(module_file(module))):
        chain, node = [], n
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if chain and isinstance(node, ast.Name) and node.id == "params" and chain[-1] in SECTIONS:
            found.add(".".join(reversed(chain)))
    return {c for c in found if not any(o != c and o.startswith(c + ".") for o in found)}


def direct_components(function_name: str) -> set[str]:
    """The component modules a stage function imports itself (``from components.register import ...``)."""
    return {m for m in imports_in(stage_function(function_name), STAGES_MODULE, False) if m.startswith("components.")
            and module_file(m) is not None and module_file(m).name != "__init__.py"}
