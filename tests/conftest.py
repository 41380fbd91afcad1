from __future__ import annotations

from pathlib import Path

import pytest

from components.core.contract import Record, make_labels

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def record_factory():
    def make(rid: str, text: str = "some text", labels=(), **metadata) -> Record:
        meta = {"source": "offline", "group": rid, **metadata}
        return Record(rid, text, make_labels(labels), meta)

    return make
