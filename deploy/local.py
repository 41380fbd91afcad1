"""The production topology on 127.0.0.1, without docker: what the server-backed tests and `make drills` start.

    PostgreSQL 15 (Debian's server binaries)   one throwaway cluster, databases ``mlflow`` and ``prefect``
    moto's S3 server (``moto_server``)          bucket ``content-moderation``: MLflow artifacts under
                                                ``mlflow/``, the DVC remote under ``dvc/``
    ``mlflow server``                           backend ``postgresql+psycopg://…/mlflow``, artifacts proxied
                                                to ``s3://content-moderation/mlflow``
    ``prefect server start``                    database ``postgresql+asyncpg://…/prefect``
    ``prefect worker start --type process``     polls the work pool ``content-moderation``

The same five services as ``deploy/docker-compose.yml`` (MinIO there, moto here). From Python::

    with Topology(workdir) as top:                # each server stopped, in reverse order, when the block ends
        env = {**os.environ, **top.settings()}    # MLFLOW_TRACKING_URI, PREFECT_API_URL, AWS_*, …

From a shell: ``python -m deploy.local`` starts them all, prints the settings to export and runs until
Ctrl-C. Every start waits for its server to answer (``timeout`` seconds) and raises :class:`ServerError`
with the end of the server's log when it does not; a missing binary is named with how to install it.
As root, PostgreSQL (which refuses to run as root) runs as the ``postgres`` user (else ``nobody``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
BUCKET = "content-moderation"
POOL = "content-moderation"
WORKER = "local-worker"
# moto accepts any credentials; these are the values its documentation uses.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}
_PG_DIRS = [os.environ.get("PG_BIN", ""), "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin"]
_PG_HINT = ("install Debian's PostgreSQL server (`apt-get install postgresql-15`) or set PG_BIN to the folder "
            "holding initdb and postgres")
# What a checkout's own environment may carry that must not leak into a server or a worker.
_STRIPPED = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "PREFECT_HOME",
             "PREFECT_API_DATABASE_CONNECTION_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
             "AWS_PROFILE", "AWS_SESSION_TOKEN")


class ServerError(RuntimeError):
    """A server could not be started: its binary is missing, it exited, or it did not answer in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str, dirs: list[str | Path], hint: str) -> Path:
    """``name`` in the first of ``dirs`` that has it, else on PATH; :class:`ServerError` saying ``hint`` if none."""
    for folder in dirs:
        if folder and (Path(folder) / name).is_file():
            return Path(folder) / name
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ServerError(f"{name} not found (looked in {', '.join(str(d) for d in dirs if d)} and PATH): {hint}")


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without the store settings of a checkout, the venv first on PATH, analytics off."""
    env = {k: v for k, v in os.environ.items() if k not in _STRIPPED}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
                "DVC_NO_ANALYTICS": "1"})
    env.update(extra)
    return env


@dataclass
class Server:
    """One started server: its process (leader of its own process group), address and log file."""

    name: str
    url: str
    proc: subprocess.Popen
    log: Path
    stop_signal: int = signal.SIGTERM
    startup_s: float = 0.0
    cleanup: list[Path] = field(default_factory=list)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the process group to stop (``stop_signal``), SIGKILL it after ``timeout`` s, remove ``cleanup``."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, self.stop_signal)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # children left behind by a leader that exited first
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)


def launch(name: str, cmd: list[str], url: str, workdir: Path, env: dict[str, str], ready: Callable[[], bool],
           timeout: float, stop_signal: int = signal.SIGTERM, user: str | None = None,
           cleanup: list[Path] | None = None) -> Server:
    """Start ``cmd`` (log in ``workdir/<name>.log``) and wait until ``ready()`` is true.

    ``ready`` may raise while the server is not up yet. Raises :class:`ServerError` (with the log's
    last lines) if the process exits first or ``timeout`` seconds pass; the process is stopped then.
    """
    log = workdir / f"{name}.log"
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=workdir, start_new_session=True, user=user)
    server = Server(name, url, proc, log, stop_signal, cleanup=list(cleanup or []))
    last: object = None
    while True:
        if proc.poll() is not None:
            server.stop()
            raise ServerError(f"{name} exited with code {proc.returncode} before it answered; {log}:\n"
                              f"{server.log_tail()}")
        try:
            if ready():
                break
        except Exception as exc:  # not up yet: connection refused, 503, …
            last = exc
        if time.monotonic() - t0 > timeout:
            server.stop()
            raise ServerError(f"{name} did not answer at {url} within {timeout:.0f} s (last error: {last}); "
                              f"{log}:\n{server.log_tail()}")
        time.sleep(0.3)
    server.startup_s = round(time.monotonic() - t0, 1)
    return server


def _pg_user() -> str | None:
    """Who runs PostgreSQL: this user, or as root the ``postgres`` user (else ``nobody``)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServerError("running as root and there is neither a postgres nor a nobody user to run PostgreSQL as")


