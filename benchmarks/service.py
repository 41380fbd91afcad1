"""Benchmark: the HTTP service (``content-moderation serve``) under concurrent clients, a champion
alias moved while they send, and the bare onnxruntime throughput of the same variant beside it.

    python benchmarks/service.py                                  # models/moderation/release, 50 clients, 60 s
    python benchmarks/service.py --clients 16 --seconds 30 --threads 1 --batch-wait-ms 10
    python benchmarks/service.py --model some/release --seconds 6 --clients 4 --out /tmp/trial.json

What it does (the server and the clients each in a process of their own):

1. A throwaway SQLite MLflow registry in a temporary folder: the release folder (``--model``) is
   logged once as the project's pyfunc model (``log_pipeline_run`` with ``log_release_model``) and
   registered twice (``register_version``): versions 1 and 2 of ``service-benchmark``; ``promote``
   makes version 1 champion.
2. ``python -m flows.cli serve --model models:/service-benchmark@champion --poll-s 2`` on
   127.0.0.1 (a free port), with ``MLFLOW_TRACKING_URI`` at that registry; it runs in a project
   shell in the temporary folder, so its download cache lands there too. Waits for ``/ready``.
3. A load generator (this file with a hidden ``--load-worker``: asyncio + httpx) runs ``--clients``
   clients back to back for ``--seconds``: single texts first, then requests of ``--batch-size``
   texts (half the time each by default), texts from the test split. At ``--move-at`` seconds (the
   middle by default) ``promote`` moves ``champion`` to version 2; each answer's
   ``X-Model-Version`` shows when the service switched.
4. A sweep for the p99 target: single texts at 1, 2, 4, 8, 16 and 50 clients, ``--sweep-seconds`` each.
5. The server is stopped; the bare onnxruntime figures of the same variant at the same thread count
   come from benchmarks/classifier.py's worker (batch 32 texts/s, batch-1 p50), so the report gives
   the service's throughput as a fraction of the bare figure.

Per phase: requests, errors (any non-200 or exception), requests/s and texts/s, p50/p95/p99
latency (client side: send to last byte). The first second or two of each phase is a warm-up
(errors counted, latency not). The server's resident memory is sampled every 0.2 s (psutil, else
/proc) and its kernel high-water mark (VmHWM) read before it stops. Prints markdown tables and
writes reports/service_benchmark.json (``--out``) with the machine, the variant, the settings and
``targets``: zero errors, the highest concurrency at which single-text p99 <= 50 ms, and the
batch phase's throughput as a fraction of the bare figure.

The load generator shares the machine with the server (on 2 cores it takes a real share of them),
and a pipeline run in the background makes every number worse: run it on a quiet machine.
Ctrl-C or a failure stops the server and the clients and removes the temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.local import free_port  # noqa: E402

MODEL_NAME = "service-benchmark"
WHO = "benchmarks/service.py"
P99_TARGET_MS = 50.0
POOL_SIZE = 2000  # texts the clients cycle through
FALLBACK_TEXTS = [  # when the test split is missing
    "[GENERAL][MESSAGE] hey, are we still on for the market on saturday morning?",
    "[GENERAL][GENERAL] my dog chased its own tail for a full minute. send help",
    "[GENERAL][REVIEW] The soup was cold and the waiter ignored us for twenty minutes.",
    "[GENERAL][LISTING] Selling my old bike, barely used, pick up only",
    "[ADULT][BIO] Into hiking, bad puns and terrible horror films. Say hi.",
    "[GENERAL][MESSAGE] I know where you live and I will hurt you tonight",
    "[GENERAL][MESSAGE] send me $200 in gift cards or your account gets deleted today",
    "[GENERAL][GENERAL] DM me on whatsapp +1 555 0134 for cheap followers",
    "[GENERAL][MESSAGE] you are a worthless idiot and everyone hates you",
    "[GENERAL][REVIEW] Great little bakery, the almond croissants are worth the queue.",
    "[ADULT][MESSAGE] what are the dimensions of the kayak? want to make sure it fits",
    "[GENERAL][GENERAL] Can't stop thinking about the chili from the place by the station.",
    "[GENERAL][LISTING] Puppies for sale, vaccinated, message for details",
    "[GENERAL][MESSAGE] click this link to claim your prize before midnight!!!",
    "[GENERAL][BIO] Teacher, runner, amateur baker. Opinions are my own.",
    "[GENERAL][MESSAGE] thanks for the quick reply, see you soon",
]


class BenchmarkError(RuntimeError):
    """The server or the load generator did not do its part; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# the load generator: its own process (--load-worker SPEC)


