"""Where the served model comes from, and the holder the service reads it from.

A model reference is ``models:/<name>@<alias>`` (follows the alias: the registry is polled and a
moved alias loads the new version), ``models:/<name>/<version>`` (one version, loaded once) or a
local release folder. A registry version is downloaded once into
``<cache>/<name>/<version>/`` (built in a temporary sibling and renamed into place, under a file
lock, so several processes can share the cache) and its release folder found inside: an MLflow
pyfunc model (an ``MLmodel`` file) keeps it in ``artifacts/release``; a plain ``model/`` artifact
directory (what the register step logs today) is the release folder itself.

:class:`ModelHolder` holds the loaded model. :meth:`ModelHolder.check` (blocking; the service runs
it in a thread) asks the registry, downloads and loads a new version and only then replaces the
reference: a batch that already took the old model finishes with it, the next takes the new one.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.model.onnx_runtime import OnnxClassifier
from components.serving.moderate import moderate

log = logging.getLogger(__name__)

REGISTRY_SCHEME = "models:/"
SOURCE_MARKER = ".serving-source.json"
WARM_UP = "Thanks for the quick reply, see you at the market on Saturday morning."
# What the registry answers for a name, alias or version it does not have (as the tracking code reads it).
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class ModelRefError(ValueError):
    """A ``--model`` value that is neither a registry URI nor a folder."""


@dataclass(frozen=True)
class ModelRef:
    """What to serve: a registered model by alias or version, or a folder (``folder`` set)."""

    name: str | None = None
    alias: str | None = None
    version: str | None = None
    folder: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> "ModelRef":
        """``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a path to a release folder."""
        if spec.startswith(REGISTRY_SCHEME):
            rest = spec[len(REGISTRY_SCHEME):].strip("/")
            if "@" in rest:
                name, _, alias = rest.rpartition("@")
                if name and alias:
                    return cls(name=name, alias=alias)
            elif "/" in rest:
                name, _, version = rest.rpartition("/")
                if name and version.isdigit():
                    return cls(name=name, version=version)
            raise ModelRefError(f"{spec!r} is not models:/<name>@<alias> or models:/<name>/<version> "
                                "(e.g. models:/content-moderation@champion, models:/content-moderation/3)")
        if "://" in spec or spec.startswith(("runs:/", "models:")):
            raise ModelRefError(f"{spec!r}: give models:/<name>@<alias>, models:/<name>/<version> or a folder")
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise ModelRefError(f"{spec}: no such folder; give a release folder (e.g. models/moderation/release) "
                                "or models:/<name>@<alias>")
        return cls(folder=folder.resolve())

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    def __str__(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        return f"{REGISTRY_SCHEME}{self.name}@{self.alias}" if self.alias else f"{REGISTRY_SCHEME}{self.name}/{self.version}"


@dataclass(frozen=True)
class LoadedModel:
    """A loaded classifier and what it is: registry name, version and alias (None for a folder)."""

    classifier: OnnxClassifier
    name: str
    version: str | None
    alias: str | None
    source: str

    @property
    def variant(self) -> str:
        return self.classifier.variant

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "variant": self.variant}


class NoModelYet(LookupError):
    """The registry answered: it has no version under that alias (or no such version)."""


def no_model_message(ref: ModelRef) -> str:
    if ref.alias:
        return (f"no model has the alias {ref.alias!r} yet; promote one (content-moderation promote <version> "
                f"--why ...) or start with --model models:/{ref.name}/<version> or a folder")
    return (f"{ref.name} has no version {ref.version} in the registry; start with --model "
            f"models:/{ref.name}@champion, another version, or a folder")


def release_folder(downloaded: Path) -> Path:
    """The release folder inside a downloaded model: ``artifacts/release`` of an MLflow pyfunc model
    (an ``MLmodel`` file), else the directory itself."""
    if (downloaded / "MLmodel").exists():
        release = downloaded / "artifacts" / "release"
        if not release.is_dir():
            raise FileNotFoundError(f"{downloaded}: an MLflow model without artifacts/release (the release folder "
                                    "the register step logs); register the model again")
        return release
    return downloaded


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def download_uri(store, name: str, version: str) -> str:
    """Where a version's files are, asked of ``store`` (a :class:`~components.tracking.store.Store`).

    An MLflow 3 logged model (a ``models:/m-...`` source, or ``runs:/<id>/<name>`` naming a model
    logged in that run) is resolved here to its own artifact location: MLflow would look it up
    through the process-wide tracking URI rather than this store.
    """
    uri = str(store.get_model_version_download_uri(name, version))
    if uri.startswith("models:/m-"):
        return str(store.get_logged_model(uri[len("models:/"):]).artifact_location)
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].partition("/")
        if path and "/" not in path and "'" not in path + run_id:
            experiment = store.get_run(run_id).info.experiment_id
            for logged in store.search_logged_models(experiment_ids=[experiment],
                                                     filter_string=f"name = '{path}' AND source_run_id = '{run_id}'"):
                return str(logged.artifact_location)
    return uri


def fetch_version(tracking_uri: str, name: str, version: str, source: str, uri: str, cache_dir: Path) -> Path:
    """A registry version's files (from ``uri``, see :func:`download_uri`) under
    ``cache_dir/<name>/<version>``: downloaded once, replaced when the version's ``source`` differs
    from the cached one's. Returns its release folder (:func:`release_folder`)."""
    from filelock import FileLock
    from mlflow.artifacts import download_artifacts

    from components.core.contract import atomic_folder, write_json

    target = Path(cache_dir) / _safe_name(name) / str(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    wanted = {"name": name, "version": str(version), "source": source}
    with FileLock(str(target) + ".lock"):
        try:
            cached = json.loads((target / SOURCE_MARKER).read_text("utf-8"))
        except (OSError, ValueError):
            cached = None
        if cached != wanted:
            with atomic_folder(target) as tmp:
                got = Path(download_artifacts(artifact_uri=uri, dst_path=str(tmp), tracking_uri=tracking_uri,
                                              registry_uri=tracking_uri))
                if got.resolve() != tmp.resolve():  # e.g. tmp/model: its contents become the cache folder
                    top = tmp / got.resolve().relative_to(tmp.resolve()).parts[0]
                    staged = got.rename(tmp / ".staged")
                    if top.exists():  # the emptied parents of a nested artifact path
                        shutil.rmtree(top)
                    for child in list(staged.iterdir()):
                        child.rename(tmp / child.name)
                    staged.rmdir()
                write_json(tmp / SOURCE_MARKER, wanted)
            log.info("downloaded %s version %s into %s", name, version, target)
    return release_folder(target)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ModelHolder:
    """The served model and why there is none or why the registry is not answering.

    ``current`` is replaced as a whole, never changed in place. ``problem`` says why there is no
    model (for /ready and 503 answers); ``registry`` is ``ok``, ``unreachable: ...`` or
    ``not used``; ``rejected`` says why the newest version the alias named could not be loaded.
    """

    def __init__(self, ref: ModelRef, tracking_uri: str | None, cache_dir: Path, threads: int | None = None,
                 retry: Any = None):
        self.ref = ref
        self.tracking_uri = tracking_uri
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self.retry = retry
        self.current: LoadedModel | None = None
        self.problem: str = f"loading {ref}"
        self.registry = "not used" if ref.folder is not None else "not asked yet"
        self.loading: str | None = None
        self.rejected: str | None = None
        self.checked = False
        self.swaps = 0
        self._failed: dict[tuple[str, str], str] = {}  # (version, source) -> why it did not load
        self._store = None
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        """Nothing more will change: a folder or a pinned version is loaded (only aliases move)."""
        return self.current is not None and not self.ref.follows_alias

    def check(self) -> bool:
        """Ask the registry (or read the folder) once; load and swap in a new version. Returns whether
        the served model changed. Blocking: the service calls it in a thread. Never raises."""
        with self._lock:
            try:
                return self._check()
            except Exception:  # a bug of ours: keep serving what is loaded, and say so
                log.exception("checking %s failed", self.ref)
                return False
            finally:
                self.checked = True

    def _check(self) -> bool:
        if self.ref.folder is not None:
            if self.current is not None or self._failed:  # a folder that did not load is not tried again
                return False
            return self._load(self.ref.folder, name=self.ref.folder.name, version=None, source=str(self.ref.folder))
        try:
            mv = self._lookup()
        except NoModelYet as exc:
            self._registry_ok()
            if self.current is None and self.problem != str(exc):
                log.warning("%s", exc)
            if self.current is None:
                self.problem = str(exc)
            return False
        except Exception as exc:  # any failure to get an answer: the registry is out of reach
            self._registry_down(exc)
            return False
        version, source = str(mv.version), str(mv.source)
        if self.current is not None and self.current.version == version and self.current.source == source:
            self._registry_ok()
            self.rejected = None
            return False
        if (version, source) in self._failed:
            self._registry_ok()
            self.rejected = self._failed[(version, source)]
            return False
        self.loading = f"version {version}"
        try:
            uri = download_uri(self._store, self.ref.name, version)
            folder = fetch_version(self.tracking_uri, self.ref.name, version, source, uri, self.cache_dir)
        except Exception as exc:  # the store or its artifacts did not answer: try again at the next poll
            self._registry_down(exc, f"downloading version {version} failed")
            self.loading = None
            return False
        self._registry_ok()
        return self._load(folder, name=self.ref.name, version=version, source=source)

    def _load(self, folder: Path, name: str, version: str | None, source: str) -> bool:
        what = f"version {version}" if version else str(folder)
        self.loading = what
        try:
            classifier = OnnxClassifier(folder, threads=self.threads, verify=version is not None)
            moderate(classifier, [WARM_UP])  # the first scoring is slow (allocations, lazy loads): not on a request
        except Exception as exc:  # CheckpointError says what to fix; onnxruntime raises its own types
            why = f"{f'{name} version {version}' if version else f'the model folder {folder}'} could not be loaded: " \
                  f"{_short(exc)}"
            log.error("%s%s", why, f"; still serving version {self.current.version}" if self.current else "")
            self._failed[(version or "", source)] = why
            self.rejected = why
            if self.current is None:
                self.problem = why
            return False
        finally:
            self.loading = None
        before = self.current
        self.current = LoadedModel(classifier, name=name, version=version, alias=self.ref.alias, source=source)
        self.rejected = None
        self.problem = ""
        if before is not None:
            self.swaps += 1
            log.info("now serving %s %s (%s); was version %s", name, what, classifier.variant, before.version)
        else:
            log.info("serving %s %s (%s)", name, what, classifier.variant)
        return True

    def _lookup(self):
        from mlflow.exceptions import MlflowException

        from components.tracking.store import RetryPolicy, Store

        if self._store is None:
            # One attempt per poll: the next poll is the retry (and the store's retry warnings stay out of the log).
            self._store = Store(self.tracking_uri, self.retry or RetryPolicy(attempts=1))
        try:
            if self.ref.alias:
                return self._store.get_model_version_by_alias(self.ref.name, self.ref.alias)
            return self._store.get_model_version(self.ref.name, self.ref.version)
        except MlflowException as exc:
            if getattr(exc, "error_code", None) in _NOT_FOUND:
                raise NoModelYet(no_model_message(self.ref)) from None
            raise

    def _registry_ok(self) -> None:
        if self.registry.startswith("unreachable"):
            log.warning("model registry reachable again")
        self.registry = "ok"

    def _registry_down(self, exc: BaseException, what: str = "") -> None:
        from components.tracking.store import redact_uri

        detail = f"{what}: {_short(exc)}" if what else _short(exc)
        if not self.registry.startswith("unreachable"):  # once per outage
            log.warning("model registry %s unreachable (%s); %s", redact_uri(self.tracking_uri or ""), detail,
                        f"still serving version {self.current.version}" if self.current else "no model loaded yet")
        self.registry = f"unreachable: {detail}"
        if self.current is None:
            self.problem = f"the model registry is unreachable ({detail}); no model loaded yet"
