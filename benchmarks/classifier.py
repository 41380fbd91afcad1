"""Benchmark: the exported classifier on CPU, per ONNX variant, against the serving targets.

For every variant in the exported folder (fp32, fp16, int8) and every intra-op thread count
(1 and 2 by default: on a 2-core machine 2 threads is not always faster), one fresh
subprocess loads the model with ``OnnxClassifier`` (what serving runs) and measures

- throughput: texts/s at batch 32 over ~512 texts of the test split (after a warm-up batch),
- batch-1 latency: p50 and p95 over ~200 single texts (after 10 warm-up calls),
- memory: the peak resident set size (``ru_maxrss``) minus the resident size before the
  model was loaded, so imports are not counted.

It also reads the training speed from ``reports/train.json`` and each stage's seconds from
the stage reports, and judges the targets: INT8 >= 1.5x fp32 throughput, INT8 batch-1 p50
under 10 ms, the whole default pipeline under 15 minutes. Writes ``reports/benchmark.json``.

    python benchmarks/classifier.py                      # models/moderation/onnx
    python benchmarks/classifier.py --model some/onnx/folder --threads 1 2 4

Run it on a quiet machine: a pipeline run in the background makes every number worse.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from components.model.folder import VARIANT_FILES  # noqa: E402  (imports no torch)
from flows.dvc_state import stage_names  # noqa: E402

TARGETS = {
    "int8_speedup": 1.5,  # INT8 throughput / fp32 throughput, each at its best thread count
    "int8_p50_ms": 10.0,  # INT8 batch-1 median latency, best thread count
    "pipeline_seconds": 900.0,  # the whole default pipeline (dvc repro, all stages)
}
_ORDER = stage_names(ROOT)
STAGE_ORDER = _ORDER[: _ORDER.index("evaluate") + 1]  # the stages the pipeline timing covers


# ---------------------------------------------------------------------------------------------
# the worker: one variant, one thread count, one fresh process


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def load_texts(path: Path, n: int, seed: int, skip: int = 0) -> list[str]:
    """``n`` texts from a JSONL split in a fixed shuffled order (cycled when the split is smaller)."""
    texts = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                texts.append(json.loads(line)["text"])
    if not texts:
        raise SystemExit(f"{path}: no texts")
    random.Random(seed).shuffle(texts)
    return [texts[(skip + i) % len(texts)] for i in range(n)]


def worker(args: argparse.Namespace) -> dict:
    import numpy as np

    from components.model.onnx_runtime import OnnxClassifier

    throughput_texts = load_texts(args.test, args.texts, args.seed)
    latency_texts = load_texts(args.test, args.latency_texts + 10, args.seed, skip=args.texts)
    base = _rss_bytes()
    t0 = time.perf_counter()
    model = OnnxClassifier(args.model, args.worker, threads=args.worker_threads)
    load_seconds = time.perf_counter() - t0

    model.predict_proba(throughput_texts[: args.batch_size], args.batch_size)  # warm-up
    t0 = time.perf_counter()
    model.predict_proba(throughput_texts, args.batch_size)
    tp_seconds = time.perf_counter() - t0

    for text in latency_texts[:10]:  # warm-up
        model.predict_proba([text], 1)
    lat = []
    for text in latency_texts[10:]:
        t0 = time.perf_counter()
        model.predict_proba([text], 1)
        lat.append((time.perf_counter() - t0) * 1000)
    return {
        "variant": args.worker,
        "threads": args.worker_threads,
        "load_seconds": round(load_seconds, 3),
        "texts": len(throughput_texts),
        "batch_size": args.batch_size,
        "texts_per_second": round(len(throughput_texts) / tp_seconds, 1),
        "latency_texts": len(lat),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "mean_ms": round(statistics.fmean(lat), 2),
        "rss_before_model_mb": round(base / 2**20, 1),
        "peak_rss_increase_mb": round((_peak_rss_bytes() - base) / 2**20, 1),
    }


def run_worker(args: argparse.Namespace, variant: str, threads: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--worker-threads", str(threads),
           "--model", str(args.model), "--test", str(args.test), "--texts", str(args.texts),
           "--latency-texts", str(args.latency_texts), "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"variant": variant, "threads": threads, "error": " | ".join(tail) or f"exit {proc.returncode}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------
# what the pipeline already measured


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def stage_seconds(reports: Path) -> dict[str, float]:
    """Each stage's own seconds from its report (reports/data/*.json, reports/*.json), in DAG order."""
    found = {}
    for path in [*sorted((reports / "data").glob("*.json")), *sorted(reports.glob("*.json"))]:
        data = _read_json(path)
        if data and isinstance(data.get("stage"), str) and isinstance(data.get("seconds"), (int, float)):
            name = "evaluate" if data["stage"] == "metrics" else data["stage"]
            found[name] = float(data["seconds"])
    return dict(sorted(found.items(), key=lambda kv: STAGE_ORDER.index(kv[0]) if kv[0] in STAGE_ORDER else 99))


