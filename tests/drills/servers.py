"""The stores failing under the register step: the tracking server down, the SQLite database locked,
the object store down, the Prefect server restarted during a deployment run.

Each case ends in a clear error or a retry that succeeds, keeps what evaluate wrote, and records
nothing twice: after the store is back, a rerun leaves exactly one finished MLflow run and one model
version per registration, the lineage versions consecutive (a failed attempt consumes none), and no
run left RUNNING or FAILED among the active ones.

Light form (``make test``, about a minute): the register step as the flow calls it
(``flows.stages.register``) on a prepared evaluation (the gate's real verdict, reports, a release
folder with a few MB of plots to upload):

- (a) a real ``mlflow server`` (SQLite backend, artifacts proxied to a folder): down when register runs
  (its address answers nothing), then stopped while register is logging (its run already RUNNING);
  each time the step fails naming the server and the outputs are byte-identical; the server up on that
  address again, a rerun registers;
- (b) the embedded SQLite store (the checkout's ``mlflow.db``) locked by another connection
  (``BEGIN EXCLUSIVE``): for 5 s from before register starts, and for 25 s from the moment register's
  run exists (longer than one attempt's 20 s busy timeout, so a store call fails and is retried):
  the retries succeed.

Full form (``benchmarks/reliability.py``; also ``pytest -m servers tests/drills``): the servers of
deploy/local.py (PostgreSQL, moto's S3 server, ``mlflow server``, ``prefect server start``, a process
worker) and the tiny pipeline through ``content-moderation run``:

- (a) the tracking server stopped after evaluate, before register, and again in the middle of
  register's logging; restarted on its port, a rerun does register and report only;
- (b) as in the light form (the SQLite store is the checkout's own: there is no server to it), and a
  lock from the middle of register's logging until its retries give up (about 100 s: 4 attempts of
  20 s busy timeout): a clear error saying the database is locked; after the lock, a rerun registers;
- (c) the S3 server stopped before register logs its artifacts (the tracking server and PostgreSQL up):
  the error names the artifact store behind the server (the server itself answers), no version is
  registered, the failed run is deleted by the rerun once S3 is back;
- (d) the Prefect server stopped and restarted on its port (same PostgreSQL database) while a
  deployment run of train-flow is running evaluate in the process worker; then another deployment run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import yaml

from deploy.local import Server, base_env, free_port, launch
from tests.drills import pipeline_runs
from tests.project import BIN, make_project, set_params, sh

CLI = str(BIN / "content-moderation")
MODEL = "content-moderation"
EXPERIMENT = "content-moderation"
PASS_GATE = {"evaluate.f1_floor": 0.0, "evaluate.real_roc_auc_floor": 0.0, "evaluate.behaviour_floor": 0.0,
             "evaluate.real_min_support": 2}
GIT_ID = {"GIT_AUTHOR_NAME": "drill", "GIT_AUTHOR_EMAIL": "drill@example.invalid",
          "GIT_COMMITTER_NAME": "drill", "GIT_COMMITTER_EMAIL": "drill@example.invalid"}


# ------------------------------------------------------------------------------------------------
# what the store holds, what is on disk


def store_state(uri: str) -> dict:
    """Pipeline runs (every lifecycle stage), model versions and champion in the store at ``uri``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = pipeline_runs(client, EXPERIMENT)
    try:
        versions = [{"version": str(v.version), "run_id": v.run_id}
                    for v in client.search_model_versions(f"name = '{MODEL}'")]
    except MlflowException:
        versions = []
    try:
        champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    except MlflowException:
        champion = None
    return {"runs": runs, "versions": sorted(versions, key=lambda v: int(v["version"])), "champion": champion}


