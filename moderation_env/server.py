"""The HTTP/WebSocket server: OpenEnv's ``create_app`` plus a session layer for plain HTTP.

``create_app`` serves ``/ws`` (one environment per connection, kept for the connection's life),
``/health``, ``/schema``, ``/metadata``, ``/mcp`` and the OpenAPI docs; its ``/reset``, ``/step`` and
``/state`` build a fresh environment on every call, so an episode cannot span HTTP requests.
Those three routes are replaced here by session-aware ones keyed by episode id:

    POST /reset {"task": ..., "seed": 42}          -> observation.episode_id
    POST /step  {"episode_id": ..., "action": {...}}
    GET  /state?episode_id=...

Sessions are held in memory (least recently used evicted past ``max_http_sessions``; idle ones
dropped after ``idle_ttl_s``). The WebSocket path is untouched.

Run: ``content-moderation env serve --port 8000`` or ``uvicorn moderation_env.server:app``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from typing import Any, Optional

from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.routing import APIRoute
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.serialization import serialize_observation
from openenv.core.env_server.types import ResetRequest, ResetResponse, StepRequest, StepResponse
from pydantic import Field, ValidationError

from moderation_env.environment import TASKS, EpisodeError, ModerationEnvironment
from moderation_env.items import ItemBank
from moderation_env.models import ModerationAction, ModerationObservation, ModerationState

DEFAULT_PORT = 8000


class SessionResetRequest(ResetRequest):
    task: Optional[str] = Field(None, description=f"one of: {', '.join(TASKS)} (default single-label-classify)")


class SessionStepRequest(StepRequest):
    episode_id: Optional[str] = Field(None, max_length=255, description="the episode_id that /reset returned")


def validation_message(exc: ValidationError) -> dict:
    """A 422 body a person can act on: one sentence per problem, plus the structured errors."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'action'}: {e['msg']}" for e in errors)
    return {"message": f"invalid action: {problems}", "errors": errors}


class _Session:
    __slots__ = ("env", "lock", "used")

    def __init__(self, env: ModerationEnvironment):
        self.env, self.lock, self.used = env, threading.Lock(), time.monotonic()


class HttpSessions:
    """Environments of HTTP episodes, by episode id."""

    def __init__(self, factory, max_sessions: int = 1024, idle_ttl_s: float = 1800.0):
        self.factory, self.max_sessions, self.idle_ttl_s = factory, max_sessions, idle_ttl_s
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = time.monotonic()
        for eid in [e for e, s in self._sessions.items() if now - s.used > self.idle_ttl_s]:
            self._sessions.pop(eid).env.close()
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)[1].env.close()

    def put(self, episode_id: str, env: ModerationEnvironment) -> None:
        with self._lock:
            old = self._sessions.pop(episode_id, None)
            if old is not None:
                old.env.close()
            self._sessions[episode_id] = _Session(env)
            self._expire()

    def get(self, episode_id: str) -> _Session:
        with self._lock:
            self._expire()
            session = self._sessions.get(episode_id)
            if session is None:
                raise HTTPException(404, detail=f"no episode {episode_id!r} (never started, finished long ago or "
                                                "evicted); POST /reset to start one")
            session.used = time.monotonic()
            self._sessions.move_to_end(episode_id)
            return session

    def drop(self, episode_id: str) -> bool:
        with self._lock:
            session = self._sessions.pop(episode_id, None)
        if session:
            session.env.close()
        return session is not None


_REPLACED = {("/reset", "POST"), ("/step", "POST"), ("/state", "GET")}


def create_moderation_app(bank: ItemBank | None = None, max_concurrent_envs: int = 64,
                          max_http_sessions: int = 1024, idle_ttl_s: float = 1800.0) -> FastAPI:
    factory = functools.partial(ModerationEnvironment, bank=bank) if bank is not None else ModerationEnvironment
    app = create_app(factory, ModerationAction, ModerationObservation, env_name="content_moderation",
                     max_concurrent_envs=max_concurrent_envs)
    app.title = "Content moderation environment (OpenEnv)"
    app.router.routes = [r for r in app.router.routes
                         if not (isinstance(r, APIRoute) and any((r.path, m) in _REPLACED for m in r.methods))]
    app.openapi_schema = None
    sessions = HttpSessions(factory, max_http_sessions, idle_ttl_s)
    app.state.http_sessions = sessions

    @app.post("/reset", response_model=ResetResponse, tags=["Environment Control"],
              summary="Start an episode (HTTP sessions keyed by episode id)")
    def reset(request: SessionResetRequest = Body(default_factory=SessionResetRequest)) -> ResetResponse:
        """Start an episode and return its first observation; ``observation.episode_id`` names the session
        for ``/step`` and ``/state``. Body: ``task``, ``seed`` (reproducible), ``episode_id`` (optional)."""
        env = factory()
        kwargs: dict[str, Any] = request.model_dump(exclude_unset=True)
        try:
            obs = env.reset(**kwargs)
        except ValueError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        sessions.put(env.state.episode_id, env)
        return ResetResponse(**serialize_observation(obs))

    @app.post("/step", response_model=StepResponse, tags=["Environment Control"],
              summary="Moderate the served item of an HTTP episode",
              responses={404: {"description": "unknown episode_id"}, 409: {"description": "episode over"},
                         422: {"description": "invalid action, or no episode_id"}})
    def step(request: SessionStepRequest) -> StepResponse:
        """Grade one action against the item this episode served. Body: ``episode_id`` (from /reset) and
        ``action`` (see /schema). An action naming another ``content_id`` scores −1 for the step."""
        try:
            action = ModerationAction.model_validate(request.action)
        except ValidationError as exc:
            raise HTTPException(422, detail=validation_message(exc)) from None
        if not request.episode_id:
            raise HTTPException(422, detail="episode_id is required: plain HTTP keeps no episode between calls; "
                                            "pass the observation.episode_id that POST /reset returned (or use /ws)")
        session = sessions.get(request.episode_id)
        with session.lock:
            try:
                obs = session.env.step(action)
            except EpisodeError as exc:
                raise HTTPException(409, detail=str(exc)) from None
        return StepResponse(**serialize_observation(obs))

    @app.get("/state", response_model=ModerationState, tags=["State Management"],
             summary="State of an HTTP episode")
    def state(episode_id: Optional[str] = Query(None, description="the episode_id that /reset returned")
              ) -> ModerationState:
        """The episode's state (task, seed, rewards so far, items served; never gold). Without
        ``episode_id``: the state of a fresh environment, as in plain OpenEnv."""
        if episode_id is None:
            return factory().state
        session = sessions.get(episode_id)
        with session.lock:
            return session.env.state.model_copy(deep=True)

    @app.delete("/sessions/{episode_id}", tags=["State Management"], summary="End an HTTP episode's session")
    def close(episode_id: str) -> dict:
        if not sessions.drop(episode_id):
            raise HTTPException(404, detail=f"no episode {episode_id!r}")
        return {"episode_id": episode_id, "closed": True}

    return app


app = create_moderation_app()


def main(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    main(args.host, args.port)
