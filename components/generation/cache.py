"""The content-addressed cache of LLM answers: a rerun is served from it, a killed run resumes.

An answer is addressed by the sha256 of what was sent (backend name, request body: model,
prompts, parameters) and the seed; it is written atomically as it arrives, so a killed run
loses at most the requests in flight. Pending Message Batches are kept beside the answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from components.core.contract import write_json

log = logging.getLogger(__name__)



def request_key(backend: str, body: dict, seed: int) -> str:
    """sha256 (64 hex digits) of what is sent (model, prompts, parameters) and the seed: the answer's
    address. Stable across runs and machines: keys sorted, UTF-8. Changing it orphans every cached answer."""
    material = json.dumps({"backend": backend, "body": body, "seed": seed}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class ResponseCache:
    """One JSON file per answer, ``<root>/<key[:2]>/<key>.json``, written atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives (whether or not it exists)."""
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The entry for ``key``; None when absent or unreadable (then it is asked again)."""
        p = self.path(key)
        try:
            return json.loads(p.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("unreadable cache entry %s: asking again", p)
            return None

    def has(self, key: str) -> bool:
        """Whether a readable entry for ``key`` exists."""
        return self.get(key) is not None

    def put(self, key: str, entry: dict) -> None:
        """Write ``{"key": key, **entry}`` atomically."""
        write_json(self.path(key), {"key": key, **entry})

    # Pending Message Batches: what a killed run needs to collect a batch it paid for.
    def batch_states(self) -> list[dict]:
        """Saved states of pending batches (``batch_id``, ``keys``, ``model``, ``submitted``); unreadable ones skipped."""
        folder = self.root / "batches"
        states = []
        for p in sorted(folder.glob("*.json")) if folder.exists() else ():
            try:
                states.append(json.loads(p.read_text("utf-8")))
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("unreadable batch state %s: ignored", p)
        return states

    def save_batch(self, state: dict) -> None:
        """Remember a submitted batch (atomically) until it is collected."""
        write_json(self.root / "batches" / f"{state['batch_id']}.json", state)

    def drop_batch(self, batch_id: str) -> None:
        """Forget a collected batch."""
        (self.root / "batches" / f"{batch_id}.json").unlink(missing_ok=True)