def recorded_once(state: dict, registrations: int) -> dict:
    """Whether ``registrations`` completed registrations left exactly that many finished runs and versions."""
    active = [r for r in state["runs"] if r["stage"] == "active"]
    finished = [r for r in active if r["status"] == "FINISHED"]
    lineage = sorted(int(r["lineage"][1:]) for r in active if r["lineage"])
    run_ids = [v["run_id"] for v in state["versions"]]
    facts = {
        "versions": len(state["versions"]),
        "active_runs": len(active),
        "finished_runs": len(finished),
        "runs_left_unfinished": [r["status"] for r in active if r["status"] != "FINISHED"],
        "deleted_runs": sum(1 for r in state["runs"] if r["stage"] == "deleted"),
        "lineage": [f"v{n}" for n in lineage],
    }
    facts["once"] = (facts["versions"] == registrations and len(finished) == registrations == len(active)
                     and len(set(run_ids)) == len(run_ids) and set(run_ids) == {r["run_id"] for r in finished}
                     and lineage == list(range(17, 17 + registrations)))
    return facts


def digest(*folders: Path, skip: tuple[str, ...] = ("registry.json",)) -> str:
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in skip):
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# the register step in this process, on a prepared evaluation


def prepared(root: Path, macro_f1: float = 0.9, champion: dict | None = None, plots_mb: int = 6) -> Path:
    """A checkout's params and what evaluate and benchmark-env leave: reports/metrics.json (a real gate
    verdict), reports/plots (``plots_mb`` MB of files to upload), the release folder's manifest and
    thresholds. The release is not a model, so ``track.log_model`` is off."""
    from components.core.contract import write_json
    from tests.components.tracking.support import make_report
    from tests.conftest import ROOT

    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    set_params(root, **{"track.log_model": False})
    reports, release = root / "reports", root / "models/moderation/release"
    (reports / "plots").mkdir(parents=True, exist_ok=True)
    release.mkdir(parents=True, exist_ok=True)
    write_json(reports / "metrics.json", make_report(macro_f1=macro_f1, champion=champion))
    write_json(reports / "train.json", {"profile": "cpu", "seconds": 3.0})
    write_json(reports / "benchmark_env.json", {"scores": {"classifier": {"triage": 0.7}}})
    for i in range(plots_mb):
        (reports / "plots" / f"curve_{i}.png").write_bytes(os.urandom(1 << 20))
    write_json(release / "manifest.json", {"served_variant": "int8"})
    write_json(release / "thresholds.json", {})
    return root


def register_step(root: Path, uri: str) -> dict:
    """``flows.stages.register`` (what train-flow's register task and `dvc repro` run) against ``uri``."""
    from components.core.params import load_params
    from flows import stages

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        return stages.register(root, load_params(root / "params.yaml"))
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def attempt(fn) -> tuple[dict | None, str | None, float]:
    """``fn()``'s result or its error's message, and the seconds it took."""
    t0 = time.monotonic()
    try:
        return fn(), None, round(time.monotonic() - t0, 1)
    except Exception as exc:  # the step's error is what the drill looks at
        return None, f"{type(exc).__name__}: {exc}", round(time.monotonic() - t0, 1)


class WhenRunning(threading.Thread):
    """Calls ``action()`` once the store holds a RUNNING pipeline run (``count()`` > 0), polling every 50 ms."""

    def __init__(self, count, action, timeout: float = 600):
        super().__init__(daemon=True)
        self.count, self.action, self.timeout = count, action, timeout
        self.fired_after: float | None = None
        self.stop_polling = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop_polling.is_set() and time.monotonic() - t0 < self.timeout:
            with contextlib.suppress(Exception):
                if self.count() > 0:
                    self.fired_after = round(time.monotonic() - t0, 2)
                    self.action()
                    return
            time.sleep(0.05)


RUNNING_SQL = ("SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'lineage.historical' "
               "AND t.value = 'false' WHERE r.status = 'RUNNING' AND r.lifecycle_stage = 'active'")


