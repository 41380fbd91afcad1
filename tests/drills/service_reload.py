"""Drill: the moderation service under load while the champion alias moves, and is rolled back.

Injected: ``content-moderation serve --model models:/<name>@champion`` in its own process (started by
benchmarks/service.py's ``start_server``) on a throwaway SQLite registry holding two versions of a tiny
model that differ visibly: version 1 flags every text as spam, version 2 as threats (release
folders by tests/components/serving/support.py's ``release``). N clients (threads, httpx) send
requests of 1-3 texts back to back for S seconds; a third of the way in ``tracking.promote`` makes
version 2 champion, two thirds in (once every client has had an answer from version 2)
``tracking.rollback`` moves it back to version 1. Full form 16 clients x 30 s; light form 4 x 6 s.

Checked: no request failed; each client saw versions 1, then 2, then 1 again, never going back
otherwise; no answer came from version 2 before the promotion or from version 1 between the first
answer of version 2 and the rollback, and none from version 2 to a request sent after the first
answer of version 1 following the rollback; every answer's flags are those of the version it names
(one model answered the whole request); the service says version 1 and counts two swaps at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

TEXTS = ["see you at the market on saturday", "I know where you live", "the soup was cold again",
         "dm me for cheap followers", "lovely weather for the picnic", "thanks for the quick reply"]
FLAG = {"1": "spam", "2": "threats"}
WHO = "tests/drills/service_reload.py"


def _releases(workdir: Path) -> dict[str, Path]:
    from tests.components.serving.support import release
    from tests.drills.disk_full import tiny_export

    onnx = tiny_export(workdir / "model", variants=("fp32", "int8"))
    return {v: release(onnx, workdir / f"release-{v}", flag) for v, flag in FLAG.items()}


def _register(uri: str, artifacts: str, releases: dict[str, Path], name: str) -> list[str]:
    from components import tracking
    from components.serving.mlflow_model import log_release_model

    versions = []
    for v, folder in releases.items():
        run_id = tracking.log_pipeline_run(uri, name, params={}, report={}, model_dir=folder,
                                           model_logger=log_release_model, tags={"drill": "service_reload"},
                                           run_name=f"{name}-{v}", artifact_location=artifacts)
        versions.append(tracking.register_version(uri, run_id, name))
    assert versions == list(releases), versions
    tracking.promote(uri, "1", WHO, "the drill's starting champion", name)
    return versions


class Client(threading.Thread):
    """Requests back to back until ``stop``; each answer: (sent, answered, version) or an error."""

    def __init__(self, n: int, url: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.n, self.url, self.stop = n, url, stop
        self.answers: list[tuple[float, float, str]] = []
        self.errors: list[str] = []
        self.wrong_flags: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            i = 0
            while not self.stop.is_set():
                texts = [f"{TEXTS[(self.n + i + k) % len(TEXTS)]} ({self.n}-{i}-{k})" for k in range(1 + i % 3)]
                i += 1
                sent = time.time()
                try:
                    r = http.post("/v1/moderate", json={"items": texts})
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                answered = time.time()
                if r.status_code != 200:
                    self.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                    continue
                body = r.json()
                version = str(body["model"]["version"])
                flags = {f["category"] for res in body["results"] for f in res["flags"]}
                if len(body["results"]) != len(texts) or flags != {FLAG.get(version)} \
                        or r.headers.get("x-model-version") != version:
                    self.wrong_flags.append(f"version {version}: flags {sorted(flags)}")
                self.answers.append((sent, answered, version))

    def runs(self) -> list[str]:
        """The versions this client saw, consecutive repeats folded: ['1', '2', '1'] when all went well."""
        out: list[str] = []
        for _, _, v in self.answers:
            if not out or out[-1] != v:
                out.append(v)
        return out


def _wait_all_seen(clients: list[Client], version: str, since: float, timeout: float) -> float | None:
    """Seconds until every client has had an answer from ``version`` to a request sent after ``since``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(any(v == version and s >= since for s, _, v in c.answers[-50:]) for c in clients):
            return time.time() - since
        time.sleep(0.05)
    return None


