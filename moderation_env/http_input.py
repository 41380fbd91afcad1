"""The environment server's input door: read a JSON body strictly and refuse bad input with a short
4xx message that names the field and never echoes the input back.

Refused, each with the status a client can act on:

- a body over ``MAX_BODY_BYTES`` (413), bytes that are not UTF-8, text that is not JSON, ``NaN`` or
  ``Infinity``, a number of more than ``MAX_INT_DIGITS`` digits, a key given twice, nesting too deep
  (all 400);
- a string anywhere (key or value) holding a lone UTF-16 surrogate — high, low or a pair in the
  wrong order, which JSON's ``\\uXXXX`` escapes can spell but UTF-8 cannot carry (422, naming the field);
- a field of the wrong type, size or value (422, from the Pydantic models, inputs stripped).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Optional

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from components.serving.http_body import InputError, read_body

MAX_BODY_BYTES = 64 * 1024
MAX_INT_DIGITS = 20
MAX_DEPTH = 32
MAX_EPISODE_ID_CHARS = 64
EPISODE_ID = re.compile(r"[A-Za-z0-9_-]{1,%d}" % MAX_EPISODE_ID_CHARS)
_SHOWN = 40


def show(value: Any) -> str:
    """A value as a short, ASCII-only quote for an error message (never the whole input)."""
    text = ascii(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 5] + "…'(cut)"


def _field(path: tuple) -> str:
    return ".".join(show(p)[1:-1] if isinstance(p, str) else str(p) for p in path) or "body"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise InputError(400, f"the body names {show(key)} twice; give each field once")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise InputError(400, f"the body is not valid JSON: {name} is not a JSON number")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InputError(400, f"a number in the body has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputError(400, "a number in the body is too large for a float")
    return value


def check_text(obj: Any, path: tuple = ()) -> None:
    """Raise InputError (422) naming the first string, key or value, that UTF-8 cannot encode."""
    if len(path) > MAX_DEPTH:
        raise InputError(400, f"the body nests more than {MAX_DEPTH} levels deep")
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(422, f"{_field(path)}: the text holds a lone UTF-16 surrogate (U+D800..U+DFFF, "
                                  "alone or in the wrong order); send valid Unicode text") from None
    elif isinstance(obj, dict):
        for key, value in obj.items():
            check_text(key, path + ("<key>",))
            check_text(value, path + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            check_text(value, path + (i,))


def parse_json(data: bytes) -> Any:
    """Strict JSON from bytes: UTF-8, no duplicate keys, no NaN/Infinity, bounded numbers and depth,
    no lone surrogates. Raises InputError."""
    if len(data) > MAX_BODY_BYTES:
        raise InputError(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(400, f"the body is not UTF-8 (bad byte at offset {exc.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_int=_int,
                         parse_float=_float)
    except json.JSONDecodeError as exc:
        raise InputError(400, f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    except RecursionError:
        raise InputError(400, "the body nests too deeply") from None
    except ValueError:  # int() of a huge literal, float() edge cases
        raise InputError(400, "a number in the body cannot be read") from None
    check_text(obj)
    return obj


async def read_json(request: Request, empty: Any = None) -> Any:
    """The request's body as strict JSON (``empty`` when there is none), read at most MAX_BODY_BYTES."""
    data = await read_body(request, MAX_BODY_BYTES)
    if not data.strip():
        return empty
    return parse_json(data)


def problems(errors: list[dict], what: str) -> dict:
    """A 422 body from Pydantic/FastAPI errors: one sentence per problem, structured errors without inputs."""
    clean = []
    for e in errors[:20]:
        msg = str(e.get("msg", "invalid"))[:200].encode("utf-8", "backslashreplace").decode("utf-8")
        clean.append({"type": e.get("type"), "loc": [p if isinstance(p, int) else show(p)[1:-1] for p in e["loc"]],
                      "msg": msg})
    text = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in clean)
    return {"message": f"invalid {what}: {text}", "errors": clean}


def validation_message(exc: ValidationError, what: str = "action") -> dict:
    """A 422 detail for a Pydantic ValidationError: the field, the problem, never the input."""
    return problems(exc.errors(include_url=False, include_context=False, include_input=False), what)


def episode_id_or_error(value: Optional[str], where: str) -> Optional[str]:
    """``value`` when it has the shape of an episode id (None stays None); InputError 422 otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or not EPISODE_ID.fullmatch(value):
        raise InputError(422, f"{where}: not an episode id (1-{MAX_EPISODE_ID_CHARS} letters, digits, '-' or '_'; "
                              "use the episode_id that POST /reset returned)")
    return value


def install_handlers(app) -> None:
    """Answer InputError with its status and FastAPI's own validation errors without echoing inputs."""

    @app.exception_handler(InputError)
    async def _input_error(_request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": problems(list(exc.errors()), "request")}, status_code=422)


class WsInputGuard:
    """ASGI middleware: a ``/ws`` text message that ``parse_json`` refuses (a lone surrogate, a duplicate
    key, NaN, over 64 KiB, ...) reaches OpenEnv's handler as ``{"type": "refused: <why>"}``, which it
    answers with an error and keeps the session. Without it, OpenEnv echoes the bad input in its error,
    fails to serialise a surrogate and closes the connection."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)

        async def guarded_receive():
            message = await receive()
            text = message.get("text") if message["type"] == "websocket.receive" else None
            if text is not None:
                try:
                    parse_json(text.encode("utf-8", "surrogatepass"))
                except InputError as exc:
                    message = {**message, "text": json.dumps({"type": f"refused: {exc.message}"})}
            return message

        return await self.app(scope, guarded_receive, send)