def sqlite_running(db: Path):
    def count() -> int:
        with contextlib.closing(sqlite3.connect(str(db), timeout=0.2)) as conn:
            return conn.execute(RUNNING_SQL).fetchone()[0]
    return count


def postgres_running(url: str):
    import psycopg

    def count() -> int:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute(RUNNING_SQL).fetchone()[0]
    return count


class ExclusiveLock:
    """Another connection holding SQLite's exclusive lock on ``db`` (no reader, no writer gets in)."""

    def __init__(self, db: Path):
        self.conn = sqlite3.connect(str(db), timeout=30, isolation_level=None, check_same_thread=False)
        self.held_s = 0.0
        self._t0: float | None = None

    def take(self) -> None:
        self.conn.execute("BEGIN EXCLUSIVE")
        self._t0 = time.monotonic()

    def release(self) -> None:
        if self._t0 is not None:
            self.conn.execute("ROLLBACK")
            self.held_s = round(time.monotonic() - self._t0, 1)
            self._t0 = None

    def close(self) -> None:
        self.release()
        self.conn.close()


def create_tables(uri: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()


# ------------------------------------------------------------------------------------------------
# (a) light: a real `mlflow server` on SQLite, stopped before register and during it


def start_sqlite_mlflow(workdir: Path, port: int | None = None) -> Server:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
           "--artifacts-destination", str(workdir / "server-artifacts")]
    return launch("mlflow", cmd, url, workdir, base_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                  lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, timeout=120)


