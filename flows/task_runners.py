"""Where train-flow runs the parts of its fanned-out steps: Prefect tasks on a Dask task runner.

The generation steps (``flows.stages.FAN_OUT_STEPS``) are 18 categories × kinds of independent
work, network-bound with Claude or a local LLM. With ``task_runner="dask"`` each category (and the
innocuous file) is a Prefect task of its own, ``generate-positives[threats]`` and so on, submitted
to a ``DaskTaskRunner`` (prefect-dask): a ``LocalCluster`` of ``dask_workers`` processes started for
the step, or the scheduler at ``dask_address``. The other steps run in the flow's process, as they
do with the default runner. The outputs are the same bytes either way: a category's records depend
on nothing but its own seeded generator and its own requests (``components.generation.run_generation``).

A worker reports its task runs to the flow's Prefect API: an ephemeral one (no ``PREFECT_API_URL``)
is handed to the local cluster's processes as they start; workers of a cluster started elsewhere
need ``PREFECT_API_URL`` set where they run.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

TASK_RUNNERS = ("default", "dask")


@dataclass(frozen=True)
class FanOut:
    """How train-flow runs the fanned-out steps' parts.

    ``task_runner``: ``default`` (each step whole, in the flow's process) or ``dask``;
    ``dask_workers``: processes of the local cluster (ignored with ``dask_address``);
    ``dask_address``: a running Dask scheduler, e.g. ``tcp://dask-scheduler:8786``.
    Raises ValueError on an unknown runner or fewer than one worker.
    """

    task_runner: str = "default"
    dask_workers: int = 2
    dask_address: str | None = None

    def __post_init__(self) -> None:
        if self.task_runner not in TASK_RUNNERS:
            raise ValueError(f"task_runner={self.task_runner!r}: use one of {', '.join(TASK_RUNNERS)}")
        if self.dask_workers < 1:
            raise ValueError(f"dask_workers={self.dask_workers}: a local Dask cluster needs at least 1 worker")

    def map_fn(self, stage: str) -> Callable[[Callable, list], list] | None:
        """The ``map_fn`` a fanned-out step runs its parts with (None: the step runs whole)."""
        if self.task_runner == "default":
            return None
        return functools.partial(_dask_map, self, stage)


@task(name="generation-part", cache_policy=NO_CACHE, persist_result=False)
def generation_part(fn: Callable[[list], Any], keys: list) -> Any:
    """One part of a generation step: ``fn(keys)`` (``components.generation.run_generation``'s worker side)."""
    return fn(keys)


def _label(keys: list) -> str:
    return ",".join("innocuous" if k is None else str(k) for k in keys)


def _dask_map(fan: FanOut, stage: str, fn: Callable[[list], Any], items: list[list]) -> list:
    """``[fn(item) for item in items]``, each a Prefect task on a Dask task runner; raises a part's error.

    The runner of the flow run's ``session`` when there is one (its cluster started on first use),
    else one for this call alone."""
    with contextlib.ExitStack() as stack:
        held = _SESSION.get()
        if held is None or held.fan != fan:
            runner = _start(fan, stack)
        else:
            held.runner = held.runner or _start(fan, held.stack)
            runner = held.runner
        futures = [runner.submit(generation_part.with_options(task_run_name=f"{stage}[{_label(item)}]"),
                                 {"fn": fn, "keys": item}) for item in items]
        return [future.result() for future in futures]


@dataclass
class _Held:
    fan: FanOut
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    runner: Any = None

    def close(self) -> None:
        """Stop the runner and its cluster now (a later fanned-out step starts another)."""
        self.runner = None
        self.stack.close()


_SESSION: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("fan_out_session", default=None)


@contextlib.contextmanager
def session(fan: FanOut) -> Iterator[_Held]:
    """One Dask task runner, and so one local cluster, for every fanned-out step inside this block
    (train-flow holds it from its first generation step to its last); started on first use, stopped
    when the block ends or its ``close()`` is called."""
    held = _Held(fan)
    token = _SESSION.set(held)
    try:
        yield held
    finally:
        _SESSION.reset(token)
        held.close()


def _start(fan: FanOut, stack: contextlib.ExitStack) -> Any:
    """A started DaskTaskRunner for ``fan``, stopped when ``stack`` closes."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise RuntimeError("task_runner=dask needs prefect-dask: pip install 'content-moderation[servers]' "
                           "(or run with the default task runner)") from None
    if fan.dask_address:
        runner = DaskTaskRunner(address=fan.dask_address)
    else:
        runner = DaskTaskRunner(cluster_kwargs={
            "n_workers": fan.dask_workers, "threads_per_worker": 1, "processes": True,
            "dashboard_address": None, "silence_logs": logging.WARNING})
    stack.enter_context(_quiet("distributed"))
    stack.enter_context(_api_url_for_workers())
    return stack.enter_context(runner)


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The scheduler's INFO lines (workers joining and leaving) stay out of the flow's log; warnings stay."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _api_url_for_workers() -> Iterator[None]:
    """While a local cluster starts: PREFECT_API_URL set to the API this flow run reports to, so its
    worker processes report there rather than each starting an ephemeral API of its own."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)
