"""The MLflow store every tracking call goes through: its URI, the retry policy, and errors that say how to fix them.

Everything talks to the store through ``mlflow.MlflowClient`` objects built for the given
tracking URI (never MLflow's global fluent state), so a test can use a temporary SQLite store.
Every store call is retried with exponential backoff on transient failures (connection errors,
a locked SQLite database, 5xx / TEMPORARILY_UNAVAILABLE); when the retries run out the call
raises :class:`TrackingError`, which says how to fix it.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "content-moderation"
DEFAULT_EXPERIMENT = "content-moderation"
CANDIDATE = "candidate"
CHAMPION = "champion"
GATE_ACTOR = "quality-gate"

# MLflow 3 accepts 6000-character param values, older servers 500: stay within what any accepts.
MAX_PARAM_VALUE = 500
MAX_TAG_VALUE = 5000
_TRUNCATED = "...[truncated]"
_NAME_BAD_CHARS = re.compile(r"[^/\w.\- ]")


class TrackingError(RuntimeError):
    """The tracking store could not be reached or used; the pipeline's outputs are still on disk."""


class RegistryError(ValueError):
    """A registry request that cannot be honoured (unknown version, nothing to roll back to)."""


# ---------------------------------------------------------------------------------------------
# retries


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per store call and the exponential backoff between them (seconds)."""

    attempts: int = 4
    initial_wait: float = 0.5
    max_wait: float = 8.0


DEFAULT_RETRY = RetryPolicy()

_TRANSIENT_TEXT = (
    "database is locked",
    "database table is locked",
    "connection refused",
    "max retries exceeded",
    "failed to establish a new connection",
    "connection aborted",
    "connection reset",
    "temporarily unavailable",
    "timed out",
    "name or service not known",
    "unable to open database file",
)


def _is_transient(exc: BaseException) -> bool:
    """Whether a store failure is worth retrying: the network, a locked database, a 5xx."""
    if isinstance(exc, (TrackingError, RegistryError)):
        return False
    try:
        import requests

        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
    except ImportError:  # pragma: no cover - requests ships with mlflow
        pass
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = str(exc).lower()
    try:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.OperationalError):
            return any(t in text for t in _TRANSIENT_TEXT)
    except ImportError:  # pragma: no cover
        pass
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        if exc.error_code == "TEMPORARILY_UNAVAILABLE":
            return True
        try:
            if int(exc.get_http_status_code()) >= 500:
                return True
        except (TypeError, ValueError):
            pass
        return any(t in text for t in _TRANSIENT_TEXT)
    return False


def redact_uri(uri: str) -> str:
    """The URI without a password, for messages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def _answers(uri: str) -> bool:
    """Whether the tracking server at ``uri`` answers its health check now (within 3 s)."""
    import httpx

    try:
        return httpx.get(uri.rstrip("/") + "/health", timeout=3).status_code == 200
    except (httpx.HTTPError, httpx.InvalidURL):
        return False


def _unavailable(uri: str, what: str, attempts: int, exc: BaseException) -> TrackingError:
    shown = redact_uri(uri)
    detail = str(exc).splitlines()[0][:400] if str(exc) else type(exc).__name__
    if uri.startswith(("http://", "https://")) and _answers(uri):
        # the server is up and failed the request itself (5xx): a store behind it is what is down
        artifacts = "artifact" in what.lower() or "mlflow-artifacts" in detail
        behind = ("its artifact store (the bucket or folder of `mlflow server --artifacts-destination`, e.g. S3)"
                  if artifacts else "its database (`--backend-store-uri`) or its artifact store (e.g. S3)")
        return TrackingError(
            f"MLflow tracking server {shown} answers, but {what} failed on the server after {attempts} attempt(s): "
            f"{detail}. A store behind the server is unavailable: {behind}. Fix: see the tracking server's log, "
            f"bring that store back and run again. The pipeline's outputs are kept on disk (reports/, models/); "
            f"record them again once the store is back."
        )
    if uri.startswith(("http://", "https://")):
        fix = (
            f"start the tracking server (e.g. `mlflow server --host 127.0.0.1 --backend-store-uri "
            f"sqlite:///mlflow.db --workers 1`) so that {shown} answers, or set MLFLOW_TRACKING_URI "
            f"to a reachable store (sqlite:///mlflow.db needs no server)"
        )
    elif uri.startswith("sqlite:"):
        fix = (
            "if the database is locked, stop the other process using it and retry; check the path "
            "exists and is writable, or set MLFLOW_TRACKING_URI to another store"
        )
    else:
        fix = "check the store is up and reachable, or set MLFLOW_TRACKING_URI to a reachable store"
    return TrackingError(
        f"MLflow tracking store {shown} unavailable: {what} failed after {attempts} attempt(s): {detail}. "
        f"Fix: {fix}. The pipeline's outputs are kept on disk (reports/, models/); "
        f"record them again once the store is back."
    )


class Store:
    """An MlflowClient whose every call is retried and whose give-up is a TrackingError."""

    def __init__(self, uri: str, retry: RetryPolicy | None = None):
        self.uri = uri
        self.retry = retry or DEFAULT_RETRY
        if uri.startswith(("http://", "https://")):
            # MLflow's own HTTP retries default to 7 with backoff (minutes on a dead server);
            # our retries wrap every call, so keep MLflow's short unless the user chose otherwise.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        from mlflow import MlflowClient

        self.client = self.call("connect", lambda: MlflowClient(tracking_uri=uri, registry_uri=uri))

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        policy = self.retry
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(max(1, policy.attempts)),
                wait=wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait),
                retry=retry_if_exception(_is_transient),
                reraise=True,
                before_sleep=lambda rs: log.warning(
                    "tracking store %s: %s failed (attempt %d/%d), retrying: %s",
                    redact_uri(self.uri), what, rs.attempt_number, policy.attempts, rs.outcome.exception(),
                ),
            ):
                with attempt:
                    return fn()
        except Exception as exc:
            if _is_transient(exc):
                raise _unavailable(self.uri, what, policy.attempts, exc) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name in ("client", "uri", "retry"):
            raise AttributeError(name)
        method = getattr(self.client, name)

        def retried(*args, **kwargs):
            return self.call(name, lambda: method(*args, **kwargs))

        return retried


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


# ---------------------------------------------------------------------------------------------
# names and values MLflow accepts


def metric_name(text: str) -> str:
    """A metric/param/tag key MLflow accepts on every platform."""
    return _NAME_BAD_CHARS.sub("_", str(text))[:250]


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def numeric_items(prefix: str, obj: Any) -> Iterable[tuple[str, float]]:
    """Every finite number in a nested dict, keyed by its dotted path."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from numeric_items(f"{prefix}.{key}" if prefix else str(key), value)
    else:
        num = as_number(obj)
        if num is not None:
            yield prefix, num


def tag_value(value: Any, max_len: int = MAX_TAG_VALUE) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= max_len else text[: max_len - len(_TRUNCATED)] + _TRUNCATED


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
