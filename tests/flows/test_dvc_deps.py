"""DVC sees every change: each dvc.yaml stage's deps cover every project module its code imports and
every resource file it reads, every path it uses is a ``params.paths`` entry declared in the stage, and
its ``params`` list names the params it reads.

The static tests find what a stage's code is made of from its function in flows/stages.py
(tests/flows/imports.py). The behavioural test edits each of those files in a temporary copy of the
project and checks that `dvc status` marks every stage that imports it stale, and that train-flow's
cache key of the stage (flows.dvc_state.stage_key) changes.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from components.core.params import Paths
from flows.stages import STAGES
from tests.conftest import ROOT
from tests.flows.imports import (
    direct_components,
    hidden_paths,
    module_file,
    params_read,
    passes_whole_params,
    resources_read,
    stage_modules,
    whole_params_reads,
)
from tests.project import make_project, sh

DVC_STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text("utf-8"))["stages"]
PATHS = yaml.safe_load((ROOT / "params.yaml").read_text("utf-8"))["paths"]
FUNCTIONS = {name: fn.__name__ for name, fn in STAGES.items()}
# A path a step uses without declaring it in dvc.yaml, and why that cannot make a stage stale.
UNDECLARED_PATHS = {
    "embedding_cache": "a content-addressed cache of encoder features keyed by model and text: "
                       "a hit returns what a miss would compute",
}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def resolved_deps(stage: str) -> list[str]:
    """The stage's deps with ``${paths.x}`` replaced by params.yaml's value."""
    return [re.sub(r"\$\{paths\.(\w+)\}", lambda m: PATHS[m.group(1)], d).rstrip("/")
            for d in DVC_STAGES[stage].get("deps", [])]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d + "/") for d in deps)


def empty_init(path: str) -> bool:
    return path.endswith("__init__.py") and not (ROOT / path).read_text("utf-8").strip()


def code_files(stage: str) -> set[str]:
    return {rel(module_file(m)) for m in stage_modules(FUNCTIONS[stage]) if module_file(m)}


def resource_files(stage: str) -> set[str]:
    return set().union(*(resources_read(m) for m in stage_modules(FUNCTIONS[stage])))


def declared(stage: str) -> str:
    """Everything dvc.yaml says of the stage, as text: where its ``${paths.x}`` are named."""
    return json.dumps(DVC_STAGES[stage])


@pytest.mark.parametrize("stage", list(FUNCTIONS))
def test_deps_cover_every_module_the_stage_imports(stage):
    deps = resolved_deps(stage)
    files = code_files(stage)
    assert "flows/stages.py" in files and any(f.startswith(f"components/{stage.replace('-', '_')}") for f in files)
    missing = sorted(f for f in files if not covered(f, deps) and not empty_init(f))
    assert not missing, f"dvc.yaml stage {stage!r} imports these but does not list them in deps: {missing}"


@pytest.mark.parametrize("stage", list(FUNCTIONS))
def test_deps_cover_every_resource_file_the_stage_reads(stage):
    deps = resolved_deps(stage)
    files = resource_files(stage)
    assert "components/resources/taxonomy.yaml" in files  # every stage reads the taxonomy
    missing = sorted(f for f in files if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage!r} reads these resources but does not list them in deps: {missing}"


@pytest.mark.parametrize("stage", list(FUNCTIONS))
def test_no_project_path_is_hidden_in_the_stage_code(stage):
    hidden = {m: sorted(p) for m in stage_modules(FUNCTIONS[stage]) if m != "components.core.params"
              and (p := hidden_paths(m))}
    assert not hidden, f"paths written in code instead of params.paths: {hidden}"


@pytest.mark.parametrize("stage", list(FUNCTIONS))
def test_every_path_the_stage_uses_is_a_params_path_declared_in_the_stage(stage):
    used = {c.split(".")[1] for c in params_read(FUNCTIONS[stage]) if c.startswith("paths.")}
    assert used <= set(Paths.model_fields), f"not in params.paths: {sorted(used - set(Paths.model_fields))}"
    undeclared = sorted(p for p in used if f"${{paths.{p}}}" not in declared(stage) and p not in UNDECLARED_PATHS)
    assert not undeclared, f"stage {stage!r} uses params.paths {undeclared} but dvc.yaml names none of them"


@pytest.mark.parametrize("stage", list(FUNCTIONS))
def test_the_params_list_names_every_param_the_stage_reads(stage):
    function = FUNCTIONS[stage]
    reads = set(params_read(function))
    if passes_whole_params(function):  # the component is handed all of params.yaml: what does it read?
        reads |= set().union(*(whole_params_reads(m) for m in direct_components(function)))
    reads = {r for r in reads if r.split(".")[0] != "paths" and r != "paths"}
    listed = [p for p in DVC_STAGES[stage].get("params", []) if isinstance(p, str)]
    unlisted = sorted(r for r in reads if not any(r == p or r.startswith(p + ".") or p.startswith(r + ".")
                                                  for p in listed))
    assert reads, f"{stage}: found no params read (the analysis is broken)"
    assert not unlisted, f"stage {stage!r} reads {unlisted} but its dvc.yaml params list does not name them"


# --------------------------------------------------------------------------- behaviour


def _placeholders(repo: Path) -> None:
    """Stand-in outputs for every stage, so `dvc commit` can record a current dvc.lock without running."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        stages = [s for s in dvc.index.stages if s.cmd]
        for st in stages:
            for out in st.outs:
                path = Path(out.fs_path)
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("{}\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder.jsonl").write_text("{}\n")
        for st in stages:
            for dep in st.deps:
                path = Path(dep.fs_path)
                if not path.exists():  # a file inside another stage's output folder
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("{}\n")


def _files_and_users() -> dict[str, set[str]]:
    """Each code or resource file a stage's code reads -> the stages that read it."""
    users: dict[str, set[str]] = defaultdict(set)
    for stage in FUNCTIONS:
        for f in code_files(stage):
            if not empty_init(f):
                users[f].add(stage)
        for r in resource_files(stage):
            path = ROOT / r
            one = path if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())[0]
            users[rel(one)].add(stage)
    return users


@pytest.mark.slow
def test_editing_any_file_a_stage_reads_makes_it_stale_in_dvc_and_in_train_flow(tmp_path):
    from dvc.repo import Repo

    from flows.dvc_state import stage_key

    repo = make_project(tmp_path)
    _placeholders(repo)
    sh(repo, "dvc", "commit", "--force")
    assert json.loads(sh(repo, "dvc", "status", "--json")) == {}
    keys = {s: stage_key(repo, s) for s in FUNCTIONS}
    users = _files_and_users()
    assert len(users) > 40 and "components/core/contract.py" in users and "flows/stages.py" in users
    problems = []
    for f, stages in sorted(users.items()):
        path = repo / f
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited by test_dvc_deps\n")
        try:
            with Repo(str(repo)) as dvc:
                stale = {name.split(":")[-1] for name in dvc.status()}
            changed = {s for s in stages if stage_key(repo, s) != keys[s]}
        finally:
            path.write_bytes(original)
        if stages - stale:
            problems.append(f"{f}: dvc status leaves {sorted(stages - stale)} up to date")
        if stages - changed:
            problems.append(f"{f}: train-flow's cache key of {sorted(stages - changed)} did not change")
    assert not problems, "\n".join(problems)
    assert json.loads(sh(repo, "dvc", "status", "--json")) == {}  # restored: current again
    assert {s: stage_key(repo, s) for s in FUNCTIONS} == keys
