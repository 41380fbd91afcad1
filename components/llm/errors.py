"""What a caller of the LLM transport catches, and how a failure is classified.

Every error here is a ``ValueError`` whose message says what to do, so a command line can print
it as is. A failure is *transient* when retrying can fix it: HTTP 408, 409, 429 and every 5xx
(Anthropic's 529 "overloaded" included), timeouts and connection errors.
"""

from __future__ import annotations

TRANSIENT_STATUSES = frozenset({408, 409, 429})


class LLMError(ValueError):
    """A request to a model that cannot succeed as asked; the message says what to do."""


class MissingCredentialsError(LLMError):
    """No API key where one is needed, or the endpoint rejected the key (HTTP 401)."""


class LLMUnavailableError(LLMError):
    """The API or server still failed after the bounded retries."""


def is_transient_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 408, 409, 429 or any 5xx."""
    return status in TRANSIENT_STATUSES or status >= 500


def describe(exc: BaseException) -> str:
    """A one-line account of a failure: ``"HTTP 429: rate limited"`` for an HTTP error
    (the API's own message when it sent one), else ``"<ExceptionType>: <message>"``."""
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    message = getattr(exc, "api_message", None) or getattr(exc, "message", None) or str(exc)
    if status and not str(message).startswith(f"HTTP {status}"):
        return f"HTTP {status}: {message}"
    return str(message) if status else f"{type(exc).__name__}: {message}"