def start_postgres(workdir: Path, databases: tuple[str, ...] = ("mlflow", "prefect"), timeout: float = 60,
                   port: int | None = None) -> Server:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust authentication, user ``postgres``, fsync off).

    ``url`` is ``postgresql://postgres@127.0.0.1:<port>``; ``databases`` are created empty. The data
    folder is a fresh temporary folder (readable by the server's user), removed by :meth:`Server.stop`.
    """
    import psycopg

    initdb = find_binary("initdb", _PG_DIRS, _PG_HINT)
    postgres = find_binary("postgres", [initdb.parent], _PG_HINT)
    user = _pg_user()
    data_root = Path(tempfile.mkdtemp(prefix="cm-postgres-"))
    if user:
        shutil.chown(data_root, user)
    data = data_root / "data"
    init = subprocess.run([str(initdb), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                           "--no-locale", "--no-sync"], capture_output=True, text=True, user=user, cwd=data_root)
    if init.returncode != 0:
        shutil.rmtree(data_root, ignore_errors=True)
        raise ServerError(f"initdb failed ({init.returncode}):\n{init.stdout[-2000:]}{init.stderr[-2000:]}")
    port = port or free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}"
    cmd = [str(postgres), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(data_root),
           "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]

    def ready() -> bool:
        with psycopg.connect(f"{url}/postgres", connect_timeout=2):
            return True

    server = launch("postgres", cmd, url, workdir, base_env(), ready, timeout, stop_signal=signal.SIGINT,
                    user=user, cleanup=[data_root])
    with psycopg.connect(f"{url}/postgres", autocommit=True) as conn:
        for name in databases:
            conn.execute(f'CREATE DATABASE "{name}"')
    return server


def s3_client(endpoint: str):
    """A boto3 S3 client for the S3 server at ``endpoint`` with the test credentials."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"])


def start_s3(workdir: Path, bucket: str = BUCKET, timeout: float = 60, port: int | None = None) -> Server:
    """moto's S3 server on 127.0.0.1 (``url`` is its endpoint), with ``bucket`` created (state in memory).
    ``port``: a given one (a server restarted where its clients know it), else a free one; so for every start_*."""
    exe = find_binary("moto_server", [BIN], "install moto's server mode into this environment: "
                                            "pip install 'moto[server]' (the project's dev extras have it)")
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    server = launch("s3", [str(exe), "-H", "127.0.0.1", "-p", str(port)], url, workdir,
                    base_env(**S3_CREDENTIALS), lambda: s3_client(url).list_buckets() is not None, timeout)
    s3_client(url).create_bucket(Bucket=bucket)
    return server


def start_mlflow(workdir: Path, database: str, s3_url: str, bucket: str = BUCKET, timeout: float = 120,
                 port: int | None = None) -> Server:
    """``mlflow server`` on the PostgreSQL database URL ``database`` (``postgresql://…/mlflow``), artifacts
    proxied to ``s3://<bucket>/mlflow`` on ``s3_url``; clients need only the tracking URI (``url``)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(find_binary("mlflow", [BIN], "pip install mlflow")), "server", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1",
           "--backend-store-uri", database.replace("postgresql://", "postgresql+psycopg://", 1),
           "--artifacts-destination", f"s3://{bucket}/mlflow"]
    env = base_env(**S3_CREDENTIALS, MLFLOW_S3_ENDPOINT_URL=s3_url, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    return launch("mlflow", cmd, url, workdir, env, lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200,
                  timeout)


def start_prefect(workdir: Path, database: str, timeout: float = 180, port: int | None = None) -> Server:
    """``prefect server start`` on the PostgreSQL database URL ``database`` (``postgresql://…/prefect``,
    through asyncpg), UI off; ``url`` is the API (``http://127.0.0.1:<port>/api``)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    home = workdir / "prefect-server"
    home.mkdir(exist_ok=True)
    env = base_env(PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false",
                   PREFECT_API_DATABASE_CONNECTION_URL=database.replace("postgresql://", "postgresql+asyncpg://", 1))
    cmd = [str(find_binary("prefect", [BIN], "pip install prefect")), "server", "start", "--host", "127.0.0.1",
           "--port", str(port)]
    return launch("prefect", cmd, url, workdir, env,
                  lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, timeout)


def start_worker(workdir: Path, api: str, pool: str = POOL, env: dict[str, str] | None = None,
                 query_seconds: float = 2, timeout: float = 120) -> Server:
    """``prefect worker start --pool <pool> --type process`` (the pool is created if missing), polling every
    ``query_seconds``. Flow runs it starts inherit its environment: pass the store settings in ``env``.
    Ready when the server lists the worker as ONLINE in the pool."""
    home = workdir / "prefect-worker"
    home.mkdir(exist_ok=True)
    full = base_env(**{**(env or {}), "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
                       "PREFECT_WORKER_QUERY_SECONDS": str(query_seconds), "PREFECT_WORKER_PREFETCH_SECONDS": "5"})
    cmd = [str(find_binary("prefect", [BIN], "pip install prefect")), "worker", "start", "--pool", pool,
           "--type", "process", "--name", WORKER]

    def ready() -> bool:
        r = httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={}, timeout=5)
        return r.status_code == 200 and any(w["name"] == WORKER and w.get("status") == "ONLINE" for w in r.json())

    return launch("worker", cmd, api, workdir, full, ready, timeout)