def pipeline_time(reports: Path, stages: dict[str, float]) -> dict:
    """The whole pipeline's time: a cold end-to-end run when benchmarks/pipeline.py recorded one,
    else the sum of the last recorded time of every stage (None when a stage never reported)."""
    cold = _read_json(reports / "benchmark_pipeline.json")
    if cold and cold.get("wall_seconds_dvc_repro") and "evaluate" in cold.get("stages", []):
        return {"seconds": float(cold["wall_seconds_dvc_repro"]), "source": "reports/benchmark_pipeline.json (cold dvc repro)"}
    missing = [s for s in STAGE_ORDER if s not in stages]
    if missing:
        return {"seconds": None, "source": f"stage reports; never reported: {', '.join(missing)}"}
    return {"seconds": round(sum(stages[s] for s in STAGE_ORDER), 1),
            "source": "sum of the stage reports' own seconds (last run of each stage)"}


def training(reports: Path) -> dict | None:
    data = _read_json(reports / "train.json")
    if not data:
        return None
    keys = ("profile", "model", "mode", "device", "train_examples", "examples_per_second", "seconds", "epochs_run")
    return {k: data[k] for k in keys if k in data}


# ---------------------------------------------------------------------------------------------


def _best(runs: dict[str, dict], key: str, higher: bool) -> tuple[str | None, float | None]:
    ok = {t: r[key] for t, r in runs.items() if key in r}
    if not ok:
        return None, None
    t = (max if higher else min)(ok, key=ok.get)
    return t, ok[t]


def judge(variants: dict, pipeline: dict) -> dict:
    fp32, int8 = variants.get("fp32", {}), variants.get("int8", {})
    speedup = None
    if fp32.get("texts_per_second") and int8.get("texts_per_second"):
        speedup = round(int8["texts_per_second"] / fp32["texts_per_second"], 2)
    per_threads = {t: round(int8["runs"][t]["texts_per_second"] / fp32["runs"][t]["texts_per_second"], 2)
                   for t in int8.get("runs", {}) if "texts_per_second" in int8["runs"][t]
                   and "texts_per_second" in fp32.get("runs", {}).get(t, {})}
    p50 = int8.get("p50_ms")
    secs = pipeline.get("seconds")

    def verdict(measured, target, ok):
        return {"target": target, "measured": measured, "met": None if measured is None else bool(ok)}

    return {
        "int8_speedup": {**verdict(speedup, f">= {TARGETS['int8_speedup']}x fp32 throughput",
                                   speedup is not None and speedup >= TARGETS["int8_speedup"]),
                         "by_threads": per_threads},
        "int8_p50_ms": verdict(p50, f"< {TARGETS['int8_p50_ms']} ms batch-1 p50",
                               p50 is not None and p50 < TARGETS["int8_p50_ms"]),
        "pipeline_seconds": {**verdict(secs, f"< {TARGETS['pipeline_seconds']:.0f} s whole default pipeline",
                                       secs is not None and secs < TARGETS["pipeline_seconds"]),
                             "source": pipeline["source"]},
    }


