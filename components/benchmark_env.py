"""The benchmark-env step (after evaluate): the released classifier plays every task of the
moderation environment with a fixed seed, beside the trivial baselines. Scores go to
``<reports>/benchmark_env.json`` (DVC metrics; the register step logs them to MLflow) and every
step to ``<reports>/benchmark_env_episodes.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from components.core.contract import write_json
from components.core.params import BenchmarkEnvParams

log = logging.getLogger(__name__)


def benchmark_env(release_dir: Path, params: BenchmarkEnvParams, reports_dir: Path) -> dict:
    """Play ``params.tasks`` with the classifier in ``release_dir`` and ``params.baselines``.

    Returns the step's statistics: ``{"seed", "bank_version", "scores": {agent: {task: score, "mean": ...}}}``,
    scores in [0, 1] (the environment's graders). Raises ModelFolderError for a folder that is not a model.
    """
    from moderation_env.agents import make_agent
    from moderation_env.items import default_bank
    from moderation_env.runner import LocalSession, run_tasks

    agents = [make_agent("classifier", model_folder=release_dir, variant=params.variant)]
    agents += [make_agent(name, seed=params.seed) for name in params.baselines]
    runs = {}
    for agent in agents:
        runs[agent.name] = run_tasks(LocalSession(), agent, params.tasks, params.seed)
        log.info("benchmark-env: %s %s mean %.3f", agent.name, runs[agent.name]["scores"],
                 runs[agent.name]["mean_score"])
    write_json(Path(reports_dir) / "benchmark_env_episodes.json", runs)
    return {
        "seed": params.seed,
        "bank_version": default_bank().version,
        "scores": {name: {**r["scores"], "mean": r["mean_score"]} for name, r in runs.items()},
    }
