"""A generate step fanned out into parts (one per category, and the innocuous file) writes the
same bytes and counts the same as the whole step in one part: offline, and through the real
anthropic SDK against the stand-in server, with the parts run one after another or concurrently."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from components.core.params import GenerateParams
from components.generate_negatives import generate_negatives
from components.generate_positives import generate_positives
from components.generation.errors import TooManyLLMRejectsError
from tests.components.generation.test_llm_backends import claude_api, claude_params  # noqa: F401  (fixture)

CATS = ["threats", "sextortion", "spam"]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("concurrent", [False, True], ids=["in-turn", "concurrent"])
def test_offline_parts_write_the_same_bytes(tmp_path, concurrent):
    params = GenerateParams(positives_per_category=40, hard_negatives_default=15, innocuous=30,
                            overlap={"sextortion": {"threats": 0.25}})
    pool = ThreadPoolExecutor(4)
    map_fn = pool.map if concurrent else map

    def run(folder: Path, fn):
        pos = generate_positives(params, folder / "pos", categories=CATS, map_fn=fn)
        neg = generate_negatives(params, folder / "neg", folder / "innocuous.jsonl", categories=CATS, map_fn=fn)
        return {"pos": pos, "neg": neg}

    whole, parts = run(tmp_path / "whole", None), run(tmp_path / "parts", map_fn)
    pool.shutdown()
    for sub in ("pos", "neg"):
        assert files(tmp_path / "whole" / sub) == files(tmp_path / "parts" / sub)
        assert len(files(tmp_path / "whole" / sub)) == len(CATS)
    assert (tmp_path / "whole/innocuous.jsonl").read_bytes() == (tmp_path / "parts/innocuous.jsonl").read_bytes()
    assert whole == parts and whole["neg"]["innocuous"]["count"] == 30


def test_llm_parts_write_the_same_records_and_counts(tmp_path, claude_api):
    pool = ThreadPoolExecutor(4)

    def run(folder: Path, fn):
        params = claude_params(folder)  # a cache of its own: both ways ask the server for everything
        pos = generate_positives(params, folder / "pos", categories=CATS, map_fn=fn)
        neg = generate_negatives(params, folder / "neg", folder / "innocuous.jsonl", categories=CATS, map_fn=fn)
        return {"pos": pos, "neg": neg}

    whole = run(tmp_path / "whole", None)
    asked = len(claude_api.log)
    parts = run(tmp_path / "parts", pool.map)
    pool.shutdown()
    assert len(claude_api.log) == 2 * asked  # the same requests, each once
    assert sorted(json.dumps(c["body"], sort_keys=True) for c in claude_api.log[:asked]) == sorted(
        json.dumps(c["body"], sort_keys=True) for c in claude_api.log[asked:])
    for sub in ("pos", "neg"):
        assert files(tmp_path / "whole" / sub) == files(tmp_path / "parts" / sub)
        assert len(files(tmp_path / "whole" / sub)) == len(CATS) + 1  # and an (empty) _rejects.jsonl
    assert (tmp_path / "whole/innocuous.jsonl").read_bytes() == (tmp_path / "parts/innocuous.jsonl").read_bytes()
    for step in ("pos", "neg"):
        w, p = whole[step]["llm"], parts[step]["llm"]
        assert w.pop("cache_dir") != p.pop("cache_dir")
        assert list(w["per_category"]) == list(p["per_category"]) == CATS + (["innocuous"] if step == "neg" else [])
        assert w["requests"] > 0 and whole[step] == parts[step]


def test_a_part_over_its_reject_limit_fails_the_step_after_the_rejects_are_written(tmp_path, claude_api):
    claude_api.faults.extend(["refusal"] * 4)
    params = claude_params(tmp_path, concurrency=1, max_reject_fraction=0.2)
    with pytest.raises(TooManyLLMRejectsError, match="threats: .* rejected .*refusal"):
        generate_positives(params, tmp_path / "pos", categories=["threats", "spam"], map_fn=map)
    rejects = [json.loads(line) for line in (tmp_path / "pos/_rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["refusal"] * 4
    assert not (tmp_path / "pos/threats.jsonl").exists()
    assert (tmp_path / "pos/spam.jsonl").exists()  # the other part finished: its file is kept


def test_a_backend_object_cannot_be_fanned_out(tmp_path):
    from components.generation.offline import OfflineBackend

    with pytest.raises(ValueError, match="either backend or map_fn"):
        generate_positives(GenerateParams(), tmp_path, categories=["spam"], backend=OfflineBackend(1, None), map_fn=map)
