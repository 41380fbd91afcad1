"""`train-flow`: the DAG as Prefect tasks, one per dvc.yaml stage, each calling the same step
function as `dvc repro` does (flows/stages.py).

A step's cache key is :func:`flows.dvc_state.stage_key`: its command, the content of everything
dvc.yaml says it reads (code and data) and its params slice. DVC decides what is current, so
the two ways in agree:

- a step DVC finds up to date ends ``Cached``. If it was built by `dvc repro`, the flow first
  records DVC's result under the step's key, so Prefect's cache knows it too;
- a step DVC finds stale runs (even when Prefect has a result for its key: the outputs on disk
  may have been deleted or checked out from another version), and is then `dvc commit`-ed, so
  `dvc status` has nothing to do after the flow.

One flow run at a time per checkout: the run holds ``.pipeline.lock`` (every `dvc repro` stage
command takes the same lock), and the nightly deployment has a concurrency limit of one.
A run killed halfway resumes from the steps it finished: they were committed as they ended.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff

from flows.settings import apply_defaults, find_root
from flows.stages import FAN_OUT_STEPS
from flows.task_runners import FanOut, session

log = logging.getLogger(__name__)

# Steps that call a generation backend (Claude, a local LLM server): they retry with backoff.
NETWORK_STEPS = {"generate-positives", "generate-negatives"}
LOCK_FILE = ".pipeline.lock"


class PipelineBusyError(RuntimeError):
    """Another pipeline run holds this checkout."""


@contextlib.contextmanager
def pipeline_lock(root: Path, timeout: float = 0) -> Iterator[None]:
    """Hold the checkout's pipeline lock; fail with a clear message if another run has it.

    An OS-level lock (released by the kernel when its process dies), so a killed run never
    leaves the checkout locked.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(root / LOCK_FILE))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise PipelineBusyError(
            f"another pipeline run is using {root} (it holds {root / LOCK_FILE}): a `content-moderation run`, "
            "a Prefect deployment run or a `dvc repro` stage. Wait for it to finish and run again; "
            "two runs never write the same outputs at once."
        ) from None
    try:
        yield
    finally:
        lock.release()


def _worth_retrying(task, task_run, state) -> bool:
    """Retry what may pass next time (a network error, an overloaded API), not a wrong setting.

    A missing API key, bad params or invalid data fail the same way every time: retrying them
    only delays the message that says how to fix them.
    """
    from components.core.contract import ContractError

    try:
        state.result()
    except (ValueError, ContractError, FileNotFoundError, KeyError):
        return False
    except Exception:
        return True
    return False


def _key_from_parameters(context, parameters: dict[str, Any]) -> str:
    return parameters["cache_key"]


@task(persist_result=True, result_serializer="json", cache_key_fn=_key_from_parameters)
def run_step(stage: str, cache_key: str, root: str, fan_out: FanOut | None = None) -> dict:
    """Run one DAG step on params.yaml, then record it with DVC (`dvc commit`).

    ``fan_out``: where a fanned-out step's parts run (flows/task_runners.py); not part of the cache key,
    since the outputs are the same wherever they ran.
    """
    from components.core.params import load_params
    from flows import dvc_state
    from flows.stages import FAN_OUT_STEPS, STAGES

    path = Path(root)
    map_fn = fan_out.map_fn(stage) if fan_out is not None and stage in FAN_OUT_STEPS else None
    stats = STAGES[stage](path, load_params(path / "params.yaml"), **({"map_fn": map_fn} if map_fn else {}))
    dvc_state.record(path, stage)
    return stats


def _adopt(root: Path, stage: str, key: str) -> None:
    """Record a step `dvc repro` built as the Prefect result for its key (its statistics file).

    Written to the default result storage (``$PREFECT_HOME/storage``), where the task's results go.
    """
    from prefect.results import ResultStore, get_default_result_storage
    from prefect.serializers import JSONSerializer

    from flows import dvc_state

    store = ResultStore(result_storage=get_default_result_storage(_sync=True), serializer=JSONSerializer())
    if store.exists(key):
        return
    stats: dict[str, Any] = {"stage": stage, "built_by": "dvc repro"}
    for path in dvc_state.metrics_files(root, stage):
        with contextlib.suppress(OSError, ValueError):
            stats.update(json.loads(path.read_text("utf-8")))
    store.write(obj=stats, key=key)


