"""Micro-batching: requests that arrive together are scored together.

Each request's texts (one context per text) wait on an asyncio queue; one batcher task takes
whole requests until ``max_items`` texts or ``wait_s`` has passed since the first, scores them
in one call on a single worker thread (one batch at a time: onnxruntime already uses every core
it is given) and hands each request its own slice. A request is never split across batches, so
one model answers all of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# score(texts, contexts) -> (who answered, one result per text); runs in the worker thread.
Scorer = Callable[[list[str], list[Any]], tuple[Any, list[Any]]]


class Overloaded(RuntimeError):
    """More requests are waiting than the batcher accepts; the client should retry later."""


class ShuttingDown(RuntimeError):
    """The service stopped before the request was scored."""


@dataclass
class _Job:
    texts: list[str]
    contexts: list[Any]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """``await submit(texts, contexts)`` -> ``(who, results)``; :meth:`run` is the batcher task.

    ``on_batch(items, requests, seconds)`` is told about every batch scored (for metrics).
    """

    def __init__(self, score: Scorer, max_items: int, wait_s: float, max_pending: int = 1024,
                 on_batch: Callable[[int, int, float], None] | None = None):
        self.score = score
        self.max_items = max(1, int(max_items))
        self.wait_s = max(0.0, float(wait_s))
        self.max_pending = max_pending
        self.on_batch = on_batch
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moderate")

    async def submit(self, texts: Sequence[str], contexts: Sequence[Any]) -> tuple[Any, list[Any]]:
        if self.queue.qsize() >= self.max_pending:
            raise Overloaded(f"{self.queue.qsize()} requests are waiting to be scored; retry shortly")
        job = _Job(list(texts), list(contexts), asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        return await job.future

    async def _collect(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """The jobs of one batch, starting with ``first``; and a job that did not fit (next batch's first)."""
        loop = asyncio.get_running_loop()
        jobs, items = [first], len(first.texts)
        deadline = loop.time() + self.wait_s
        while items < self.max_items:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except (asyncio.TimeoutError, TimeoutError):
                    break
            if items + len(job.texts) > self.max_items:
                return jobs, job
            jobs.append(job)
            items += len(job.texts)
        return jobs, None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        carried: _Job | None = None
        try:
            while True:
                first = carried or await self.queue.get()
                jobs, carried = await self._collect(first)
                jobs = [j for j in jobs if not j.future.done()]  # a client that went away
                if not jobs:
                    continue
                started = time.perf_counter()
                await self._score(loop, jobs)
                if self.on_batch:
                    self.on_batch(sum(len(j.texts) for j in jobs), len(jobs), time.perf_counter() - started)
        finally:
            for job in [carried, *self._drain()]:
                if job is not None and not job.future.done():
                    job.future.set_exception(ShuttingDown("the service is shutting down; retry"))
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def _score(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        texts = [t for j in jobs for t in j.texts]
        contexts = [c for j in jobs for c in j.contexts]
        try:
            who, results = await loop.run_in_executor(self.executor, self.score, texts, contexts)
        except Exception as exc:
            if len(jobs) == 1:
                _settle(jobs[0].future, exc=exc)
                return
            # One request's texts broke the batch: score each alone, so only that request fails.
            log.warning("a batch of %d requests failed (%s); scoring them one by one", len(jobs), exc)
            for job in jobs:
                await self._score(loop, [job])
            return
        at = 0
        for job in jobs:
            _settle(job.future, result=(who, results[at: at + len(job.texts)]))
            at += len(job.texts)

    def _drain(self) -> list[_Job]:
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out


def _settle(future: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
