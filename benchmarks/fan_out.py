"""Benchmark: the generation steps run whole (the default task runner) or fanned out, one Prefect
task per category, on a Dask task runner (flows/task_runners.py) with 1 or 2 worker processes.

    python benchmarks/fan_out.py                  # both parts below -> reports/fan_out.json
    python benchmarks/fan_out.py --skip-llm       # the offline part only

1. Offline: generate-positives and generate-negatives at params.yaml's volumes (the offline
   generator, CPU-bound), each configuration in a fresh folder; wall time per step, the
   outputs' sha256 per configuration (they must be the same bytes).
2. A local LLM stand-in (tests/standins.py's OpenAI-compatible server on 127.0.0.1) that answers
   every request after ``--latency-ms`` (200 by default): ``--llm-positives`` positives per
   category for every category, 25 examples per request, ``generate.local.concurrency`` 1 and 4;
   requests, the most requests in flight at once as the server saw them, the mean in flight
   (request time / wall time) and wall time.

Every configuration runs inside one Prefect flow run (an ephemeral API), as train-flow runs the
steps; a Dask configuration's time includes starting and stopping its local cluster, once for both
steps as train-flow does (about 5 s on 2 cores).
Run it on a quiet machine: on 2 cores, a second worker process competes with everything else.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = [("default", 1), ("dask", 1), ("dask", 2)]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def run_steps(generate, out: Path, runner: str, workers: int) -> dict:
    """Both generation steps, in a flow run, with the map_fn train-flow would hand them."""
    from prefect import flow

    from components.generate_negatives import generate_negatives
    from components.generate_positives import generate_positives
    from flows.task_runners import FanOut, session

    @flow(name="fan-out-benchmark")
    def bench() -> dict:
        fan = FanOut(runner, workers)
        with session(fan):  # one cluster for both steps, as train-flow holds it
            return steps(fan)

    def steps(fan: FanOut) -> dict:
        times = {}
        t = time.perf_counter()
        generate_positives(generate, out / "positives", map_fn=fan.map_fn("generate-positives"))
        times["generate-positives"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        generate_negatives(generate, out / "negatives", out / "innocuous.jsonl", map_fn=fan.map_fn("generate-negatives"))
        times["generate-negatives"] = round(time.perf_counter() - t, 2)
        return times

    times = bench()
    return {"task_runner": runner, "workers": workers if runner == "dask" else None, "seconds": times,
            "total_s": round(sum(times.values()), 2),
            "sha256": digest(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-llm", action="store_true")
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--llm-positives", type=int, default=50, help="positives per category with the stand-in")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "fan_out.json")
    args = ap.parse_args()

    from flows.settings import apply_defaults

    tmp_home = Path(tempfile.mkdtemp(prefix="fan-out-"))
    apply_defaults(tmp_home)  # an ephemeral Prefect under the temporary folder, offline switches
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from components.core.params import load_params

    generate = load_params(ROOT / "params.yaml").generate
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    offline = []
    for runner, workers in CONFIGS:
        result = run_steps(generate, tmp_home / f"offline-{runner}-{workers}", runner, workers)
        offline.append(result)
        print(f"offline {runner:7} workers={workers}: {result['seconds']} total {result['total_s']} s "
              f"sha256 {result['sha256']}", flush=True)
    report["offline"] = {"volumes": {"positives_per_category": generate.positives_per_category,
                                     "innocuous": generate.innocuous},
                         "runs": offline, "same_bytes": len({r["sha256"] for r in offline}) == 1}

    if not args.skip_llm:
        from tests.standins import OpenAIStandIn

        llm_runs = []
        with OpenAIStandIn() as server:
            server.delay_s = args.latency_ms / 1000
            for concurrency in (1, 4):
                for runner, workers in CONFIGS:
                    gen = generate.model_copy(update={
                        "backend": "local", "positives_per_category": args.llm_positives,
                        "hard_negatives_default": 25, "hard_negatives": {}, "innocuous": 100,
                        "local": generate.local.model_copy(update={
                            "base_url": server.url + "/v1", "concurrency": concurrency,
                            "cache_dir": str(tmp_home / f"cache-{concurrency}-{runner}-{workers}")}),
                    })
                    server.reset()
                    server.delay_s = args.latency_ms / 1000
                    server.max_in_flight = 0
                    result = run_steps(gen, tmp_home / f"llm-{concurrency}-{runner}-{workers}", runner, workers)
                    busy = len(server.log) * server.delay_s
                    result.update(concurrency=concurrency, requests=len(server.log),
                                  max_in_flight=server.max_in_flight,
                                  mean_in_flight=round(busy / result["total_s"], 2))
                    llm_runs.append(result)
                    print(f"llm c={concurrency} {runner:7} workers={workers}: {result['requests']} requests, "
                          f"max in flight {result['max_in_flight']}, mean {result['mean_in_flight']}, "
                          f"{result['total_s']} s, sha256 {result['sha256']}", flush=True)
        report["llm_standin"] = {"latency_ms": args.latency_ms, "positives_per_category": args.llm_positives,
                                 "examples_per_request": generate.local.examples_per_request, "runs": llm_runs}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