def tracking_down_light(workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out: dict = {"server": "mlflow server, SQLite backend, artifacts proxied to a folder"}
    server = None
    try:
        # before: the server is down (not started yet) when register runs; then it comes up on that address
        root = prepared(workdir / "checkout")
        before = digest(root / "reports", root / "models")
        _, error, seconds = attempt(lambda: register_step(root, url))
        kept = digest(root / "reports", root / "models") == before and not (root / "reports/registry.json").exists()
        server = start_sqlite_mlflow(workdir, port)
        starts = [server.startup_s]
        result, error2, rerun_s = attempt(lambda: register_step(root, url))
        out["down_before_register"] = {
            "error": error, "failed_after_s": seconds, "clear": _names_the_server(error, url),
            "outputs_kept": kept, "rerun_error": error2, "rerun_s": rerun_s,
            "rerun_version": result and result["version"], **recorded_once(store_state(url), 1)}

        # during: stopped while register logs its run (the run exists, RUNNING); restarted on the same port
        champ = store_state(url)["champion"]
        root = prepared(root, macro_f1=0.91, champion=None if champ is None else {"version": champ, "macro_f1": 0.9})
        before = digest(root / "reports", root / "models")
        watcher = WhenRunning(sqlite_running(workdir / "server.db"), server.stop)
        watcher.start()
        _, error, seconds = attempt(lambda: register_step(root, url))
        watcher.stop_polling.set()
        watcher.join(timeout=60)
        server.stop()
        kept = digest(root / "reports", root / "models") == before
        server = start_sqlite_mlflow(workdir, port)
        starts.append(server.startup_s)
        left = _left(store_state(url))
        result, error2, rerun_s = attempt(lambda: register_step(root, url))
        out["stopped_during_register"] = {
            "stopped_after_run_existed_s": watcher.fired_after, "error": error, "failed_after_s": seconds,
            "clear": _names_the_server(error, url), "outputs_kept": kept, "left_by_the_failure": left,
            "rerun_error": error2, "rerun_s": rerun_s, "rerun_version": result and result["version"],
            **recorded_once(store_state(url), 2)}
        out["server_start_s"] = starts
    finally:
        if server is not None:
            server.stop()
    a, b = out["down_before_register"], out["stopped_during_register"]
    out["passed"] = bool(
        a["error"] and a["clear"] and a["outputs_kept"] and a["rerun_error"] is None and a["once"]
        and b["stopped_after_run_existed_s"] is not None and b["error"] and b["clear"] and b["outputs_kept"]
        and b["rerun_error"] is None and b["once"])
    return out


def _names_the_server(error: str | None, url: str) -> bool:
    return bool(error) and "TrackingError" in error and url in error and "mlflow server" in error \
        and "kept on disk" in error


# ------------------------------------------------------------------------------------------------
# (b) the embedded SQLite store locked


def sqlite_locked(workdir: Path, light: bool) -> dict:
    """The checkout's SQLite store locked by another connection: before register (5 s), in the middle of
    its logging for 25 s (longer than one attempt's 20 s busy timeout, MLflow's), and (full form) in the
    middle until the retries give up."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = prepared(workdir / "checkout")
    db = root / "mlflow.db"
    uri = f"sqlite:///{db}"
    create_tables(uri)
    out: dict = {"store": "the checkout's SQLite mlflow.db (rollback journal)"}
    registrations = 0

    def locked(name: str, when: str, hold_s: float | None) -> dict:
        """Register a new evaluation with ``db`` locked ``when`` ("before" or "during") for ``hold_s`` (None:
        until register gives up); after a failure, a rerun once the lock is gone."""
        nonlocal registrations
        champ = store_state(uri)["champion"]
        prepared(root, macro_f1=0.9 + registrations / 100,
                 champion=None if champ is None else {"version": champ, "macro_f1": 0.9})
        before = digest(root / "reports", root / "models")
        lock = ExclusiveLock(db)
        watcher = None
        if when == "before":
            lock.take()
        else:
            watcher = WhenRunning(sqlite_running(db), lock.take)
            watcher.start()
        timer = None
        if hold_s is not None:
            def release_later():
                if watcher is not None:
                    watcher.join(timeout=120)
                time.sleep(hold_s)
                lock.release()
            timer = threading.Thread(target=release_later, daemon=True)
            timer.start()
        result, error, seconds = attempt(lambda: register_step(root, uri))
        if watcher is not None:
            watcher.stop_polling.set()
        if timer is not None:
            timer.join(timeout=120)
        lock.close()
        registrations += 1
        facts = {"held_s": lock.held_s, "locked_after_run_existed_s": watcher and watcher.fired_after,
                 "error": error, "took_s": seconds, "outputs_kept": digest(root / "reports", root / "models") == before}
        if error:
            facts["clear"] = ("TrackingError" in error and "database is locked" in error
                              and "stop the other process" in error and "kept on disk" in error)
            facts["left_by_the_failure"] = _left(store_state(uri))
            result, error2, rerun_s = attempt(lambda: register_step(root, uri))
            facts.update({"rerun_error": error2, "rerun_s": rerun_s})
        facts["version"] = result and result["version"]
        facts.update(recorded_once(store_state(uri), registrations))
        out[name] = facts
        return facts

    a = locked("locked_before_register_5s", "before", 5.0)
    b = locked("locked_during_register_25s", "during", 25.0)
    ok = (a["error"] is None and a["held_s"] >= 4.5 and a["once"]
          and b["error"] is None and b["locked_after_run_existed_s"] is not None and b["held_s"] >= 24.5 and b["once"])
    if not light:
        c = locked("locked_during_register_until_it_gives_up", "during", None)
        ok = ok and bool(c["error"] and c["clear"] and c["locked_after_run_existed_s"] is not None
                         and c["outputs_kept"] and c["rerun_error"] is None and c["once"])
    out["passed"] = bool(ok)
    return out


# ------------------------------------------------------------------------------------------------
# the full form: the team's servers and the tiny pipeline through the CLI


def restart(start, port: int, *args, **kwargs) -> Server:
    """``start(*args)`` of deploy.local again, on ``port`` (the address the checkout and the worker know)."""
    return start(*args, port=port, **kwargs)


def port_of(server: Server) -> int:
    return int(server.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def cli(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=1200)


def steps_ran(output: str) -> dict[str, str]:
    import re

    return {m["step"]: m["state"] for m in re.finditer(
        r"prefect\.flow_runs: (?P<step>[a-z][a-z-]*): (?P<state>[A-Za-z]+) \(", output)}


def stale_steps(repo: Path, env: dict) -> list[str]:
    rows = json.loads(cli(repo, env, "status", "--json").stdout)
    return [r["stage"] for r in rows if not r["up_to_date"]]


def full(workdir: Path) -> dict:
    from deploy.local import Topology, start_mlflow, start_prefect, start_s3

    cases: dict = {}
    t0 = time.monotonic()
    with Topology(workdir / "servers") as top:
        cases["startup_s"] = top.startup_seconds()
        env = base_env(**top.settings(), **GIT_ID)
        uri = top.settings()["MLFLOW_TRACKING_URI"]
        pg_mlflow = f"{top.servers['postgres'].url}/mlflow"
        repo = make_project(workdir / "project", **PASS_GATE)
        spec = yaml.safe_load((repo / "prefect.yaml").read_text())
        for dep in spec["deployments"]:
            dep["schedules"] = []  # only the drill's own runs
        (repo / "prefect.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        t = time.monotonic()
        first = cli(repo, env, "run", "--to", "benchmark-env")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        cases["pipeline_to_benchmark_env_s"] = round(time.monotonic() - t, 1)

        # (a) the tracking server stopped before register, then during it
        a: dict = {}
        mlflow_port = port_of(top.servers["mlflow"])
        before = digest(repo / "reports", repo / "models/moderation/release")
        top.servers["mlflow"].stop()
        t = time.monotonic()
        down = cli(repo, env, "run")
        a["stopped_before_register"] = {
            "rc": down.returncode, "failed_after_s": round(time.monotonic() - t, 1),
            "clear": down.returncode == 1 and uri in down.stderr and "mlflow server" in down.stderr
                     and "kept on disk" in down.stderr,
            "error": _error_line(down.stderr), "outputs_kept": digest(repo / "reports", repo / "models/moderation/release") == before,
            "stale_after": stale_steps(repo, {**env, "MLFLOW_TRACKING_URI": uri})}
        top.servers["mlflow"] = restart(start_mlflow, mlflow_port, top.workdir, pg_mlflow, top.servers["s3"].url)
        t = time.monotonic()
        back = cli(repo, env, "run")
        a["stopped_before_register"].update({
            "restart_s": top.servers["mlflow"].startup_s, "rerun_rc": back.returncode,
            "rerun_s": round(time.monotonic() - t, 1),
            "rerun_ran": [s for s, st in steps_ran(back.stdout + back.stderr).items() if st != "Cached"],
            **recorded_once(store_state(uri), 1)})

        set_params(repo, **{"evaluate.batch_size": 16})  # a new evaluation to register
        again = cli(repo, env, "run", "--to", "benchmark-env")
        assert again.returncode == 0, again.stderr[-3000:]
        before = digest(repo / "reports", repo / "models/moderation/release")
        server = top.servers["mlflow"]
        watcher = WhenRunning(postgres_running(pg_mlflow), server.stop)
        watcher.start()
        t = time.monotonic()
        down = cli(repo, env, "run")
        watcher.stop_polling.set()
        watcher.join(timeout=60)
        if server.proc.poll() is None:
            server.stop()
        a["stopped_during_register"] = {
            "stopped_after_run_existed_s": watcher.fired_after, "rc": down.returncode,
            "failed_after_s": round(time.monotonic() - t, 1),
            "clear": down.returncode == 1 and uri in down.stderr and "kept on disk" in down.stderr,
            "error": _error_line(down.stderr),
            "outputs_kept": digest(repo / "reports", repo / "models/moderation/release") == before}
        top.servers["mlflow"] = restart(start_mlflow, mlflow_port, top.workdir, pg_mlflow, top.servers["s3"].url)
        a["stopped_during_register"]["left_by_the_failure"] = _left(store_state(uri))
        back = cli(repo, env, "run")
        a["stopped_during_register"].update({
            "rerun_rc": back.returncode,
            "rerun_ran": [s for s, st in steps_ran(back.stdout + back.stderr).items() if st != "Cached"],
            **recorded_once(store_state(uri), 2)})
        sa, sd = a["stopped_before_register"], a["stopped_during_register"]
        a["passed"] = bool(sa["clear"] and sa["outputs_kept"] and sa["stale_after"] == ["register", "report"]
                           and sa["rerun_rc"] == 0 and sa["rerun_ran"] == ["register", "report"] and sa["once"]
                           and sd["stopped_after_run_existed_s"] is not None and sd["clear"] and sd["outputs_kept"]
                           and sd["rerun_rc"] == 0 and sd["rerun_ran"] == ["register", "report"] and sd["once"])
        cases["tracking_server_down"] = a

        # (c) the object store down when register logs its artifacts
        c: dict = {}
        set_params(repo, **{"evaluate.batch_size": 8})
        again = cli(repo, env, "run", "--to", "benchmark-env")
        assert again.returncode == 0, again.stderr[-3000:]
        before = digest(repo / "reports", repo / "models/moderation/release")
        s3_port = port_of(top.servers["s3"])
        top.servers["s3"].stop()
        t = time.monotonic()
        down = cli(repo, env, "run")
        c.update({"rc": down.returncode, "failed_after_s": round(time.monotonic() - t, 1),
                  "error": _error_line(down.stderr),
                  # the tracking server is up: the error names the store behind it, not a server to start
                  "clear": down.returncode == 1 and f"tracking server {uri} answers" in down.stderr
                           and "its artifact store" in down.stderr and "start the tracking server" not in down.stderr
                           and "kept on disk" in down.stderr,
                  "outputs_kept": digest(repo / "reports", repo / "models/moderation/release") == before,
                  "left_by_the_failure": _left(store_state(uri))})
        # moto keeps its objects in memory: the restarted server is empty and gets the bucket again
        top.servers["s3"] = restart(start_s3, s3_port, top.workdir, top.bucket)
        c["restart_s"] = top.servers["s3"].startup_s
        back = cli(repo, env, "run")
        c.update({"rerun_rc": back.returncode,
                  "rerun_ran": [s for s, st in steps_ran(back.stdout + back.stderr).items() if st != "Cached"],
                  **recorded_once(store_state(uri), 3)})
        c["passed"] = bool(c["rc"] == 1 and c["clear"] and c["outputs_kept"]
                           and c["left_by_the_failure"]["versions"] == 2 and c["rerun_rc"] == 0 and c["once"])
        cases["object_store_down"] = c

        # (d) the Prefect server restarted during a deployment run through the process worker
        cases["prefect_restarted"] = _prefect_restart(repo, env, top, start_prefect, uri)
    cases["stop_s"] = top.stop_seconds
    cases["seconds"] = round(time.monotonic() - t0, 1)
    return cases


def _prefect_restart(repo: Path, env: dict, top, start_prefect, uri: str) -> dict:
    d: dict = {}
    api = top.servers["prefect"].url
    prefect_port = port_of(top.servers["prefect"])
    sh(repo, str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "nightly", env=env)
    set_params(repo, **{"evaluate.batch_size": 24})  # evaluate, benchmark-env, register and report to run
    versions_before = len(store_state(uri)["versions"])

    def flow_run(run_id: str) -> dict:
        return httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()

    def trigger() -> str:
        out = sh(repo, str(BIN / "prefect"), "deployment", "run", "train-flow/nightly", env=env)
        import re

        return re.search(r"UUID: ([0-9a-f-]{36})", out)[1]

    def evaluate_running(run_id: str) -> bool:
        tasks = httpx.post(f"{api}/task_runs/filter", timeout=10, json={
            "flow_runs": {"id": {"any_": [run_id]}}, "task_runs": {"name": {"any_": ["evaluate"]}}}).json()
        return any(t["state_type"] == "RUNNING" for t in tasks)

    def wait_final(run_id: str, timeout: float = 900) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                run = flow_run(run_id)
                if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    return run
            time.sleep(2)
        raise TimeoutError(f"flow run {run_id} did not end in {timeout} s")

    run_id = trigger()
    t0 = time.monotonic()
    while not evaluate_running(run_id):
        if time.monotonic() - t0 > 600 or flow_run(run_id)["state_type"] in ("COMPLETED", "FAILED", "CRASHED"):
            raise AssertionError(f"the deployment run never reached evaluate: {flow_run(run_id)['state']}")
        time.sleep(1)
    d["restarted_after_s"] = round(time.monotonic() - t0, 1)
    top.servers["prefect"].stop()
    t = time.monotonic()
    top.servers["prefect"] = restart(start_prefect, prefect_port, top.workdir, f"{top.servers['postgres'].url}/prefect")
    d["down_s"] = round(time.monotonic() - t, 1)
    run = wait_final(run_id)
    d["first_run"] = {"state": run["state_name"], "message": (run["state"] or {}).get("message"),
                      "seconds": round(run["total_run_time"], 1)}
    d["after_first"] = recorded_once(store_state(uri), 4) | {"stale": stale_steps(repo, env)}
    run2 = wait_final(trigger())
    d["rerun"] = {"state": run2["state_name"], "seconds": round(run2["total_run_time"], 1)}
    state = store_state(uri)
    d["after_rerun"] = recorded_once(state, 4) | {"stale": stale_steps(repo, env)}
    d["new_versions"] = len(state["versions"]) - versions_before
    d["passed"] = bool(d["first_run"]["state"] in ("Completed", "Crashed", "Failed") and d["rerun"]["state"] == "Completed"
                       and d["new_versions"] == 1 and d["after_rerun"]["once"] and d["after_rerun"]["stale"] == [])
    return d


def _left(state: dict) -> dict:
    return {"active_runs": sum(1 for r in state["runs"] if r["stage"] == "active"),
            "statuses": [r["status"] for r in state["runs"] if r["stage"] == "active"],
            "versions": len(state["versions"])}


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "error" in line.lower()]
    return (lines[-1] if lines else stderr.strip().splitlines()[-1] if stderr.strip() else "")[:600]


# ------------------------------------------------------------------------------------------------


def run(workdir: Path, light: bool) -> dict:
    workdir = Path(workdir)
    t0 = time.monotonic()
    cases: dict = {}
    t = time.monotonic()
    if light:
        cases["tracking_server_down"] = tracking_down_light(workdir / "a")
        cases["tracking_server_down"]["seconds"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    cases["sqlite_locked"] = sqlite_locked(workdir / "b", light)
    cases["sqlite_locked"]["seconds"] = round(time.monotonic() - t, 1)
    if not light:
        cases.update(full(workdir / "full"))
    names = [n for n in ("tracking_server_down", "sqlite_locked", "object_store_down", "prefect_restarted")
             if n in cases]
    failed = [n for n in names if not cases[n]["passed"]]
    return {
        "injected": ("light: a real `mlflow server` (SQLite) down before register and stopped during it; the SQLite "
                     "store exclusively locked before (5 s) and during (25 s) register" if light else
                     "the tracking server stopped before and during register, the SQLite store locked, the S3 "
                     "server stopped before artifact logging, the Prefect server restarted during a deployment run"),
        "happened": "; ".join(f"{n}: {'ok' if cases[n]['passed'] else 'FAILED'}" for n in names),
        "lost": "nothing" if not failed else f"cases failing their checks: {failed} (see their figures)",
        "passed": not failed,
        "cases": cases,
        "seconds": round(time.monotonic() - t0, 1),
    }
