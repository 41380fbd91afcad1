"""Drill: the moderation environment under concurrent sessions, checked for cross-talk.

Injected: ``content-moderation env serve`` in its own process on 127.0.0.1, and N concurrent clients
in this one (asyncio), each its own session: half over WebSocket (``ModerationEnvClient``, one socket
for all its episodes), half over the HTTP session layer (``/reset`` + ``/step`` by episode id, httpx).
Each client plays E whole episodes back to back, each with its own task and seed (seed
``1000 * client + episode``, task cycling), a seeded random agent deciding from what it is shown.
Full form 32 clients x 100 episodes; light form 8 x 10.

Checked: every episode, observation by observation (all fields but the episode id) and reward by
reward, equals the same task and seed played alone in this process afterwards (``LocalSession``);
every episode id is distinct; the session's own ``/state`` lists the items it served; no request
failed and the server logged no error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from moderation_env.agents import RandomAgent
from moderation_env.environment import TASKS
from moderation_env.models import ModerationObservation, ModerationState
from moderation_env.runner import LocalSession
from tests.conftest import ROOT
from benchmarks.service import stop_process
from deploy.local import free_port

TASK_LIST = list(TASKS)


def _job(client: int, episode: int) -> tuple[str, int]:
    return TASK_LIST[(client + episode) % len(TASK_LIST)], 1000 * client + episode


def _view(obs: ModerationObservation, reward) -> str:
    """One step as compared: every observation field but the episode id (random per session), and the reward."""
    dump = obs.model_dump(mode="json", exclude={"episode_id", "metadata", "reward"})
    return json.dumps({"obs": dump, "reward": reward}, sort_keys=True)


def _digest(views: list[str]) -> str:
    return hashlib.sha256("\n".join(views).encode()).hexdigest()


def alone(task: str, seed: int) -> tuple[str, list[str], list[float]]:
    """The episode played in this process by itself: (digest of its steps, served ids, rewards)."""
    session, agent = LocalSession(), RandomAgent(seed=seed)
    obs = session.reset(task, seed)
    views, served, rewards = [_view(obs, None)], [], []
    while not obs.done:
        served.append(obs.content.id)
        obs = session.step(agent.act(obs))
        rewards.append(obs.reward)
        views.append(_view(obs, obs.reward))
    return _digest(views), served, rewards


async def _ws_client(url: str, client: int, episodes: int, out: dict) -> None:
    from moderation_env.client import ModerationEnvClient

    async with ModerationEnvClient(base_url=url) as env:
        for e in range(episodes):
            task, seed = _job(client, e)
            agent = RandomAgent(seed=seed)
            result = await env.reset(task=task, seed=seed)
            obs = result.observation
            views, served, rewards, eid = [_view(obs, None)], [], [], obs.episode_id
            while not result.done:
                served.append(result.observation.content.id)
                result = await env.step(agent.act(result.observation))
                rewards.append(result.reward)
                views.append(_view(result.observation, result.reward))
                await asyncio.sleep(0)  # let the other clients in between every step
            state = await env.state()
            out[(client, e)] = {"digest": _digest(views), "served": served, "rewards": rewards,
                                "episode_id": state.episode_id or eid, "state_served": state.served_ids}


async def _http_client(url: str, client: int, episodes: int, out: dict) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for e in range(episodes):
            task, seed = _job(client, e)
            agent = RandomAgent(seed=seed)
            r = await http.post("/reset", json={"task": task, "seed": seed})
            r.raise_for_status()
            body = r.json()
            obs = ModerationObservation.model_validate({**body["observation"], "done": body.get("done", False)})
            eid = obs.episode_id
            views, served, rewards = [_view(obs, None)], [], []
            while not obs.done:
                served.append(obs.content.id)
                action = agent.act(obs).model_dump(mode="json", exclude={"metadata"})
                r = await http.post("/step", json={"episode_id": eid, "action": action})
                r.raise_for_status()
                body = r.json()
                obs = ModerationObservation.model_validate({**body["observation"], "done": body.get("done", False)})
                rewards.append(body.get("reward"))
                views.append(_view(obs, body.get("reward")))
                await asyncio.sleep(0)
            r = await http.get("/state", params={"episode_id": eid})
            r.raise_for_status()
            state = ModerationState.model_validate(r.json())
            out[(client, e)] = {"digest": _digest(views), "served": served, "rewards": rewards,
                                "episode_id": eid, "state_served": state.served_ids}


async def _guarded(make, errors: list[str]) -> None:
    try:
        await make()
    except Exception as exc:  # any failure of a client is an error of the drill, counted, not raised
        errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")


async def _all_clients(url: str, clients: int, episodes: int, out: dict, errors: list[str]) -> None:
    jobs = []
    for c in range(clients):
        client = _ws_client if c % 2 == 0 else _http_client
        jobs.append(_guarded(lambda c=c, client=client: client(url, c, episodes, out), errors))
    await asyncio.gather(*jobs)


def start_server(workdir: Path, port: int, max_sessions: int) -> tuple[subprocess.Popen, Path]:
    log = workdir / "env-server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "env", "serve", "--port", str(port),
                                 "--max-sessions", str(max_sessions)], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"env serve exited ({proc.returncode}): {log.read_text('utf-8', 'replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, log
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"env serve did not answer /health in 90 s: {log.read_text('utf-8', 'replace')[-2000:]}")
        time.sleep(0.2)


def run(workdir: Path, light: bool) -> dict:
    clients, episodes = (8, 10) if light else (32, 100)
    port = free_port()
    t_start = time.perf_counter()
    server, log = start_server(Path(workdir), port, max_sessions=clients + 8)
    startup_s = time.perf_counter() - t_start
    out: dict = {}
    errors: list[str] = []
    try:
        t0 = time.perf_counter()
        asyncio.run(_all_clients(f"http://127.0.0.1:{port}", clients, episodes, out, errors))
        concurrent_s = time.perf_counter() - t0
    finally:
        stop_process(server)
    server_log = log.read_text("utf-8", "replace")
    server_errors = [ln for ln in server_log.splitlines() if "Traceback" in ln or "ERROR" in ln]

    t1 = time.perf_counter()
    mismatched, state_mismatch = [], []
    for (c, e), got in sorted(out.items()):
        digest, served, rewards = alone(*_job(c, e))
        if got["digest"] != digest or got["served"] != served or got["rewards"] != rewards:
            mismatched.append(f"client {c} episode {e} ({'ws' if c % 2 == 0 else 'http'})")
        if got["state_served"] != got["served"]:
            state_mismatch.append(f"client {c} episode {e}")
    serial_s = time.perf_counter() - t1

    expected = clients * episodes
    played = len(out)
    steps = sum(len(v["served"]) for v in out.values())
    episode_ids = {v["episode_id"] for v in out.values()}
    n_errors = len(errors) + len(server_errors)
    lost = expected - played
    passed = not mismatched and not state_mismatch and not n_errors and played == expected \
        and len(episode_ids) == played
    by_transport = {t: sum(1 for (c, _) in out if (c % 2 == 0) == (t == "websocket")) for t in ("websocket", "http")}
    return {
        "injected": (f"{clients} concurrent sessions ({clients // 2} WebSocket, {clients // 2} HTTP) against "
                     f"`content-moderation env serve` in its own process, {episodes} whole episodes each "
                     "(each its own task and seed, a seeded random agent)"),
        "happened": (f"{played} of {expected} episodes ({steps} steps) played in {concurrent_s:.1f} s; "
                     f"{played - len(mismatched)} equal, observation by observation and reward by reward, to the "
                     f"same task and seed played alone; {len(episode_ids)} distinct episode ids; "
                     f"{len(errors)} client errors, {len(server_errors)} server errors"),
        "lost": "nothing" if passed else
                f"{lost} episodes not played, {len(mismatched)} with cross-talk, {n_errors} errors",
        "passed": passed,
        "clients": clients, "episodes_per_client": episodes, "episodes": played, "steps": steps,
        "episodes_by_transport": by_transport, "errors": n_errors, "client_errors": errors[:10],
        "server_errors": server_errors[:10], "cross_talk_episodes": len(mismatched), "mismatched": mismatched[:10],
        "state_mismatch": state_mismatch[:10], "distinct_episode_ids": len(episode_ids),
        "server_startup_seconds": round(startup_s, 1), "concurrent_seconds": round(concurrent_s, 1),
        "episodes_per_s": round(played / concurrent_s, 1) if concurrent_s else None,
        "steps_per_s": round(steps / concurrent_s, 1) if concurrent_s else None,
        "serial_reference_seconds": round(serial_s, 1),
    }
