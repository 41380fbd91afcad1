"""The body of ``POST /v1/moderate``: read with a byte limit, parsed strictly, validated once.

A body over the limit is refused with 413; anything else wrong (bytes that are not UTF-8, a lone
surrogate in any string, text that is not JSON, a key given twice, a wrong type, too many items, a
text too long, empty or only invisible characters, an unknown audience or surface) with 422 and one
short sentence per problem naming the field (``items[2].context.audience``), never quoting the input.
The text rules are the project's own (:mod:`components.core.validity`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StrictStr, Tag, ValidationError
from pydantic_core import PydanticCustomError

from components.core.taxonomy import AUDIENCES, SURFACES, ContextPrefix, split_prefix
from components.core.validity import duplicate_key, loads_keeping_duplicates, text_problem, utf8_problem
from components.serving.http_body import InputError

_SHOWN = 40

class Context(BaseModel):
    """Where the texts were posted (default GENERAL/GENERAL, or a text's own [AUDIENCE][SURFACE] prefix)."""

    model_config = ConfigDict(extra="forbid")
    audience: Literal[AUDIENCES] = Field("GENERAL", description=f"one of {', '.join(AUDIENCES)}")  # type: ignore[valid-type]
    surface: Literal[SURFACES] = Field("GENERAL", description=f"one of {', '.join(SURFACES)}")  # type: ignore[valid-type]

    def prefix(self) -> ContextPrefix:
        return ContextPrefix(self.audience, self.surface)


def _checked_text(text: str) -> str:
    """A text with something to read (components.core.validity) and no malformed context prefix."""
    problem = text_problem(text)
    if problem:
        raise PydanticCustomError("text_empty", "{problem}", {"problem": problem})
    try:
        split_prefix(text)
    except ValueError:
        raise PydanticCustomError(
            "text_prefix", "the text starts with an [AUDIENCE][SURFACE] prefix naming an unknown audience or surface "
            "(audiences: {audiences}; surfaces: {surfaces}); fix it, or remove it and send the context apart",
            {"audiences": ", ".join(AUDIENCES), "surfaces": ", ".join(SURFACES)}) from None
    return text


def request_model(max_items: int, max_chars: int) -> type[BaseModel]:
    """The body of POST /v1/moderate with these limits."""
    text = Annotated[StrictStr, Field(min_length=1, max_length=max_chars), AfterValidator(_checked_text)]

    class Item(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: text  # type: ignore[valid-type]
        context: Optional[Context] = Field(None, description="default: the request's context")

    def kind(value: Any) -> str:
        return "text" if isinstance(value, str) else "item"

    entry = Annotated[Union[Annotated[text, Tag("text")], Annotated[Item, Tag("item")]],  # type: ignore[valid-type]
                      Discriminator(kind)]

    class ModerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[entry] = Field(min_length=1, max_length=max_items,  # type: ignore[valid-type]
                                   description=f"1 to {max_items} texts, each a string or {{text, context}}")
        context: Optional[Context] = Field(None, description="the context of items that name none")

        def texts_and_contexts(self) -> tuple[list[str], list[ContextPrefix | None]]:
            default = self.context.prefix() if self.context else None
            texts, contexts = [], []
            for item in self.items:
                if isinstance(item, str):
                    texts.append(item)
                    contexts.append(default)
                else:
                    texts.append(item.text)
                    contexts.append(item.context.prefix() if item.context else default)
            return texts, contexts

    return ModerateRequest


def _field(loc: tuple) -> str:
    out, previous = "", None
    for part in loc:
        after_index, previous = isinstance(previous, int), part
        if after_index and part in ("text", "item"):
            continue  # the name of the union's branch an item took
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            shown = ascii(str(part))[1:-1]
            out += ("." if out else "") + (shown if len(shown) <= _SHOWN else shown[: _SHOWN - 1] + "…")
    return out or "body"


def _problems(exc: ValidationError) -> str:
    """One short sentence per problem (at most five), naming the field and never quoting the input."""
    parts = []
    for e in exc.errors(include_url=False):
        msg = e["msg"]
        if e["type"] == "string_unicode" and isinstance(e.get("input"), str):
            msg = utf8_problem(e["input"]) or msg
        parts.append(f"{_field(tuple(e['loc']))}: {msg[:300]}")
    more = f" (and {len(parts) - 5} more)" if len(parts) > 5 else ""
    return "invalid request: " + "; ".join(parts[:5]) + more


def parse_request(data: bytes, model: type[BaseModel]):
    """A validated request from the body's bytes; InputError(422) naming the first problem."""
    if not data.strip():
        raise InputError(422, 'body: empty; send {"items": ["a text", ...]}')
    # Bytes that are not UTF-8 become U+DC80..U+DCFF, which the string check names with its field.
    text = data.decode("utf-8", "surrogateescape")
    try:
        obj = loads_keeping_duplicates(text)
    except json.JSONDecodeError as exc:
        raise InputError(422, f"body: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError):
        raise InputError(422, "body: not valid JSON (a number too long, or nested too deeply)") from None
    try:
        request = model.model_validate(obj)
    except ValidationError as exc:
        raise InputError(422, _problems(exc)) from None
    duplicate = duplicate_key(obj)
    if duplicate:  # its message without the values it quotes
        raise InputError(422, f"body: {duplicate.split(' (values ')[0]}; give each field once")
    return request
