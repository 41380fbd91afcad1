"""Benchmark: the moderation environment's offline agents over many seeds, against the targets the
classifier agent has to meet.

    python benchmarks/env_seeds.py [--model models/moderation/release] [--seeds 20] \
        [--out reports/benchmark_env_seeds.json]

Plays random, approve-all and (when --model names an exported folder) the classifier on the four
tasks with seeds 1..N in process (``seed_spread`` of benchmarks/env.py). Prints a markdown table:
each agent's mean ± sd per task and its mean over tasks, the classifier's lead over random per task,
and whether each target holds: a lead of at least 0.15 on every task, a four-task mean of at least
0.45. Writes the same figures as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.env import seed_spread  # noqa: E402
from moderation_env.environment import TASKS  # noqa: E402
from moderation_env.items import default_bank  # noqa: E402

LEAD_TARGET = 0.15   # the classifier's lead over random, on every task
MEAN_TARGET = 0.45   # the classifier's mean over the four tasks


def targets(spread: dict) -> dict:
    """The classifier's lead over random per task and whether each target holds."""
    clf, rnd = spread["classifier"], spread["random"]
    lead = {t: round(clf[t]["mean"] - rnd[t]["mean"], 3) for t in TASKS}
    lead_met = {t: v >= LEAD_TARGET for t, v in lead.items()}
    return {"lead_target": LEAD_TARGET, "mean_target": MEAN_TARGET, "lead_over_random": lead, "lead_met": lead_met,
            "mean": clf["all"], "mean_met": clf["all"] >= MEAN_TARGET,
            "all_met": all(lead_met.values()) and clf["all"] >= MEAN_TARGET}


def table(spread: dict, goals: dict | None) -> str:
    tasks = list(TASKS)
    lines = ["| agent | " + " | ".join(tasks) + " | mean |", "|---|" + "---:|" * (len(tasks) + 1)]
    for name, r in spread.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[t]['mean']:.3f} ± {r[t]['sd']:.3f}" for t in tasks)
                     + f" | {r['all']:.3f} |")
    if goals:
        mark = {True: "yes", False: "**no**"}
        lines.append("| classifier − random | " + " | ".join(f"{goals['lead_over_random'][t]:+.3f}" for t in tasks)
                     + f" | {goals['mean'] - spread['random']['all']:+.3f} |")
        lines.append(f"| target met (lead ≥ {LEAD_TARGET}, mean ≥ {MEAN_TARGET}) | "
                     + " | ".join(mark[goals["lead_met"][t]] for t in tasks) + f" | {mark[goals['mean_met']]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models/moderation/release")
    ap.add_argument("--seeds", type=int, default=20, help="play seeds 1..N")
    ap.add_argument("--out", type=Path, default=ROOT / "reports/benchmark_env_seeds.json")
    args = ap.parse_args()

    names, notes = ["random", "approve-all"], []
    if args.model.is_dir():
        names.append("classifier")
    else:
        notes.append(f"classifier skipped, targets not judged: no exported model folder at {args.model}")
    spread = seed_spread(args.model, names, args.seeds)
    goals = targets(spread) if "classifier" in spread else None
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              "seeds": [1, args.seeds], "bank_version": default_bank().version, "model": str(args.model),
              "agents": spread, "targets": goals, "notes": notes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"mean ± sd over seeds 1..{args.seeds}:\n")
    print(table(spread, goals))
    if goals:
        print(f"\nall targets met: {'yes' if goals['all_met'] else 'no'}")
    for n in notes:
        print(f"note: {n}")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
