"""What every HTTP door of the project does first with a request body: read it with a byte limit
(413 past it, whether or not ``Content-Length`` says so) and answer bad input with
:class:`InputError` (a status and one short message that never quotes the input). Used by the
moderation service and the moderation environment's server."""

from __future__ import annotations

from fastapi import Request


class InputError(Exception):
    """Bad input, answered with ``status`` and ``{"detail": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def read_body(request: Request, limit: int, advice: str = "") -> bytes:
    """The body's bytes; InputError(413) past ``limit`` bytes, with ``advice`` appended."""
    too_big = f"the body is over {limit} bytes{advice}"
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise InputError(413, too_big)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(413, too_big)
        chunks.append(chunk)
    return b"".join(chunks)
