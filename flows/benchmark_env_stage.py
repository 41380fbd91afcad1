"""The benchmark-env step (after evaluate): the released classifier plays every environment task
with a fixed seed, beside the trivial baselines; scores go to ``reports/benchmark_env.json``
(DVC metrics; the register step can log them to MLflow) and every step to
``reports/benchmark_env_episodes.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from components.contract import write_json
from components.params import Params

log = logging.getLogger(__name__)


def benchmark_env(root: Path, params: Params) -> dict:
    from components.moderation_env.agents import make_agent
    from components.moderation_env.items import default_bank
    from components.moderation_env.params import BenchmarkEnvParams
    from components.moderation_env.runner import LocalSession, run_tasks

    started = time.perf_counter()
    p: BenchmarkEnvParams = getattr(params, "benchmark_env", None) or BenchmarkEnvParams()
    folder = root / (p.model or f"{params.paths.model}/release")
    agents = [make_agent("classifier", model_folder=folder, variant=p.variant)]
    agents += [make_agent(name, seed=p.seed) for name in p.baselines]
    runs = {}
    for agent in agents:
        runs[agent.name] = run_tasks(LocalSession(), agent, p.tasks, p.seed)
        log.info("benchmark-env: %s %s mean %.3f", agent.name, runs[agent.name]["scores"],
                 runs[agent.name]["mean_score"])
    reports = root / params.paths.reports
    write_json(reports / "benchmark_env_episodes.json", runs)
    stats = {
        "stage": "benchmark-env", "seed": p.seed, "model": str(folder.relative_to(root) if folder.is_relative_to(root)
                                                               else folder),
        "bank_version": default_bank().version,
        "scores": {name: {**r["scores"], "mean": r["mean_score"]} for name, r in runs.items()},
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(reports / "benchmark_env.json", stats)
    return stats
