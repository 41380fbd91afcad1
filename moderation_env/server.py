"""The HTTP/WebSocket server: OpenEnv's ``create_app`` plus a session layer for plain HTTP.

``create_app`` serves ``/ws`` (one environment per connection, kept for the connection's life),
``/health``, ``/schema``, ``/metadata``, ``/mcp`` and the OpenAPI docs; its ``/reset``, ``/step`` and
``/state`` build a fresh environment on every call, so an episode cannot span HTTP requests.
Those three routes are replaced here by session-aware ones keyed by episode id:

    POST /reset {"task": ..., "seed": 42}     -> observation.episode_id, X-Episode-Id header, cookie
    POST /step  {"episode_id": ..., "action": {...}}     (ours)
    POST /step  {"content_id": ..., "labels": [...], ...} (the published bare action; the episode
                                                           named by X-Episode-Id or the cookie)
    GET  /state[?episode_id=...]                          (else header, else cookie)
    DELETE /sessions/{episode_id}

The server names every HTTP episode (an unguessable id; see sessions.py): a /reset that names an
episode id is refused (409 when that episode exists, 422 otherwise), so no client takes over
another's episode. Bad input never gets a 500 (see http_input.py). The answers also carry the
published environment's field names (models.py). The WebSocket path is untouched.

Run: ``content-moderation env serve --port 8000`` or ``uvicorn moderation_env.server:app``.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.serialization import serialize_observation
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from moderation_env.environment import TASKS, EpisodeError, ModerationEnvironment
from moderation_env.http_input import (MAX_EPISODE_ID_CHARS, InputError, WsInputGuard, episode_id_or_error,
                                       install_handlers, read_json, show, validation_message)
from moderation_env.items import ItemBank
from moderation_env.models import (ModerationAction, ModerationObservation, ModerationState, PublishedItem,
                                   ThreadMessage)
from moderation_env.sessions import HttpSessions, new_episode_id

DEFAULT_PORT = 8000
EPISODE_HEADER = "X-Episode-Id"
EPISODE_COOKIE = "moderation_episode"


class ResetBody(BaseModel):
    """POST /reset: the published ``{"task", "seed"}``; ``episode_id`` is refused (the server names episodes)."""

    model_config = ConfigDict(extra="forbid")

    task: Optional[str] = Field(None, max_length=64, description=f"one of: {', '.join(TASKS)} "
                                                                 "(default single-label-classify)")
    seed: Optional[StrictInt] = Field(None, ge=0, le=2**63 - 1, description="reproduces the episode")
    episode_id: Optional[str] = Field(None, max_length=MAX_EPISODE_ID_CHARS,
                                      description="refused: the server names each HTTP episode")


class StepBody(BaseModel):
    """POST /step, our shape: the episode and the action apart."""

    model_config = ConfigDict(extra="forbid")

    action: dict[str, Any] = Field(description="a ModerationAction (see /schema)")
    episode_id: Optional[str] = Field(None, max_length=MAX_EPISODE_ID_CHARS,
                                      description="from /reset (else X-Episode-Id header, else cookie)")
    timeout_s: Optional[float] = Field(None, gt=0, le=3600, allow_inf_nan=False)
    request_id: Optional[str] = Field(None, max_length=255)


class ResetAnswer(BaseModel):
    """OpenEnv's reset answer, plus the published observation's fields at the top level."""

    observation: dict[str, Any]
    reward: Optional[float] = None
    done: bool = False
    step: int
    content_item: Optional[PublishedItem]
    policy_excerpt: str
    thread_history: list[ThreadMessage]
    conflicting_policies: list[str]
    task_name: str
    instructions: str


class StepAnswer(BaseModel):
    """OpenEnv's step answer (observation, reward, done) plus the published ``info``."""

    observation: dict[str, Any]
    reward: Optional[float] = None
    done: bool = False
    info: dict[str, Any] = Field(default_factory=dict)


_PUBLISHED = ("step", "content_item", "policy_excerpt", "thread_history", "conflicting_policies", "task_name",
              "instructions")
_REPLACED = {("/reset", "POST"), ("/step", "POST"), ("/state", "GET")}


def _object(body: Any, what: str) -> dict:
    if not isinstance(body, dict):
        raise InputError(422, f"the {what} body must be a JSON object, not {type(body).__name__}")
    return body


def _named_episode(request: Request, given: Any, where: str) -> Optional[str]:
    """The episode a request names: ``given`` (body or query), else the header, else the cookie."""
    if given is not None:
        return episode_id_or_error(given, where)
    if EPISODE_HEADER in request.headers:
        return episode_id_or_error(request.headers[EPISODE_HEADER], f"header {EPISODE_HEADER}")
    if EPISODE_COOKIE in request.cookies:
        return episode_id_or_error(request.cookies[EPISODE_COOKIE], f"cookie {EPISODE_COOKIE}")
    return None


def _body_doc(*models: type[BaseModel]) -> dict:
    schemas = [m.model_json_schema(ref_template="#/components/schemas/{model}") for m in models]
    schema = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}}


