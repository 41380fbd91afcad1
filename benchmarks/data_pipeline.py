"""Benchmark: the data half of the pipeline at default volume, timed end to end through DVC.

Copies the project to a temporary folder (so the workspace's outputs are untouched), runs
`dvc repro` there on the default params, and reports wall time, each stage's own time,
volumes and diversity. Writes reports/benchmark_data.json and prints a table.

    python benchmarks/data_pipeline.py            # default volume
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["generate-positives", "generate-negatives", "generate-perturbations", "ingest-external", "merge"]


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def main() -> None:
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    with tempfile.TemporaryDirectory(prefix="cm-bench-") as tmp:
        repo = Path(tmp) / "project"
        for f in project_files():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
        # The public sets that live beside the checkout are found through the same relative root.
        shared = ROOT.parent / "shared"
        if shared.exists():
            os.symlink(shared, Path(tmp) / "shared")
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        t0 = time.perf_counter()
        proc = subprocess.run([str(bindir / "dvc"), "repro"], cwd=repo, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"dvc repro failed:\n{proc.stdout}\n{proc.stderr}")
        stage_stats = {s: json.loads((repo / "reports/data" / f"{s.replace('-', '_')}.json").read_text()) for s in STAGES}

    pos, neg, pert = (stage_stats[s] for s in STAGES[:3])
    ingest, merge = stage_stats["ingest-external"], stage_stats["merge"]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "wall_seconds_dvc_repro": round(wall, 1),
        "target_seconds": 120,
        "stage_seconds": {s: stage_stats[s]["seconds"] for s in STAGES},
        "volumes": {
            "positives": pos["records"], "hard_negatives": neg["records"], "innocuous": neg["innocuous"]["count"],
            "perturbations": pert.get("variants"), "external": ingest.get("totals", {}).get("kept"),
            "splits": merge["records"], "multi_label_records": merge["multi_label_records"],
        },
        "diversity": {"positives": pos["diversity"], "hard_negatives": neg["diversity"], "innocuous": neg["innocuous"]},
        "dedup": merge["dedup"],
        "groups_across_splits": merge["groups_across_splits"],
    }
    out = ROOT / "reports" / "benchmark_data.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"dvc repro, data half, default volume: {wall:.1f} s (target < 120 s)")
    for s in STAGES:
        print(f"  {s:<24} {stage_stats[s]['seconds']:>7.1f} s")
    print("volumes:", json.dumps(result["volumes"]))
    for k, v in result["diversity"].items():
        print(f"diversity {k}: distinct-1 {v['distinct_1']} distinct-2 {v['distinct_2']} distinct-3 {v['distinct_3']} "
              f"exact dup {v['exact_duplicate_rate']} near dup {v['near_duplicate_rate']}")
    print("dedup:", json.dumps(result["dedup"]))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