async def _client(url: str, phase: dict, texts: list[str], idx: int, timeout: float, out: dict) -> None:
    import httpx

    n, at = phase["items"], (idx * 97) % len(texts)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
        while time.time() < phase["stop_at"]:
            items = [texts[(at + k) % len(texts)] for k in range(n)]
            at += n
            t0, p0 = time.time(), time.perf_counter()
            version, kind = None, None
            try:
                r = await http.post("/v1/moderate", json={"items": items})
                status = r.status_code
                if status == 200:
                    version = r.headers.get("x-model-version") or str(r.json()["model"]["version"])
                else:
                    kind = f"HTTP {status}"
                    detail = r.text[:200]
            except Exception as exc:  # a timeout, a refused or dropped connection: all count as errors
                status, kind, detail = 0, type(exc).__name__, str(exc)[:200]
            out["records"].append([round(t0, 4), round(time.perf_counter() - p0, 5), status, version, n])
            if kind:
                out["errors"][kind] = out["errors"].get(kind, 0) + 1
                if len(out["error_samples"]) < 5:
                    out["error_samples"].append(f"{kind}: {detail}")


async def _run_phases(spec: dict, texts: list[str]) -> list[dict]:
    done = []
    for i, phase in enumerate(spec["phases"]):
        phase = {**phase, "records": [], "errors": {}, "error_samples": []}
        phase["started"] = time.time()
        phase["stop_at"] = phase["started"] + phase["seconds"]
        if i == 0:
            print(json.dumps({"event": "started", "t": phase["started"]}), flush=True)
        await asyncio.gather(*(_client(spec["url"], phase, texts, c, spec["timeout"], phase)
                               for c in range(phase["clients"])))
        phase["ended"] = time.time()
        done.append(phase)
    return done


def load_worker(spec_path: str) -> None:
    import resource

    spec = json.loads(Path(spec_path).read_text("utf-8"))
    texts = json.loads(Path(spec["texts"]).read_text("utf-8"))
    phases = asyncio.run(_run_phases(spec, texts))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(spec["out"]).write_text(json.dumps({"phases": phases, "cpu_seconds": usage.ru_utime + usage.ru_stime}))


# ---------------------------------------------------------------------------------------------
# processes: started in their own session, stopped whatever happens


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if this process dies (Linux), so a killed run leaves no server."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(cmd: list[str], procs: list, **kw) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, start_new_session=True,  # Ctrl-C reaches only us; we stop the children
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None, **kw)
    procs.append(proc)
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 15 s; nothing if it has exited."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# the registry, the texts, the server


def register_twice(uri: str, artifacts: str, release: Path) -> list[str]:
    """Versions 1 and 2 of MODEL_NAME (one logged pyfunc model, registered twice); 1 is champion."""
    from components import tracking
    from components.serving.mlflow_model import log_release_model

    run_id = tracking.log_pipeline_run(uri, MODEL_NAME, params={}, report={}, model_dir=release,
                                       model_logger=log_release_model, tags={"benchmark": "service"},
                                       run_name=MODEL_NAME, artifact_location=artifacts)
    versions = [tracking.register_version(uri, run_id, MODEL_NAME) for _ in range(2)]
    tracking.promote(uri, versions[0], WHO, "the benchmark's starting champion", MODEL_NAME)
    return versions


def text_pool(test: Path, max_chars: int, seed: int) -> tuple[list[str], str, int]:
    """Texts the service accepts (the request's own checks), from ``test`` or the built-in list;
    returns (texts, where from, how many were left out)."""
    from benchmarks.classifier import load_texts
    from components.core.taxonomy import split_prefix
    from components.core.validity import text_problem

    texts, source = (load_texts(test, POOL_SIZE, seed), str(test)) if test.exists() else (FALLBACK_TEXTS, "built-in")

    def accepted(text: str) -> bool:
        try:
            split_prefix(text)
        except ValueError:
            return False
        return len(text) <= max_chars and not text_problem(text)

    kept = [t for t in texts if accepted(t)]
    if not kept:
        raise SystemExit(f"{source}: no text the service would accept")
    return kept, source, len(texts) - len(kept)