class Topology:
    """PostgreSQL, the S3 server, the MLflow and Prefect servers and a process worker, started together.

    ``with Topology(workdir) as top:`` starts them (MLflow and Prefect at the same time, once the
    database is up) and stops them in reverse order at the end of the block, also on an error.
    ``prefect=False`` leaves out the Prefect server and the worker; ``worker_env`` adds to what the
    worker's flow runs see (beside :meth:`settings`). Logs and state live under ``workdir``.
    """

    def __init__(self, workdir: Path, prefect: bool = True, worker_env: dict[str, str] | None = None,
                 bucket: str = BUCKET, pool: str = POOL) -> None:
        self.workdir = Path(workdir)
        self.prefect, self.worker_env, self.bucket, self.pool = prefect, dict(worker_env or {}), bucket, pool
        self.servers: dict[str, Server] = {}
        self.stop_seconds: dict[str, float] = {}

    def __enter__(self) -> "Topology":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN and threading.current_thread() is threading.main_thread():
            # started as `cmd &` from a script: the servers would inherit the ignored SIGINT and stop slowly
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.servers["postgres"] = start_postgres(self.workdir)
            self.servers["s3"] = start_s3(self.workdir, self.bucket)
            db = self.servers["postgres"].url
            with ThreadPoolExecutor(2) as pool:
                mlflow = pool.submit(start_mlflow, self.workdir, f"{db}/mlflow", self.servers["s3"].url, self.bucket)
                prefect = pool.submit(start_prefect, self.workdir, f"{db}/prefect") if self.prefect else None
                for name, fut in (("mlflow", mlflow), ("prefect", prefect)):
                    if fut is not None:
                        self.servers[name] = fut.result()
            if self.prefect:
                self.servers["worker"] = start_worker(self.workdir, self.servers["prefect"].url, self.pool,
                                                      {**self.settings(), **self.worker_env})
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every started server, last started first; ``stop_seconds`` records how long each took."""
        for name in reversed(list(self.servers)):
            t0 = time.monotonic()
            self.servers.pop(name).stop()
            self.stop_seconds[name] = round(time.monotonic() - t0, 1)

    @property
    def dvc_remote(self) -> str:
        """The DVC remote's URL in the bucket: ``s3://<bucket>/dvc``."""
        return f"s3://{self.bucket}/dvc"

    def settings(self) -> dict[str, str]:
        """The environment that points a checkout at these servers (the names of flows.settings.SERVER_SETTINGS)."""
        out = {"MLFLOW_TRACKING_URI": self.servers["mlflow"].url, "MLFLOW_S3_ENDPOINT_URL": self.servers["s3"].url,
               "AWS_ENDPOINT_URL_S3": self.servers["s3"].url, **S3_CREDENTIALS}
        if "prefect" in self.servers:
            out["PREFECT_API_URL"] = self.servers["prefect"].url
        return out

    def startup_seconds(self) -> dict[str, float]:
        """Seconds from launch to the first good answer, per server."""
        return {name: s.startup_s for name, s in self.servers.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.local [--workdir DIR]``: start the topology, print its settings, wait for Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=main.__doc__)
    parser.add_argument("--workdir", type=Path, default=None, help="logs and state (default: a temporary folder)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cm-servers-"))
    # Ctrl-C and SIGTERM end the wait below, also when started with SIGINT ignored (`cmd &` in a script);
    # set before the servers start, so they do not inherit an ignored SIGINT either.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    top = Topology(workdir)
    try:
        with top:
            print(f"# servers up (seconds to start: {top.startup_seconds()}); logs in {workdir}")
            for key, value in top.settings().items():
                print(f"export {key}={value}")
            print(f"# DVC remote: dvc remote add -d -f shared {top.dvc_remote} && "
                  f"dvc remote modify shared endpointurl {top.servers['s3'].url}")
            print("# Ctrl-C stops them", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"# stopped (seconds: {top.stop_seconds})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
