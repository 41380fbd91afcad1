"""Benchmark: the moderation environment's offline agents on every task, and the server's
throughput under 32 concurrent clients.

    python benchmarks/env.py [--model models/moderation/release] [--seconds 20] [--clients 32]

Agents: random and approve-all always; the classifier when --model names an exported folder
(its row is skipped, and the report says so, otherwise). Each plays the four tasks with seed 42
in process. Throughput: a uvicorn server in its own process on 127.0.0.1; N WebSocket clients
(the typed EnvClient, random agent) play whole episodes back to back for --seconds; then the
same over the HTTP session layer. Prints a markdown table and writes reports/benchmark_env_agents.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moderation_env.agents import RandomAgent, make_agent  # noqa: E402
from moderation_env.environment import TASKS  # noqa: E402
from moderation_env.items import default_bank  # noqa: E402
from moderation_env.runner import LocalSession, run_tasks  # noqa: E402
from deploy.local import free_port

SEED = 42


def seed_spread(model: Path | None, names: list[str], seeds: int) -> dict:
    """Each agent's mean and standard deviation per task over seeds 1..N (one episode is 10-15 items)."""
    out = {}
    for name in names:
        per_task: dict[str, list[float]] = {t: [] for t in TASKS}
        for seed in range(1, seeds + 1):
            report = run_tasks(LocalSession(), make_agent(name, seed=seed, model_folder=model), list(TASKS), seed)
            for t, v in report["scores"].items():
                per_task[t].append(v)
        out[name] = {t: {"mean": round(statistics.mean(v), 3), "sd": round(statistics.stdev(v), 3) if len(v) > 1 else 0.0}
                     for t, v in per_task.items()}
        out[name]["all"] = round(statistics.mean(x["mean"] for x in out[name].values()), 3)
    return out


def agent_scores(model: Path | None) -> tuple[dict, list[str]]:
    notes, runs = [], {}
    names = ["random", "approve-all"]
    if model and model.is_dir():
        names.append("classifier")
    else:
        notes.append(f"classifier row skipped: no exported model folder at {model}")
    for name in names:
        agent = make_agent(name, seed=SEED, model_folder=model)
        t = time.perf_counter()
        report = run_tasks(LocalSession(), agent, list(TASKS), SEED)
        runs[name] = {"scores": report["scores"], "mean": report["mean_score"],
                      "seconds": round(time.perf_counter() - t, 2)}
    return runs, notes


async def _ws_client(url: str, idx: int, stop_at: float, latencies: list[float]) -> tuple[int, int]:
    from moderation_env.client import ModerationEnvClient

    tasks, agent, episodes, steps = list(TASKS), RandomAgent(seed=idx), 0, 0
    async with ModerationEnvClient(base_url=url) as env:
        while time.perf_counter() < stop_at:
            result = await env.reset(task=tasks[(idx + episodes) % 4], seed=idx * 1000 + episodes)
            while not result.done:
                t = time.perf_counter()
                result = await env.step(agent.act(result.observation))
                latencies.append(time.perf_counter() - t)
                steps += 1
            episodes += 1
    return episodes, steps


async def _http_client(url: str, idx: int, stop_at: float, latencies: list[float]) -> tuple[int, int]:
    import httpx

    from moderation_env.models import ModerationObservation

    tasks, agent, episodes, steps = list(TASKS), RandomAgent(seed=idx), 0, 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while time.perf_counter() < stop_at:
            r = await client.post("/reset", json={"task": tasks[(idx + episodes) % 4], "seed": idx * 1000 + episodes})
            obs = r.json()["observation"]
            while obs["content"]:
                action = agent.act(ModerationObservation.model_validate(obs)).model_dump(mode="json", exclude={"metadata"})
                t = time.perf_counter()
                r = await client.post("/step", json={"episode_id": obs["episode_id"], "action": action})
                latencies.append(time.perf_counter() - t)
                obs = r.json()["observation"]
                steps += 1
            episodes += 1
    return episodes, steps


def throughput(clients: int, seconds: float) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "moderation_env.server:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--ws-max-size", str(16 * 1024 * 1024)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        import httpx

        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        out = {}
        for transport, client in (("websocket", _ws_client), ("http", _http_client)):
            latencies: list[float] = []

            async def main():
                stop_at = time.perf_counter() + seconds
                return await asyncio.gather(*(client(url, i, stop_at, latencies) for i in range(clients)))

            t = time.perf_counter()
            results = asyncio.run(main())
            wall = time.perf_counter() - t
            episodes, steps = sum(r[0] for r in results), sum(r[1] for r in results)
            latencies.sort()
            out[transport] = {"clients": clients, "seconds": round(wall, 1), "episodes": episodes, "steps": steps,
                              "episodes_per_s": round(episodes / wall, 1), "steps_per_s": round(steps / wall, 1),
                              "step_latency_ms_p50": round(1000 * statistics.median(latencies), 1),
                              "step_latency_ms_p95": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1)}
        return out
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models/moderation/release")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seeds", type=int, default=20, help="also average every agent over seeds 1..N")
    ap.add_argument("--output", type=Path, default=ROOT / "reports/benchmark_env_agents.json")
    args = ap.parse_args()

    runs, notes = agent_scores(args.model)
    spread = seed_spread(args.model, list(runs), args.seeds) if args.seeds else {}
    speed = throughput(args.clients, args.seconds)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              "seed": SEED, "bank_version": default_bank().version, "model": str(args.model), "agents": runs,
              f"agents_over_seeds_1_to_{args.seeds}": spread, "throughput": speed, "notes": notes}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    tasks = list(TASKS)
    print("| agent | " + " | ".join(tasks) + " | mean |")
    print("|---|" + "---:|" * (len(tasks) + 1))
    for name, r in runs.items():
        print(f"| {name} | " + " | ".join(f"{r['scores'][t]:.3f}" for t in tasks) + f" | {r['mean']:.3f} |")
    if spread:
        print(f"\nmean ± sd over seeds 1..{args.seeds}:\n")
        print("| agent | " + " | ".join(tasks) + " | mean |")
        print("|---|" + "---:|" * (len(tasks) + 1))
        for name, r in spread.items():
            print(f"| {name} | " + " | ".join(f"{r[t]['mean']:.3f} ± {r[t]['sd']:.3f}" for t in tasks)
                  + f" | {r['all']:.3f} |")
    print()
    print("| transport | clients | episodes/s | steps/s | step p50 ms | step p95 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for transport, s in speed.items():
        print(f"| {transport} | {s['clients']} | {s['episodes_per_s']} | {s['steps_per_s']} | "
              f"{s['step_latency_ms_p50']} | {s['step_latency_ms_p95']} |")
    for n in notes:
        print(f"note: {n}")
    print(f"wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")


if __name__ == "__main__":
    main()