def select_steps(root: Path, to_step: str | None) -> list[str]:
    """The steps in pipeline order; with ``to_step`` only it and what it needs."""
    from flows import dvc_state

    order = dvc_state.stage_names(root)
    if to_step is None:
        return order
    needed = dvc_state.upstream(root, to_step)
    return [s for s in order if s in needed]


@flow(name="train-flow", log_prints=True)
def train_flow(
    root: str | None = None,
    to_step: str | None = None,
    force: list[str] | None = None,
    lock_timeout: float = 0,
    task_runner: str = "default",
    dask_workers: int = 2,
    dask_address: str | None = None,
) -> dict:
    """Generate → perturb → ingest → merge → train → export → evaluate → benchmark-env → register → report.

    Args:
        root: the project checkout (default: found from the working directory).
        to_step: stop after this step (running only what it needs).
        force: steps to rerun even if current (their downstream reruns only if outputs change).
        lock_timeout: seconds to wait for another run holding the checkout (0: fail at once).
        task_runner: ``default``, or ``dask``: the generation steps run one Prefect task per category
            on a Dask task runner (flows/task_runners.py); the outputs are the same bytes.
        dask_workers: processes of the local Dask cluster (``task_runner="dask"`` without an address).
        dask_address: a running Dask scheduler to use instead of a local cluster.
    """
    from flows import dvc_state

    logger = get_run_logger()
    project = Path(root).resolve() if root else find_root()
    apply_defaults(project)
    force = list(force or [])
    fan_out = FanOut(task_runner, dask_workers, dask_address)
    names = dvc_state.stage_names(project)
    unknown = [s for s in [*force, *([to_step] if to_step else [])] if s not in names]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; steps: {', '.join(names)}")
    summary: dict[str, dict] = {}
    steps = select_steps(project, to_step)
    last_fanned_out = max((i for i, s in enumerate(steps) if s in FAN_OUT_STEPS), default=-1)
    with pipeline_lock(project, lock_timeout), session(fan_out) as fan_out_session:
        for i, stage in enumerate(steps):
            t0 = time.perf_counter()
            key = dvc_state.stage_key(project, stage)
            current = dvc_state.is_current(project, stage) and stage not in force
            if current:
                _adopt(project, stage, key)
            step = run_step.with_options(
                name=stage,
                task_run_name=stage,
                refresh_cache=not current,
                retries=3 if stage in NETWORK_STEPS else 0,
                retry_delay_seconds=exponential_backoff(backoff_factor=10) if stage in NETWORK_STEPS else 0,
                retry_jitter_factor=0.5 if stage in NETWORK_STEPS else None,
                retry_condition_fn=_worth_retrying,
            )
            state = step(stage=stage, cache_key=key, root=str(project), fan_out=fan_out, return_state=True)
            summary[stage] = {"state": state.name, "seconds": round(time.perf_counter() - t0, 2), "key": key}
            logger.info("%s: %s (%.1f s)", stage, state.name, summary[stage]["seconds"])
            if i == last_fanned_out:
                fan_out_session.close()  # the Dask cluster is not kept through training
            if not state.is_completed():
                state.result()  # raises the step's error; finished steps are committed, a rerun resumes
    return summary


def run_in_process(root: Path, to_step: str | None = None, force: list[str] | None = None,
                   fan_out: FanOut | None = None) -> dict:
    """Run train-flow in this process (an ephemeral Prefect API unless PREFECT_API_URL is set)."""
    apply_defaults(root)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    fan_out = fan_out or FanOut()
    return train_flow(root=str(root), to_step=to_step, force=force, task_runner=fan_out.task_runner,
                      dask_workers=fan_out.dask_workers, dask_address=fan_out.dask_address)