def start_server(args: argparse.Namespace, tmp: Path, port: int, threads: int, procs: list) -> subprocess.Popen:
    shell = tmp / "project"  # dvc.yaml + params.yaml: the serve command's project root, its cache below it
    shell.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        (shell / name).symlink_to(ROOT / name)
    cmd = [sys.executable, "-m", "flows.cli", "serve", "--model", f"models:/{MODEL_NAME}@champion",
           "--host", "127.0.0.1", "--port", str(port), "--poll-s", f"{args.poll_s:g}", "--threads", str(threads),
           "--batch-wait-ms", f"{args.batch_wait_ms:g}", "--max-batch-items", str(args.max_batch_items),
           "--max-scored-items", str(args.max_scored_items)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = open(tmp / "server.log", "wb")
    try:
        return _spawn(cmd, procs, cwd=shell, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def wait_ready(url: str, server: subprocess.Popen, timeout: float, version: str | None = None) -> dict:
    """``/ready``'s answer once a model (``version``, when given) is loaded and nothing is loading."""
    import httpx

    deadline, body = time.time() + timeout, {}
    while time.time() < deadline:
        if server.poll() is not None:
            raise BenchmarkError(f"the server exited ({server.returncode}) before it was ready")
        try:
            r = httpx.get(f"{url}/ready", timeout=5)
            body = r.json()
        except (httpx.HTTPError, ValueError):
            body = {}
        if _is_ready(body) and (version is None or str(body["model"]["version"]) == version) and not body.get("loading"):
            return body
        if "could not be loaded" in str(body.get("reason", "")) + str(body.get("rejected", "")):
            raise BenchmarkError(f"the server cannot load the model: {body.get('rejected') or body.get('reason')}")
        time.sleep(0.5)
    raise BenchmarkError(f"the server was not ready within {timeout:.0f} s: {body or 'no answer'}")


def _is_ready(body: dict) -> bool:
    return body.get("status") == "ready" and isinstance(body.get("model"), dict)


class MemorySampler(threading.Thread):
    """The server's resident set size every ``every`` seconds: a list of (time, bytes)."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self._halt = threading.Event()

    def rss(self) -> int | None:
        try:
            import psutil

            return int(psutil.Process(self.pid).memory_info().rss)
        except ImportError:
            return _proc_status_kb(self.pid, "VmRSS")
        except Exception:  # the process is gone
            return None

    def run(self) -> None:
        while not self._halt.is_set():
            rss = self.rss()
            if rss is None:
                return
            self.samples.append((time.time(), rss))
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def peak_mb(self, start: float = 0.0, end: float = float("inf")) -> float | None:
        got = [b for t, b in self.samples if start <= t <= end]
        return round(max(got) / 2**20, 1) if got else None


def _proc_status_kb(pid: int, field: str) -> int | None:
    """A ``/proc/<pid>/status`` memory field (e.g. VmHWM, the kernel's peak RSS) in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_seconds(pid: int) -> float | None:
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:
        return None


def run_load(url: str, phases: list[dict], tmp: Path, name: str, procs: list, timeout: float,
             at: float | None = None, action=None) -> dict:
    """Run ``phases`` in a load-generator process; ``action()`` runs ``at`` seconds after the first
    phase starts (returns what it returns under ``action``)."""
    spec = {"url": url, "phases": phases, "texts": str(tmp / "texts.json"), "out": str(tmp / f"{name}.json"),
            "timeout": timeout}
    (tmp / f"{name}.spec.json").write_text(json.dumps(spec))
    worker = _spawn([sys.executable, str(Path(__file__).resolve()), "--load-worker", str(tmp / f"{name}.spec.json")],
                    procs, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([worker.stdout], [], [], 120)
    line = worker.stdout.readline() if ready else ""
    if not line.startswith("{"):
        stop_process(worker)
        raise BenchmarkError(f"the load generator did not start (exit {worker.poll()})")
    started = json.loads(line)["t"]
    result = {}
    if action is not None:
        time.sleep(max(0.0, started + at - time.time()))
        result["action"] = action()
    planned = sum(p["seconds"] for p in phases)
    try:
        worker.wait(max(60.0, planned - (time.time() - started)) + len(phases) * (timeout + 10))
    except subprocess.TimeoutExpired:
        raise BenchmarkError("the load generator did not finish in time") from None
    if worker.returncode:
        raise BenchmarkError(f"the load generator failed (exit {worker.returncode})")
    return {**json.loads(Path(spec["out"]).read_text("utf-8")), **result}


# ---------------------------------------------------------------------------------------------
# figures


def phase_figures(phase: dict) -> dict:
    """Throughput over the measured window (completions in it), latency of the requests sent in it."""
    import numpy as np

    start, end = phase["started"] + phase["warmup"], phase["stop_at"]
    window = end - start
    ok = [r for r in phase["records"] if r[2] == 200]
    sent = [r for r in ok if start <= r[0] < end]
    completed = [r for r in ok if start <= r[0] + r[1] <= end]
    lat = np.array([r[1] for r in sent]) * 1000
    pct = dict(zip(("p50_ms", "p95_ms", "p99_ms"), (round(float(v), 1) for v in np.percentile(lat, [50, 95, 99])))) \
        if len(lat) else {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {
        "clients": phase["clients"], "texts_per_request": phase["items"],
        "seconds": round(window, 2), "warmup_seconds": phase["warmup"],
        "requests": len(phase["records"]), "errors": sum(phase["errors"].values()), "error_kinds": phase["errors"],
        "error_samples": phase["error_samples"], "measured_requests": len(sent),
        "requests_per_s": round(len(completed) / window, 1) if window > 0 else None,
        "texts_per_s": round(sum(r[4] for r in completed) / window, 1) if window > 0 else None,
        **pct, "max_ms": round(float(lat.max()), 1) if len(lat) else None,
        "drain_seconds": round(phase["ended"] - phase["stop_at"], 2),  # the in-flight requests after the stop
        "answered_by_version": dict(Counter(str(r[3]) for r in ok)),
    }


def switch_figures(phases: list[dict], moved_at: float, old: str, new: str) -> dict:
    """When answers switched to ``new`` after the alias moved, and the latency around it."""
    import numpy as np

    ok = sorted((r for p in phases for r in p["records"] if r[2] == 200), key=lambda r: r[0] + r[1])
    first_new = next((r[0] + r[1] for r in ok if r[3] == new), None)
    out = {"from_version": old, "to_version": new, "alias_moved_at": round(moved_at, 3),
           "seconds_to_first_new_answer": round(first_new - moved_at, 2) if first_new else None,
           "old_answers_after_alias_move": sum(1 for r in ok if r[3] == old and r[0] + r[1] > moved_at),
           # a request sent after the first new answer must never get the old model
           "old_answers_to_requests_sent_after_switch": sum(1 for r in ok if r[3] == old and first_new
                                                            and r[0] > first_new)}
    if first_new:
        around = np.array([r[1] for r in ok if moved_at <= r[0] <= first_new]) * 1000
        if len(around):
            out["latency_while_loading_ms"] = {"requests": len(around), "p50": round(float(np.percentile(around, 50)), 1),
                                               "p99": round(float(np.percentile(around, 99)), 1),
                                               "max": round(float(around.max()), 1)}
    return out


def bare_figures(release: Path, variant: str, threads: int, test: Path, seed: int) -> dict:
    """benchmarks/classifier.py's worker on the same folder, variant and thread count."""
    from benchmarks.classifier import run_worker

    ns = argparse.Namespace(model=release, test=test, texts=512, latency_texts=200, batch_size=32, seed=seed)
    return run_worker(ns, variant, threads)


def machine() -> dict:
    from benchmarks.classifier import _cpu_model, _ort_version

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpus": os.cpu_count(), "usable_cores": usable, "cpu": _cpu_model(), "python": platform.python_version(),
            "platform": platform.platform(), "onnxruntime": _ort_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


# ---------------------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, tmp: Path, procs: list) -> dict:
    from benchmarks.classifier import _pipeline_running
    from components import tracking

    facts = machine()
    threads = args.threads or facts["usable_cores"] or 1
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri  # this process and the server: never the project's store
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from flows.settings import apply_defaults

    apply_defaults(ROOT)
    busy_at_start = _pipeline_running()

    texts, source, left_out = text_pool(args.test, args.max_text_chars, args.seed)
    (tmp / "texts.json").write_text(json.dumps(texts))
    test = args.test
    if not test.exists():  # the bare worker reads a JSONL split
        test = tmp / "texts.jsonl"
        test.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))

    say(f"registering {args.model} twice in a throwaway registry …")
    t = time.time()
    old, new = register_twice(uri, (tmp / "mlruns").as_uri(), args.model)
    register_s = time.time() - t

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    say(f"starting the server on {url} (champion: version {old}) …")
    t = time.time()
    server = start_server(args, tmp, port, threads, procs)
    memory = MemorySampler(server.pid)
    memory.start()
    ready = wait_ready(url, server, args.ready_timeout, old)
    ready_at = time.time()
    startup_s = ready_at - t
    variant = ready["model"]["variant"]
    say(f"serving version {old} ({variant}) after {startup_s:.1f} s")

    single_s = round(args.seconds * args.single_fraction, 2)
    warm = min(2.0, round(0.1 * min(single_s, args.seconds - single_s), 2))
    phases = [{"name": "single", "clients": args.clients, "items": 1, "seconds": single_s, "warmup": warm},
              {"name": "batch", "clients": args.clients, "items": args.batch_size,
               "seconds": round(args.seconds - single_s, 2), "warmup": warm}]
    move_at = args.seconds / 2 if args.move_at is None else args.move_at
    moved: dict = {}

    def move_alias() -> None:
        moved["requested"] = time.time()
        tracking.promote(uri, new, WHO, "the benchmark moves the alias under load", MODEL_NAME)
        moved["done"] = time.time()

    say(f"{args.clients} clients for {args.seconds:g} s ({single_s:g} s single texts, then "
        f"{args.seconds - single_s:g} s of {args.batch_size}); champion -> version {new} at {move_at:g} s …")
    cpu0 = _cpu_seconds(server.pid)
    main_run = run_load(url, phases, tmp, "main", procs, args.request_timeout, at=move_at, action=move_alias)
    cpu1 = _cpu_seconds(server.pid)
    main_end = time.time()
    switch = switch_figures(main_run["phases"], moved["done"], old, new)
    switch["alias_move_took_s"] = round(moved["done"] - moved["requested"], 3)
    try:
        wait_ready(url, server, args.ready_timeout, new)  # the sweep must not overlap the load of version 2
        switch["switched_by_end_of_run"] = True
    except BenchmarkError as exc:
        switch["switched_by_end_of_run"] = False
        switch["problem"] = str(exc)

    sweep = {}
    if args.sweep and args.sweep_seconds > 0:
        levels = sorted(set(args.sweep))
        say(f"sweep: single texts at {', '.join(map(str, levels))} clients, {args.sweep_seconds:g} s each …")
        sweep_warm = min(1.0, round(0.2 * args.sweep_seconds, 2))
        run = run_load(url, [{"name": f"sweep-{c}", "clients": c, "items": 1, "seconds": args.sweep_seconds,
                              "warmup": sweep_warm} for c in levels], tmp, "sweep", procs, args.request_timeout)
        sweep = {str(p["clients"]): phase_figures(p) for p in run["phases"]}
        for fig in sweep.values():
            fig["p99_le_50ms"] = fig["p99_ms"] is not None and fig["p99_ms"] <= P99_TARGET_MS and not fig["errors"]

    memory_figs = {"rss_ready_mb": memory.peak_mb(ready_at - 1, ready_at + 1),
                   "peak_rss_mb": memory.peak_mb(),
                   "peak_rss_before_alias_move_mb": memory.peak_mb(0, moved["done"]),
                   "peak_rss_after_alias_move_mb": memory.peak_mb(moved["done"], main_end),
                   "vmhwm_mb": round(hwm / 2**20, 1) if (hwm := _proc_status_kb(server.pid, "VmHWM")) else None,
                   "samples": len(memory.samples), "sample_every_s": memory.every}
    memory.stop()
    stop_process(server)

    say(f"bare onnxruntime: {variant}, {threads} thread(s) …")
    bare = bare_figures(args.model, variant, threads, test, args.seed)

    figures = {p["name"]: phase_figures(p) for p in main_run["phases"]}
    bare_tps = bare.get("texts_per_second")
    fraction = {name: round(f["texts_per_s"] / bare_tps, 3) if bare_tps and f["texts_per_s"] is not None else None
                for name, f in figures.items()}
    errors = sum(f["errors"] for f in figures.values()) + sum(f["errors"] for f in sweep.values())
    meeting = [int(c) for c, f in sweep.items() if f["p99_le_50ms"]]
    return {
        "machine": facts,
        "model": str(args.model),
        "variant": variant,
        "registry": {"model_name": MODEL_NAME, "versions": [old, new], "setup_seconds": round(register_s, 1)},
        "settings": {"clients": args.clients, "seconds": args.seconds, "single_seconds": single_s,
                     "batch_seconds": round(args.seconds - single_s, 2), "batch_size": args.batch_size,
                     "threads": threads, "batch_wait_ms": args.batch_wait_ms, "max_batch_items": args.max_batch_items,
                     "max_scored_items": args.max_scored_items,
                     "poll_s": args.poll_s, "alias_move_at_s": move_at, "sweep_clients": sorted(set(args.sweep or [])),
                     "sweep_seconds": args.sweep_seconds, "request_timeout_s": args.request_timeout,
                     "texts": source, "texts_in_pool": len(texts), "texts_left_out": left_out, "seed": args.seed},
        "server_startup_seconds": round(startup_s, 1),
        "phases": figures,
        "alias_switch": switch,
        "sweep": sweep,
        "server_memory": memory_figs,
        "cpu_seconds": {"server_main_run": round(cpu1 - cpu0, 1) if cpu0 is not None and cpu1 is not None else None,
                        "load_generator_main_run": round(main_run["cpu_seconds"], 1)},
        "bare_onnxruntime": bare,
        "throughput_fraction_of_bare": fraction,
        "targets": {
            "errors_zero": errors == 0,
            "p99_single_le_50ms_at": max(meeting) if meeting else None,
            "throughput_fraction_of_bare": fraction.get("batch"),
        },
        "pipeline_running_during_benchmark": busy_at_start or _pipeline_running(),
        "notes": ["latency is client side (send to last byte); the load generator shares the machine's cores",
                  "throughput_fraction_of_bare: the batch phase's texts/s over the bare batch-32 texts/s "
                  "(benchmarks/classifier.py worker, same variant and threads)",
                  f"versions {old} and {new} are the same logged model registered twice: the switch is a real "
                  "download and load of another version",
                  f"the alias moved {move_at:g} s into the run, in the {'single' if move_at < single_s else 'batch'} "
                  "phase: loading the new version (seconds of CPU) is inside that phase's figures; --move-at "
                  "chooses another moment"],
    }


def say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def print_report(report: dict) -> None:
    s = report["settings"]
    print(f"\n{report['model']} ({report['variant']}), {s['threads']} thread(s), batch wait {s['batch_wait_ms']:g} ms, "
          f"max batch {s['max_batch_items']}, scored together {s.get('max_scored_items', s['max_batch_items'])}; "
          f"{report['machine']['usable_cores']} cores\n")
    print("| phase | clients | texts/request | requests | errors | req/s | texts/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, f in report["phases"].items():
        print(f"| {name} | {f['clients']} | {f['texts_per_request']} | {f['requests']} | {f['errors']} | "
              f"{_ms(f['requests_per_s'])} | {_ms(f['texts_per_s'])} | {_ms(f['p50_ms'])} | {_ms(f['p95_ms'])} | "
              f"{_ms(f['p99_ms'])} |")
    if report["sweep"]:
        print("\n| single texts, clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms | p99 <= 50 ms |")
        print("|---:|---:|---:|---:|---:|---:|---:|---|")
        for c, f in report["sweep"].items():
            print(f"| {c} | {f['requests']} | {f['errors']} | {_ms(f['requests_per_s'])} | {_ms(f['p50_ms'])} | "
                  f"{_ms(f['p95_ms'])} | {_ms(f['p99_ms'])} | {'yes' if f['p99_le_50ms'] else 'no'} |")
    bare = report["bare_onnxruntime"]
    print()
    if "error" in bare:
        print(f"bare onnxruntime: failed ({bare['error']})")
    else:
        print(f"bare onnxruntime ({bare['variant']}, {bare['threads']} thread(s)): {bare['texts_per_second']} texts/s "
              f"at batch 32, batch-1 p50 {bare['p50_ms']} ms; service/bare: "
              + ", ".join(f"{k} {v}" for k, v in report["throughput_fraction_of_bare"].items()))
    m = report["server_memory"]
    print(f"server memory: {m['rss_ready_mb']} MB when ready, peak {m['peak_rss_mb']} MB sampled "
          f"({m['peak_rss_after_alias_move_mb']} MB after the alias moved), VmHWM {m['vmhwm_mb']} MB")
    w = report["alias_switch"]
    first = w["seconds_to_first_new_answer"]
    print(f"alias moved to version {w['to_version']}: "
          + (f"first answer from it after {first} s" if first is not None else "no answer from it during the run")
          + f" (poll every {s['poll_s']:g} s); old answers to requests sent after the switch: "
          f"{w['old_answers_to_requests_sent_after_switch']}"
          + ("" if w.get("switched_by_end_of_run") else f"; not serving it after the run: {w.get('problem')}"))
    t = report["targets"]
    print(f"targets: errors zero {t['errors_zero']}; single-text p99 <= {P99_TARGET_MS:g} ms up to "
          f"{t['p99_single_le_50ms_at']} clients; throughput {t['throughput_fraction_of_bare']} of bare")
    if report["pipeline_running_during_benchmark"]:
        print("warning: a pipeline run was in progress; these figures are slower than on a quiet machine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models/moderation/release", help="release folder to serve")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients in the main run")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the main run (both phases)")
    ap.add_argument("--out", type=Path, default=ROOT / "reports/service_benchmark.json", help="result JSON")
    ap.add_argument("--threads", type=int, default=None, help="serve --threads (default: this machine's cores)")
    ap.add_argument("--batch-wait-ms", type=float, default=5.0, help="serve --batch-wait-ms")
    ap.add_argument("--max-batch-items", type=int, default=64, help="serve --max-batch-items")
    ap.add_argument("--max-scored-items", type=int, default=256, help="serve --max-scored-items")
    ap.add_argument("--max-text-chars", type=int, default=10_000, help="serve's default; longer texts are left out")
    ap.add_argument("--poll-s", type=float, default=2.0, help="serve --poll-s")
    ap.add_argument("--batch-size", type=int, default=32, help="texts per request in the batch phase")
    ap.add_argument("--single-fraction", type=float, default=0.5, help="share of --seconds spent on single texts")
    ap.add_argument("--move-at", type=float, default=None, help="seconds into the run to move champion "
                                                                "(default: the middle)")
    ap.add_argument("--sweep", type=int, nargs="*", default=[1, 2, 4, 8, 16, 50],
                    help="client counts for the single-text p99 sweep (none: no sweep)")
    ap.add_argument("--sweep-seconds", type=float, default=5.0, help="length of each sweep level")
    ap.add_argument("--test", type=Path, default=ROOT / "data/splits/test.jsonl", help="texts (JSONL split)")
    ap.add_argument("--seed", type=int, default=13, help="order of the sampled texts")
    ap.add_argument("--request-timeout", type=float, default=120.0, help="client timeout per request (seconds)")
    ap.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for the server's /ready")
    ap.add_argument("--load-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.load_worker:
        load_worker(args.load_worker)
        return
    if not (args.model / "classifier.json").exists() or not (args.model / "thresholds.json").exists():
        sys.exit(f"{args.model}: not a release folder (classifier.json and thresholds.json); run the pipeline "
                 "(content-moderation run) or pass --model")
    if args.batch_size > args.max_batch_items:
        sys.exit(f"--batch-size {args.batch_size} is over --max-batch-items {args.max_batch_items}: "
                 "the service would refuse every batch request")
    if args.clients < 1 or args.seconds <= 0 or not 0 < args.single_fraction < 1:
        sys.exit("--clients must be at least 1, --seconds above 0 and --single-fraction between 0 and 1")
    args.model = args.model.resolve()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below on `kill` too
    tmp = Path(tempfile.mkdtemp(prefix="service-benchmark-"))
    procs: list[subprocess.Popen] = []
    try:
        report = benchmark(args, tmp, procs)
    except KeyboardInterrupt:
        sys.exit("interrupted: the server and the clients are stopped, the temporary registry removed")
    except Exception as exc:
        if log := _tail(tmp / "server.log"):
            print(f"the server's log (last lines):\n{log}", file=sys.stderr)
        if isinstance(exc, BenchmarkError):
            sys.exit(f"error: {exc}")
        raise
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    from components.core.contract import write_json

    write_json(args.out, report)
    print_report(report)
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
