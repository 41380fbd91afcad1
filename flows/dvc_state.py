"""What DVC knows about each stage, for the Prefect flow: its cache key, whether it is current, and
recording a step the flow ran.

`dvc.yaml` declares what each step reads (code and data dependencies, its params slice); the
flow derives its Prefect cache keys from the same declaration, so the two ways in cannot
disagree about what a step depends on:

- :func:`stage_key`: a hash of the stage's command, the content hash of every dependency
  (DVC's own hashes, so code files count) and the values of its params.
- :func:`is_current`: DVC's verdict (`dvc status` for that one stage): the lock records these
  dependencies and params, and the outputs on disk are the ones it recorded.
- :func:`record`: `dvc commit` for one stage after the flow ran it, so `dvc status` then
  reports nothing to do and the outputs are in the DVC cache, ready for `dvc push`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def stage_names(root: Path) -> list[str]:
    """The pipeline's stages in dvc.yaml order: the one list of steps every command and the flow use."""
    import yaml

    return list((yaml.safe_load((Path(root) / "dvc.yaml").read_text("utf-8")) or {}).get("stages") or {})


@contextlib.contextmanager
def _stage(root: Path, name: str) -> Iterator:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = [s for s in repo.index.stages if s.name == name]
        if not stages:
            known = ", ".join(s.name for s in repo.index.stages if s.cmd)
            raise KeyError(f"dvc.yaml has no stage {name!r}; stages: {known}")
        yield repo, stages[0]


def stage_key(root: Path, name: str) -> str:
    """The cache key of a stage: its command, its dependencies' content hashes, its params values."""
    with _stage(root, name) as (repo, stage):
        with repo.lock:
            stage.save_deps()
        deps = []
        for dep in stage.deps:
            info = dep.hash_info
            deps.append([str(dep.def_path), info.name if info else None, info.value if info else None])
    payload = json.dumps({"stage": name, "cmd": stage.cmd, "deps": deps}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


def is_current(root: Path, name: str) -> bool:
    """Whether `dvc status` finds this stage up to date (lock, dependencies and outputs agree)."""
    with _stage(root, name) as (repo, stage):
        with repo.lock:
            return not stage.changed()


@contextlib.contextmanager
def atomic_dvc_writes() -> Iterator[None]:
    """Make DVC's YAML writes (dvc.lock) atomic for the length of the block.

    DVC 3.67 rewrites dvc.lock in place (``open(path, "w+")`` then a streamed dump,
    ``dvc.utils.serialize._common._dump_data``): a run killed during that dump leaves half a lock
    file, and every later ``dvc`` command and flow run fails with "'./dvc.lock' validation failed".
    Here each such write goes to a temporary file beside the target that is renamed over it
    (:func:`components.core.contract.atomic_write`), so a kill leaves the old lock or the new one.
    Only local paths are redirected; anything else is written as DVC writes it.
    """
    from dvc.fs import LocalFileSystem
    from dvc.utils.serialize import _common

    from components.core.contract import atomic_write

    original = _common._dump_data

    def dump(path, data, dumper, fs=None, **dumper_args):
        if fs is not None and not isinstance(fs, LocalFileSystem):
            return original(path, data, dumper, fs=fs, **dumper_args)
        with atomic_write(path) as fh:
            dumper(data, fh, **dumper_args)

    _common._dump_data = dump
    try:
        yield
    finally:
        _common._dump_data = original


def record(root: Path, name: str) -> None:
    """`dvc commit` one stage the flow has just run: lock entry written (atomically), outputs cached."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo, atomic_dvc_writes():
        repo.commit(name, force=True)
    log.debug("dvc: committed stage %s", name)


def metrics_files(root: Path, name: str) -> list[Path]:
    """The statistics files a stage declares as `metrics` in dvc.yaml."""
    with _stage(root, name) as (_, stage):
        return [Path(out.fs_path) for out in stage.outs if out.metric]


def upstream(root: Path, name: str) -> set[str]:
    """The stage and every stage it needs (what `dvc repro <stage>` would consider)."""
    import networkx as nx

    with _stage(root, name) as (repo, stage):
        # DVC's graph points from a stage to the stages it depends on.
        return {s.name for s in nx.descendants(repo.index.graph, stage) if getattr(s, "cmd", None)} | {name}