def _pipeline_running() -> bool:
    try:
        return subprocess.run(["pgrep", "-f", "content-moderation run"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models/moderation/onnx", help="exported ONNX folder")
    ap.add_argument("--test", type=Path, default=ROOT / "data/splits/test.jsonl", help="texts to score (JSONL split)")
    ap.add_argument("--reports", type=Path, default=ROOT / "reports", help="folder of the stage reports")
    ap.add_argument("--output", type=Path, default=None, help="result JSON (default: <reports>/benchmark.json)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANT_FILES), default=None, help="default: all present")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="intra-op thread counts to measure")
    ap.add_argument("--texts", type=int, default=512, help="texts for the throughput run")
    ap.add_argument("--latency-texts", type=int, default=200, help="single texts for the latency run")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size of the throughput run")
    ap.add_argument("--seed", type=int, default=13, help="order of the sampled texts")
    ap.add_argument("--worker", choices=list(VARIANT_FILES), help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return

    if not (args.model / "classifier.json").exists():
        sys.exit(f"{args.model}: not an exported model folder; run the pipeline (content-moderation run) or pass --model")
    if not args.test.exists():
        sys.exit(f"{args.test}: no such file; run the pipeline or pass --test")
    present = [v for v, f in VARIANT_FILES.items() if (args.model / f).exists()]
    variants = [v for v in present if v in (args.variants or present)]
    if not variants:
        sys.exit(f"{args.model}: none of the variants {args.variants or list(VARIANT_FILES)} is there")
    if _pipeline_running():
        print("warning: a pipeline run is in progress; timings will be slower than on a quiet machine", file=sys.stderr)

    results: dict[str, dict] = {}
    for v in variants:
        runs = {}
        for t in args.threads:
            print(f"  {v} · {t} thread(s) ...", file=sys.stderr, flush=True)
            runs[str(t)] = run_worker(args, v, t)
        tp_threads, tp = _best(runs, "texts_per_second", higher=True)
        lat_threads, p50 = _best(runs, "p50_ms", higher=False)
        size = (args.model / VARIANT_FILES[v]).stat().st_size
        results[v] = {
            "file": VARIANT_FILES[v], "size_bytes": size, "size_mb": round(size / 1e6, 1),
            "texts_per_second": tp, "throughput_threads": tp_threads,
            "p50_ms": p50, "p95_ms": runs[lat_threads]["p95_ms"] if lat_threads else None, "latency_threads": lat_threads,
            "peak_rss_increase_mb": max((r["peak_rss_increase_mb"] for r in runs.values() if "peak_rss_increase_mb" in r),
                                        default=None),
            "runs": runs,
        }

    stages = stage_seconds(args.reports)
    pipeline = pipeline_time(args.reports, stages)
    report = {
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version(),
                    "platform": platform.platform(), "onnxruntime": _ort_version()},
        "model": str(args.model),
        "test": str(args.test),
        "settings": {"throughput_texts": args.texts, "batch_size": args.batch_size,
                     "latency_texts": args.latency_texts, "threads": args.threads},
        "variants": results,
        "training": training(args.reports),
        "stage_seconds": stages,
        "pipeline": pipeline,
        "targets": judge(results, pipeline),
        "pipeline_running_during_benchmark": _pipeline_running(),
    }
    out = args.output or args.reports / "benchmark.json"
    from components.core.contract import write_json

    write_json(out, report)
    print_report(report)
    print(f"wrote {out}")


def _ort_version() -> str:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return "?"


def print_report(report: dict) -> None:
    threads = report["settings"]["threads"]
    head = f"{'variant':<8}{'size MB':>9}" + "".join(f"{f'texts/s {t}t':>13}" for t in threads)
    head += "".join(f"{f'p50/p95 ms {t}t':>18}" for t in threads) + f"{'RSS +MB':>10}"
    print(head)
    print("-" * len(head))
    for v, r in report["variants"].items():
        row = f"{v:<8}{r['size_mb']:>9.1f}"
        for t in threads:
            run = r["runs"][str(t)]
            row += f"{run['texts_per_second']:>13.1f}" if "texts_per_second" in run else f"{'error':>13}"
        for t in threads:
            run = r["runs"][str(t)]
            row += f"{run['p50_ms']:>9.1f} /{run['p95_ms']:>6.1f}" if "p50_ms" in run else f"{'error':>18}"
        rss = r["peak_rss_increase_mb"]
        row += f"{rss:>10.1f}" if rss is not None else f"{'-':>10}"
        print(row)
        for t, run in r["runs"].items():
            if "error" in run:
                print(f"    {v} {t} thread(s) failed: {run['error']}")
    tr = report["training"]
    if tr:
        print(f"training: {tr.get('examples_per_second')} examples/s ({tr.get('mode')}, {tr.get('train_examples')} "
              f"examples, {tr.get('seconds')} s)")
    if report["stage_seconds"]:
        print("stages: " + ", ".join(f"{s} {sec:.1f}s" for s, sec in report["stage_seconds"].items()))
    for name, t in report["targets"].items():
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        print(f"target {name}: {t['target']}; measured {t['measured']} -> {mark}")


if __name__ == "__main__":
    main()