def create_moderation_app(bank: ItemBank | None = None, max_concurrent_envs: int = 64,
                          max_http_sessions: int = 1024, idle_ttl_s: float = 1800.0) -> FastAPI:
    """The served environment: OpenEnv's app with session-keyed /reset, /step, /state and DELETE /sessions."""
    factory = functools.partial(ModerationEnvironment, bank=bank) if bank is not None else ModerationEnvironment
    app = create_app(factory, ModerationAction, ModerationObservation, env_name="content_moderation",
                     max_concurrent_envs=max_concurrent_envs)
    app.title = "Content moderation environment (OpenEnv)"
    app.router.routes = [r for r in app.router.routes
                         if not (isinstance(r, APIRoute) and any((r.path, m) in _REPLACED for m in r.methods))]
    app.openapi_schema = None
    install_handlers(app)
    app.add_middleware(WsInputGuard)
    sessions = HttpSessions(factory, max_http_sessions, idle_ttl_s)
    app.state.http_sessions = sessions

    @app.post("/reset", response_model=ResetAnswer, tags=["Environment Control"], openapi_extra=_body_doc(ResetBody),
              summary="Start an episode (HTTP sessions keyed by episode id)",
              responses={409: {"description": "episode_id names another client's episode"},
                         413: {"description": "body too large"}, 422: {"description": "invalid field"}})
    async def reset(request: Request) -> JSONResponse:
        """Start an episode and return its first observation. Body ``{"task", "seed"}`` (both optional).
        The episode's id comes back in ``observation.episode_id``, the ``X-Episode-Id`` header and a cookie."""
        try:
            body = ResetBody.model_validate(_object(await read_json(request, empty={}), "reset"))
        except ValidationError as exc:
            raise InputError(422, validation_message(exc, "reset")["message"]) from None
        if body.episode_id is not None:
            if episode_id_or_error(body.episode_id, "episode_id") in sessions:
                raise HTTPException(409, detail=f"episode {show(body.episode_id)} belongs to the client that opened "
                                                "it; omit episode_id and /reset starts a new episode of your own")
            raise InputError(422, "episode_id: the server names each HTTP episode; omit it")
        if body.task is not None and body.task not in TASKS:
            raise InputError(422, f"unknown task {show(body.task)}; tasks: {', '.join(TASKS)}")
        env, episode_id = factory(), new_episode_id()
        obs = env.reset(seed=body.seed, episode_id=episode_id, task=body.task)
        sessions.add(episode_id, env)
        answer = serialize_observation(obs)
        answer.update({k: answer["observation"][k] for k in _PUBLISHED})
        response = JSONResponse(ResetAnswer.model_validate(answer).model_dump(mode="json"))
        response.headers[EPISODE_HEADER] = episode_id
        response.set_cookie(EPISODE_COOKIE, episode_id, max_age=int(idle_ttl_s), httponly=True, samesite="strict")
        return response

    @app.post("/step", response_model=StepAnswer, tags=["Environment Control"],
              openapi_extra=_body_doc(StepBody, ModerationAction),
              summary="Moderate the served item of an HTTP episode",
              responses={404: {"description": "unknown episode_id"}, 409: {"description": "episode over"},
                         413: {"description": "body too large"},
                         422: {"description": "invalid action or field, or no episode named"}})
    async def step(request: Request) -> StepAnswer:
        """Grade one action against the item this episode served. Body: ``{"episode_id", "action": {...}}``, or
        the published bare action ``{"content_id", "labels", "action", "confidence", "reasoning",
        "policy_citations"}`` with the episode named by the ``X-Episode-Id`` header or the /reset cookie.
        An action naming another ``content_id`` scores −1 for the step."""
        body = _object(await read_json(request), "step")
        if isinstance(body.get("action"), dict):
            try:
                rich = StepBody.model_validate(body)
            except ValidationError as exc:
                raise InputError(422, validation_message(exc, "step")["message"]) from None
            given, data = rich.episode_id, rich.action
        else:
            given, data = body.get("episode_id"), {k: v for k, v in body.items() if k != "episode_id"}
        try:
            action = ModerationAction.model_validate(data)
        except ValidationError as exc:
            raise HTTPException(422, detail=validation_message(exc)) from None
        episode_id = _named_episode(request, given, "episode_id")
        if episode_id is None:
            raise InputError(422, "episode_id is required: plain HTTP keeps no episode between calls; pass the "
                                  f"episode_id that POST /reset returned (body, {EPISODE_HEADER} header or its "
                                  "cookie), or use /ws")
        session = sessions.get(episode_id)
        with session.lock:
            try:
                obs = session.env.step(action)
            except EpisodeError as exc:
                raise HTTPException(409, detail=str(exc)) from None
            state = session.env.state
            info = {"episode_id": episode_id, "cumulative_reward": state.total_reward, "step": state.step_count}
        return StepAnswer(**serialize_observation(obs), info=info)

    @app.get("/state", response_model=ModerationState, tags=["State Management"],
             summary="State of an HTTP episode")
    def state(request: Request, episode_id: Optional[str] = Query(
            None, description=f"the episode_id that /reset returned (else the {EPISODE_HEADER} header or the cookie)")
              ) -> ModerationState:
        """The episode's state (task, seed, rewards so far, items served, the published names; never gold).
        With no episode named: the state of a fresh environment, as in plain OpenEnv."""
        named = _named_episode(request, episode_id, "episode_id")
        if named is None:
            return factory().state
        session = sessions.get(named)
        with session.lock:
            return session.env.state.model_copy(deep=True)

    @app.delete("/sessions/{episode_id}", tags=["State Management"], summary="End an HTTP episode's session")
    def close(episode_id: str) -> JSONResponse:
        """Drop the episode's session (404 when there is none) and clear its cookie."""
        if not sessions.drop(episode_id_or_error(episode_id, "episode_id")):
            raise HTTPException(404, detail=f"no episode {show(episode_id)}")
        response = JSONResponse({"episode_id": episode_id, "closed": True})
        response.delete_cookie(EPISODE_COOKIE, httponly=True, samesite="strict")
        return response

    return app


app = create_moderation_app()


def main(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve ``app`` with uvicorn."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    main(args.host, args.port)
