"""Shared by the service and page tests: a release folder of the tiny model, the service under
uvicorn on 127.0.0.1, and waiting for it."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx

from components.core.taxonomy import LABELS
from components.model.folder import VARIANT_FILES, write_release
from components.serving.loader import ModelHolder, ModelRef
from components.serving.service import ServiceSettings, create_app

SMALL = ServiceSettings(max_batch_items=8, max_text_chars=300, batch_wait_ms=5, poll_s=0.3)


def release(onnx_dir: Path, out: Path, flagged: str, others: float = 1.01) -> Path:
    """A release folder of the tiny model (the release writer's own) that flags ``flagged`` on every
    text it judges: its threshold 0, every other one ``others`` (out of reach by default)."""
    variant = "int8" if (onnx_dir / VARIANT_FILES["int8"]).exists() else "fp32"
    thresholds = {c: (0.0 if c == flagged else others) for c in LABELS}
    write_release(onnx_dir, out, variant, thresholds, {"gate": {"passed": True}, "test": {"macro_f1": 0.5,
                                                                                          "micro_f1": 0.5}})
    return out


class Served:
    """``create_app`` under uvicorn on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, holder: ModelHolder, settings: ServiceSettings = SMALL):
        self.app = create_app(holder, settings)
        self.holder = holder

    def __enter__(self) -> "Served":
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 60, "uvicorn did not start")
        self.client = httpx.Client(base_url=self.url, timeout=60)
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)

    def ready(self, timeout: float = 120) -> dict:
        wait_for(lambda: self.client.get("/ready").status_code == 200, timeout,
                 lambda: f"not ready: {self.client.get('/ready').text}")
        return self.client.get("/ready").json()

    def moderate(self, body) -> httpx.Response:
        return self.client.post("/v1/moderate", json=body)


def wait_for(check, timeout: float, message) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(message() if callable(message) else message)


def holder_for(spec: str, tmp_path: Path, uri: str | None = None) -> ModelHolder:
    return ModelHolder(ModelRef.parse(spec), uri, tmp_path / "serving-cache", threads=1)
