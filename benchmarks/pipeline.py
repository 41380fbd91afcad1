"""Benchmark: the pipeline at default volume, from nothing, timed end to end through DVC.

Copies the project to a temporary folder (so the workspace's outputs and caches are
untouched: every step, embeddings included, runs cold), runs `dvc repro` there on the
default params, and reports wall time, each stage's own time, volumes and diversity.

    python benchmarks/pipeline.py --to merge   # the data half -> reports/benchmark_data.json
    python benchmarks/pipeline.py              # the whole DAG -> reports/benchmark_pipeline.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flows.dvc_state import stage_names

ROOT = Path(__file__).resolve().parents[1]
_ORDER = stage_names(ROOT)
DATA_STAGES = _ORDER[: _ORDER.index("train")]
MODEL_STAGES = _ORDER[_ORDER.index("train"): _ORDER.index("evaluate") + 1]
STAGE_REPORTS = {"train": "reports/train.json", "export": "reports/export.json", "evaluate": "reports/metrics.json"}


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--to", choices=DATA_STAGES + MODEL_STAGES, default="evaluate", help="last stage to run")
    args = ap.parse_args()
    data_only = args.to in DATA_STAGES
    stages = DATA_STAGES + ([] if data_only else MODEL_STAGES)
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
        proc = subprocess.run([str(bindir / "dvc"), "repro", args.to], cwd=repo, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"dvc repro failed:\n{proc.stdout}\n{proc.stderr}")
        stage_stats = {s: json.loads((repo / STAGE_REPORTS.get(s, f"reports/data/{s.replace('-', '_')}.json")).read_text())
                       for s in stages}

    pos, neg, pert = (stage_stats[s] for s in DATA_STAGES[:3])
    ingest, merge = stage_stats["ingest-external"], stage_stats["merge"]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "wall_seconds_dvc_repro": round(wall, 1),
        "target_seconds": 120 if data_only else 900,
        "stages": stages,
        "stage_seconds": {s: stage_stats[s]["seconds"] for s in stages},
        "volumes": {
            "positives": pos["records"], "hard_negatives": neg["records"], "innocuous": neg["innocuous"]["count"],
            "perturbations": pert.get("variants"), "external": ingest.get("totals", {}).get("kept"),
            "splits": merge["records"], "multi_label_records": merge["multi_label_records"],
        },
        "diversity": {"positives": pos["diversity"], "hard_negatives": neg["diversity"], "innocuous": neg["innocuous"]},
        "dedup": merge["dedup"],
        "groups_across_splits": merge["groups_across_splits"],
    }
    if not data_only:
        m = stage_stats["evaluate"]
        result["model"] = {"served_variant": m["served_variant"], "gate_passed": m["gate"]["passed"],
                           "test_macro_f1": m["test"]["macro_f1"], "test_micro_f1": m["test"]["micro_f1"],
                           "train": {k: stage_stats["train"][k] for k in ("mode", "examples_per_second", "best_val_macro_f1_at_0.5")}}
    out = ROOT / "reports" / ("benchmark_data.json" if data_only else "benchmark_pipeline.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    what = "data half" if data_only else "whole pipeline"
    print(f"dvc repro, {what}, default volume, cold: {wall:.1f} s (target < {result['target_seconds']} s)")
    for s in stages:
        print(f"  {s:<24} {stage_stats[s]['seconds']:>7.1f} s")
    print("volumes:", json.dumps(result["volumes"]))
    for k, v in result["diversity"].items():
        print(f"diversity {k}: distinct-1 {v['distinct_1']} distinct-2 {v['distinct_2']} distinct-3 {v['distinct_3']} "
              f"exact dup {v['exact_duplicate_rate']} near dup {v['near_duplicate_rate']}")
    print("dedup:", json.dumps(result["dedup"]))
    if "model" in result:
        print("model:", json.dumps(result["model"]))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
