"""What a generation step raises when it cannot go on; every message says what to do.

The transport's errors under the names generation has always used (one class each, so a caller
of the transport and of generation catch the same thing), and the reject limit of a step.
"""

from __future__ import annotations

from components.llm.errors import LLMError, LLMUnavailableError, MissingCredentialsError

GenerationError = LLMError  # an LLM generation step that cannot go on (a ValueError)
BackendUnavailableError = LLMUnavailableError  # the API or server kept failing after the bounded retries

__all__ = ["BackendUnavailableError", "GenerationError", "MissingCredentialsError", "TooManyLLMRejectsError"]


class TooManyLLMRejectsError(GenerationError):
    """More of a category's examples were rejected, or it fell further short, than params allow."""
