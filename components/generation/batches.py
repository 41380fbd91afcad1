"""Claude's Message Batches: half price, answers within 24 h, resumable by batch id.

The missing requests go as one batch; its id is saved in the cache (``<cache>/batches``) before
polling, so a killed run collects the batch it paid for instead of submitting it again. Results
that errored transiently or expired are resubmitted, up to ``retries + 1`` batches in all.
"""

from __future__ import annotations

import asyncio
import logging
import time

from components.generation.errors import BackendUnavailableError
from components.generation.fetch import Fetcher, Planned

log = logging.getLogger(__name__)


async def fetch_batches(fetcher: Fetcher, missing: dict[str, Planned]) -> None:
    """Collect pending batches a killed run left, then submit what is still missing as one batch.
    Raises BackendUnavailableError when requests still fail after ``retries + 1`` batches."""
    p, api, cache = fetcher.params, fetcher.dialect.api, fetcher.cache
    async with api.async_client() as client:
        for state in cache.batch_states():
            if set(state["keys"]) & set(missing):
                log.info("resuming Message Batch %s (%d requests)", state["batch_id"], len(state["keys"]))
                await _collect(fetcher, client, state, missing)
        for attempt in range(p.retries + 1):
            todo = {k: it for k, it in missing.items() if not cache.has(k)}
            if not todo:
                return
            if attempt:
                log.info("resubmitting %d requests whose batch results errored or expired", len(todo))
            batch_id = await fetcher.call(lambda: api.submit_batch(client, [(k, it.body) for k, it in todo.items()]))
            state = {"batch_id": batch_id, "keys": list(todo), "model": fetcher.dialect.model,
                     "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            cache.save_batch(state)
            log.info("submitted Message Batch %s (%d requests); a killed run resumes it from %s",
                     batch_id, len(todo), cache.root / "batches")
            await _collect(fetcher, client, state, missing)
        still = [k for k in missing if not cache.has(k)]
        if still:
            raise BackendUnavailableError(
                f"{len(still)} batch requests kept failing after {p.retries + 1} batches; rerun later "
                "(everything answered is cached) or set generate.claude.use_batches: false"
            )


async def _collect(fetcher: Fetcher, client, state: dict, missing: dict[str, Planned]) -> None:
    """Poll one batch until it ends (at most ``batch_max_wait_s``), then cache its results."""
    p, api = fetcher.params, fetcher.dialect.api
    batch_id = state["batch_id"]
    bar = fetcher.bar(len(state["keys"]), f"batch {batch_id}")
    started = time.monotonic()
    try:
        while True:
            status = await fetcher.call(lambda: api.batch_status(client, batch_id))
            done = sum(v for k, v in status["counts"].items() if k != "processing")
            bar.n = min(done, bar.total)
            bar.set_postfix(status=status["status"], **{k: v for k, v in status["counts"].items() if v}, refresh=True)
            if status["status"] == "ended":
                break
            if time.monotonic() - started > p.batch_max_wait_s:
                raise BackendUnavailableError(
                    f"Message Batch {batch_id} still {status['status']} after {p.batch_max_wait_s:.0f}s; rerun the "
                    f"step to keep waiting (the id is kept in {fetcher.cache.root / 'batches'})"
                )
            await asyncio.sleep(p.batch_poll_interval_s)
        results = await fetcher.call(lambda: api.batch_results(client, batch_id))
    finally:
        bar.close()
    known = set(state["keys"])
    for custom_id, kind, payload in results:
        if custom_id not in known:
            continue
        item = missing.get(custom_id)
        request = item.body if item else None
        if kind == "succeeded":
            fetcher.keep(custom_id, {"batch": batch_id, "request": request, "response": payload})
        elif kind == "errored" and not api.is_transient_batch_error(payload):
            # Deterministic (invalid request): remember it, so it is not resubmitted forever.
            fetcher.keep(custom_id, {"batch": batch_id, "request": request, "error": payload})
        else:
            log.info("batch %s: request %s %s; it will be resubmitted", batch_id, custom_id[:12], kind)
    fetcher.cache.drop_batch(batch_id)