def run(workdir: Path, light: bool) -> dict:
    from benchmarks.service import MODEL_NAME, start_server, stop_process, wait_ready
    from deploy.local import free_port
    from components import tracking

    n_clients, seconds = (4, 6.0) if light else (16, 30.0)
    workdir = Path(workdir)
    t0 = time.perf_counter()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}
    os.environ["MLFLOW_TRACKING_URI"] = uri  # the server inherits it: the throwaway registry, never the project's
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    procs: list = []
    try:
        with ExitStack() as stack:
            stack.callback(lambda: [stop_process(p) for p in procs])
            releases = _releases(workdir)
            _register(uri, (workdir / "mlruns").as_uri(), releases, MODEL_NAME)
            setup_s = time.perf_counter() - t0
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            args = argparse.Namespace(poll_s=0.5, batch_wait_ms=5, max_batch_items=64, max_scored_items=256)
            t = time.time()
            server = start_server(args, workdir, port, 1, procs)
            wait_ready(url, server, 180, "1")
            startup_s = time.time() - t

            stop = threading.Event()
            clients = [Client(n, url, stop) for n in range(n_clients)]
            started = time.time()
            for c in clients:
                c.start()
            time.sleep(seconds / 3)
            promoted = time.time()
            tracking.promote(uri, "2", WHO, "the drill moves the alias under load", MODEL_NAME)
            to_new = _wait_all_seen(clients, "2", promoted, 120)
            time.sleep(max(0.0, started + 2 * seconds / 3 - time.time()))
            rolled_back = time.time()
            tracking.rollback(uri, WHO, "the drill rolls back under load", MODEL_NAME)
            to_old = _wait_all_seen(clients, "1", rolled_back, 120)
            time.sleep(max(0.0, started + seconds - time.time()))
            stop.set()
            for c in clients:
                c.join(120)
            ended = time.time()
            ready = httpx.get(f"{url}/ready", timeout=10).json()
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            swaps = re.search(r"^moderation_model_swaps(?:_total)?(?:\{[^}]*\})? ([0-9.e+]+)$", metrics, re.M)
            server_log = (workdir / "server.log").read_text("utf-8", "replace")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    answers = sorted((a for c in clients for a in c.answers), key=lambda a: a[1])
    first_new = next((done for _, done, v in answers if v == "2"), None)
    first_back = next((done for _, done, v in answers if v == "1" and done > rolled_back), None)
    early_new = sum(1 for _, done, v in answers if v == "2" and done < promoted)
    old_after_switch = sum(1 for sent, _, v in answers if v == "1" and first_new and first_new < sent < rolled_back)
    new_after_rollback = sum(1 for sent, _, v in answers if v == "2" and first_back and sent > first_back)
    errors = [e for c in clients for e in c.errors]
    wrong = [w for c in clients for w in c.wrong_flags]
    orders = {c.n: c.runs() for c in clients}
    bad_orders = {n: o for n, o in orders.items() if o != ["1", "2", "1"]}
    swaps_n = float(swaps.group(1)) if swaps else None
    served_version = str((ready.get("model") or {}).get("version"))
    log_errors = [ln for ln in server_log.splitlines() if "Traceback" in ln or "ERROR" in ln]
    requests = len(answers) + len(errors)
    passed = (not errors and not wrong and not bad_orders and not early_new and not old_after_switch
              and not new_after_rollback and served_version == "1" and swaps_n == 2 and to_new is not None
              and to_old is not None and not log_errors)
    return {
        "injected": (f"{n_clients} clients sending requests of 1-3 texts back to back for {seconds:g} s to "
                     "`content-moderation serve` (its own process, alias champion, poll 0.5 s); champion moved "
                     f"from version 1 to 2 at {promoted - started:.1f} s and rolled back to 1 at "
                     f"{rolled_back - started:.1f} s"),
        "happened": (f"{requests} requests, {len(errors)} errors; every client saw versions "
                     f"{'1 -> 2 -> 1' if not bad_orders else 'OUT OF ORDER: ' + str(bad_orders)}; every client "
                     f"had version 2 {to_new:.1f} s after the promotion and version 1 again "
                     f"{to_old:.1f} s after the rollback; {len(wrong)} answers with another version's flags"
                     if to_new is not None and to_old is not None else
                     f"{requests} requests, {len(errors)} errors; the clients did not all see the switch "
                     f"(promotion: {to_new}, rollback: {to_old})"),
        "lost": "nothing" if passed else
                f"{len(errors)} failed requests, {len(wrong)} mixed answers, {len(bad_orders)} clients out of order",
        "passed": passed,
        "clients": n_clients, "planned_seconds": seconds, "seconds": round(ended - started, 1),
        "requests": requests, "errors": len(errors), "error_samples": errors[:5],
        "answers_with_another_version_s_flags": len(wrong), "wrong_samples": wrong[:5],
        "versions_in_order_per_client": orders,
        "answers_per_version": {v: sum(1 for a in answers if a[2] == v) for v in FLAG},
        "seconds_to_all_clients_on_2_after_promotion": round(to_new, 2) if to_new is not None else None,
        "seconds_to_all_clients_on_1_after_rollback": round(to_old, 2) if to_old is not None else None,
        "seconds_to_first_answer_of_2": round(first_new - promoted, 2) if first_new else None,
        "seconds_to_first_answer_of_1_after_rollback": round(first_back - rolled_back, 2) if first_back else None,
        "answers_of_2_before_promotion": early_new,
        "answers_of_1_to_requests_sent_after_the_switch": old_after_switch,
        "answers_of_2_to_requests_sent_after_the_rollback_switch": new_after_rollback,
        "served_at_end": served_version, "model_swaps": swaps_n, "server_log_errors": log_errors[:5],
        "requests_per_s": round(requests / (ended - started), 1),
        "setup_seconds": round(setup_s, 1), "server_startup_seconds": round(startup_s, 1),
        "drill_seconds": round(time.perf_counter() - t0, 1),
    }
