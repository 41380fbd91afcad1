"""HTTP episodes held by the server, by episode id.

Ownership: the server names every HTTP episode with an unguessable id (``secrets``, 192 bits) and
gives it only to the client that opened it (in the /reset answer, an ``X-Episode-Id`` header and a
cookie). Holding the id is what proves ownership, as with a session cookie: nobody can open an
episode under an id of their choosing, so no client can take another's episode over.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

from fastapi import HTTPException

from moderation_env.environment import ModerationEnvironment
from moderation_env.http_input import show


def new_episode_id() -> str:
    """A fresh, unguessable episode id (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


class _Session:
    __slots__ = ("env", "lock", "used")

    def __init__(self, env: ModerationEnvironment):
        self.env, self.lock, self.used = env, threading.Lock(), time.monotonic()


class HttpSessions:
    """Environments of HTTP episodes, by episode id (least recently used evicted past ``max_sessions``,
    idle ones dropped after ``idle_ttl_s``)."""

    def __init__(self, factory, max_sessions: int = 1024, idle_ttl_s: float = 1800.0):
        self.factory, self.max_sessions, self.idle_ttl_s = factory, max_sessions, idle_ttl_s
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, episode_id: str) -> bool:
        with self._lock:
            self._expire()
            return episode_id in self._sessions

    def _expire(self) -> None:
        now = time.monotonic()
        for eid in [e for e, s in self._sessions.items() if now - s.used > self.idle_ttl_s]:
            self._sessions.pop(eid).env.close()
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)[1].env.close()

    def add(self, episode_id: str, env: ModerationEnvironment) -> None:
        """Hold a new episode; an id already held is refused (409), never replaced."""
        with self._lock:
            if episode_id in self._sessions:
                raise HTTPException(409, detail=f"episode {show(episode_id)} exists and belongs to the client "
                                                "that opened it")
            self._sessions[episode_id] = _Session(env)
            self._expire()

    def get(self, episode_id: str) -> _Session:
        """The session of a held episode; 404 saying what to do when there is none."""
        with self._lock:
            self._expire()
            session = self._sessions.get(episode_id)
            if session is None:
                raise HTTPException(404, detail=f"no episode {show(episode_id)} (never started, finished long ago "
                                                "or evicted); POST /reset to start one")
            session.used = time.monotonic()
            self._sessions.move_to_end(episode_id)
            return session

    def drop(self, episode_id: str) -> bool:
        """End an episode's session; False when there was none."""
        with self._lock:
            session = self._sessions.pop(episode_id, None)
        if session:
            session.env.close()
        return session is not None
