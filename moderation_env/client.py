"""A typed OpenEnv client (WebSocket, async; ``.sync()`` for a blocking one).

    async with ModerationEnvClient(base_url="http://127.0.0.1:8000") as env:
        result = await env.reset(task="ad-policy-compliance", seed=42)
        result = await env.step(ModerationAction(content_id=result.observation.content.id, ...))
"""

from __future__ import annotations

import asyncio
from typing import Any

from openenv.core import EnvClient
from openenv.core.client_types import StepResult

from moderation_env.models import ModerationAction, ModerationObservation, ModerationState


class ModerationEnvClient(EnvClient[ModerationAction, ModerationObservation, ModerationState]):
    async def disconnect(self) -> None:
        """Send ``close`` and let the server close the socket first: OpenEnv's server closes it after a
        ``close`` message and logs an error when the client has already hung up."""
        if self._ws is not None:
            try:
                await self._send({"type": "close"})
                await asyncio.wait_for(self._ws.wait_closed(), timeout=2.0)
            except Exception:
                pass
        await super().disconnect()

    def _step_payload(self, action: ModerationAction) -> dict[str, Any]:
        return action.model_dump(mode="json", exclude={"metadata"})

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[ModerationObservation]:
        obs = ModerationObservation.model_validate(
            {**payload.get("observation", {}), "reward": payload.get("reward"), "done": payload.get("done", False)})
        return StepResult(observation=obs, reward=payload.get("reward"), done=bool(payload.get("done", False)))

    def _parse_state(self, payload: dict[str, Any]) -> ModerationState:
        return ModerationState.model_validate(payload)
