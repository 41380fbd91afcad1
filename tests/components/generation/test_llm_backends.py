"""The Claude and local-LLM backends, through the real anthropic SDK and httpx code, against
stand-in servers on 127.0.0.1 (tests/standins.py): records land in the contract, rejects are
counted, retries happen, the cache serves a rerun, an interrupted run resumes."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from components.core.contract import read_records
from components.generate_negatives import generate_negatives
from components.generate_positives import generate_positives
from components.generation import make_backend
from components.generation.base import Job
from components.generation.answers import Answer, validate_answer
from components.generation.cache import ResponseCache, request_key
from components.generation.errors import BackendUnavailableError, MissingCredentialsError, TooManyLLMRejectsError
from components.generation.prompts import build_prompt, tool_schema
from components.llm.usage import Usage, price_for
from components.core.params import GenerateParams
from components.core.taxonomy import AUDIENCES, LABELS, SURFACES
from tests.conftest import ROOT
from tests.standins import AnthropicStandIn, OpenAIStandIn

CATS = ["threats", "sextortion"]
SONNET = price_for("claude-sonnet-4-6")


def claude_params(tmp_path: Path, **claude) -> GenerateParams:
    settings = dict(examples_per_request=10, backoff_base_s=0.01, backoff_max_s=0.05, requests_per_minute=0,
                    tokens_per_minute=0, concurrency=2, cache_dir=str(tmp_path / "cache"), batch_poll_interval_s=0.01)
    settings.update(claude)
    return GenerateParams(backend="claude", positives_per_category=20, hard_negatives_default=10, hard_negatives={},
                          innocuous=10, overlap={"sextortion": {"threats": 0.25}}, claude=settings)


def local_params(tmp_path: Path, url: str, **local) -> GenerateParams:
    settings = dict(base_url=url, examples_per_request=10, backoff_base_s=0.01, backoff_max_s=0.05,
                    cache_dir=str(tmp_path / "cache"), timeout_s=5)
    settings.update(local)
    return GenerateParams(backend="local", positives_per_category=20, hard_negatives_default=10, hard_negatives={},
                          innocuous=10, overlap={}, local=settings)


@pytest.fixture
def claude_api(monkeypatch):
    with AnthropicStandIn() as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        yield server


@pytest.fixture
def openai_server():
    with OpenAIStandIn() as server:
        yield server


def cache_entries(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "cache").rglob("*.json") if p.parent.name != "batches"]


def expected_cost(usage: dict, price, batch: bool = False) -> float:
    usd = (usage["input_tokens"] * price.input + usage["output_tokens"] * price.output
           + usage["cache_write_tokens"] * price.cache_write + usage["cache_read_tokens"] * price.cache_read) / 1e6
    return usd * (0.5 if batch else 1)


# ---------------------------------------------------------------------------------------------
# Claude


def test_claude_records_land_in_the_contract_rejects_are_counted_and_429_is_retried(tmp_path, claude_api):
    claude_api.faults.extend(["429:1", "529", "malformed", "refusal", "off_category", "duplicates", "empty"])
    stats = generate_positives(claude_params(tmp_path), tmp_path / "pos", categories=CATS)

    threats = read_records(tmp_path / "pos/threats.jsonl").records
    sextortion = read_records(tmp_path / "pos/sextortion.jsonl").records
    assert len(threats) == len(sextortion) == 20
    assert all(r.positive_labels() == ["threats"] for r in threats)
    assert sum(r.positive_labels() == ["threats", "sextortion"] for r in sextortion) == 5
    assert sum(r.positive_labels() == ["sextortion"] for r in sextortion) == 15
    for r in threats + sextortion:
        assert r.source == "claude" and r.metadata["model"] == "claude-sonnet-4-6"
        assert r.metadata["audience"] in AUDIENCES and r.metadata["surface"] in SURFACES
        assert r.text.startswith("sample ")  # the raw text; merge adds the prefix
    assert len({r.text for r in threats + sextortion}) == 40

    llm = stats["llm"]
    reasons = llm["rejected_by_reason"]
    assert {"refusal", "malformed", "off_category", "duplicate", "empty"} <= set(reasons), reasons
    assert llm["retries"] == 2
    rejects = [json.loads(line) for line in (tmp_path / "pos/_rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == llm["rejected"] and all(r["reason"] and r["detail"] for r in rejects)
    assert llm["per_category"]["threats"]["kept"] == llm["per_category"]["sextortion"]["kept"] == 20

    # the 429 was retried after its retry-after (1 s), not after the 0.05 s backoff
    calls = claude_api.requests("/v1/messages")
    limited = next(c for c in calls if c["status"] == 429)
    retried = next(c for c in calls if c["body"] == limited["body"] and c["time"] > limited["time"])
    assert retried["time"] - limited["time"] >= 0.9
    assert llm["requests"] == sum(c["status"] == 200 for c in calls)

    # what was sent: forced tool use, the system prompt cached, the key, no sampling parameter
    for c in calls:
        body = c["body"]
        assert body["tool_choice"] == {"type": "tool", "name": "record_examples"}
        assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
        assert "temperature" not in body and body["model"] == "claude-sonnet-4-6"
        assert "sk-ant-test" in json.dumps(c["headers"])
    assert llm["cache_read_tokens"] > 0
    assert llm["cost_usd"] == pytest.approx(expected_cost(llm, SONNET), rel=1e-4) and llm["cost_usd"] > 0
    assert sum(c["cost_usd"] for c in llm["per_category"].values()) == pytest.approx(llm["cost_usd"], rel=1e-4)


def test_a_second_run_is_served_by_the_cache_with_zero_requests(tmp_path, claude_api):
    claude_api.faults.extend(["refusal", "duplicates"])
    first = generate_positives(claude_params(tmp_path), tmp_path / "a", categories=CATS)["llm"]
    claude_api.reset()
    second = generate_positives(claude_params(tmp_path), tmp_path / "b", categories=CATS)["llm"]
    assert claude_api.log == []
    assert second["requests"] == 0 and second["cached"] == first["requests"]
    assert second["cost_usd"] == 0 and second["cost_usd_with_cache"] == pytest.approx(first["cost_usd"])
    assert second["rejected_by_reason"] == first["rejected_by_reason"]
    for name in ("threats.jsonl", "sextortion.jsonl", "_rejects.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_an_interrupted_run_resumes_without_repeating_paid_requests(tmp_path, claude_api):
    params = claude_params(tmp_path, concurrency=1, retries=1)
    claude_api.ok_limit = 3  # the API dies after three answers
    with pytest.raises(BackendUnavailableError, match="cached"):
        generate_positives(params, tmp_path / "pos", categories=CATS)
    assert not (tmp_path / "pos").exists()  # nothing half-written
    assert len(cache_entries(tmp_path)) == 3
    paid = [c["body"] for c in claude_api.log if c["status"] == 200]

    claude_api.reset()
    stats = generate_positives(params, tmp_path / "pos", categories=CATS)["llm"]
    assert stats["cached"] == 3 and stats["requests"] == len(claude_api.log) > 0
    assert not any(c["body"] in paid for c in claude_api.log)
    assert len(read_records(tmp_path / "pos/threats.jsonl").records) == 20


def test_without_a_key_the_step_stops_before_any_work(tmp_path, claude_api, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(MissingCredentialsError) as err:
        generate_positives(claude_params(tmp_path), tmp_path / "pos", categories=CATS)
    assert isinstance(err.value, ValueError)
    assert "ANTHROPIC_API_KEY" in str(err.value) and "generate.backend: offline" in str(err.value)
    assert claude_api.log == [] and not (tmp_path / "pos").exists()


def test_too_many_rejects_fail_the_step_loudly_with_the_rejects_written(tmp_path, claude_api):
    claude_api.faults.extend(["refusal"] * 4)
    with pytest.raises(TooManyLLMRejectsError, match="threats: .* rejected .*refusal"):
        generate_positives(claude_params(tmp_path, concurrency=1, max_reject_fraction=0.2), tmp_path / "pos",
                           categories=["threats"])
    rejects = [json.loads(line) for line in (tmp_path / "pos/_rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["refusal"] * 4 and not (tmp_path / "pos/threats.jsonl").exists()


def test_message_batches_resume_by_batch_id_at_half_price(tmp_path, claude_api):
    params = claude_params(tmp_path, use_batches=True, retries=0)
    claude_api.fail_batch_polls = True  # submitted, then the run dies while polling
    with pytest.raises(BackendUnavailableError):
        generate_positives(params, tmp_path / "pos", categories=CATS)
    states = list((tmp_path / "cache/batches").glob("*.json"))
    assert [json.loads(p.read_text())["batch_id"] for p in states] == ["msgbatch_0001"]
    assert not (tmp_path / "pos").exists() or not list((tmp_path / "pos").glob("threats.jsonl"))

    claude_api.fail_batch_polls = False
    stats = generate_positives(params, tmp_path / "pos", categories=CATS)["llm"]
    assert len(claude_api.requests("/v1/messages/batches")) == 1  # collected, never resubmitted
    assert claude_api.requests("/v1/messages") == claude_api.requests("/v1/messages/batches")
    assert any(c["path"].endswith("/results") for c in claude_api.requests("/v1/messages/batches", "GET"))
    assert not list((tmp_path / "cache/batches").glob("*.json"))
    assert len(read_records(tmp_path / "pos/sextortion.jsonl").records) == 20
    assert stats["requests"] == len(claude_api.batches["msgbatch_0001"]["requests"])
    assert stats["cost_usd"] == pytest.approx(expected_cost(stats, SONNET, batch=True), rel=1e-4)


def test_batch_results_that_errored_or_expired_are_resubmitted(tmp_path, claude_api):
    claude_api.batch_result_faults = {0: "errored", 1: "expired"}
    stats = generate_negatives(claude_params(tmp_path, use_batches=True), tmp_path / "neg", None, categories=["threats"])
    submitted = claude_api.requests("/v1/messages/batches")
    assert [len(c["body"]["requests"]) for c in submitted] == [2, 2]
    assert stats["llm"]["requests"] == 2 and len(read_records(tmp_path / "neg/threats.jsonl").records) == 10


def test_an_api_error_that_retrying_cannot_fix_is_a_clear_error(tmp_path, claude_api):
    claude_api.faults.extend(["401"] * 10)
    with pytest.raises(MissingCredentialsError, match="rejected the key"):
        generate_positives(claude_params(tmp_path, concurrency=1), tmp_path / "pos", categories=["threats"])
    bodies = [json.dumps(c["body"]) for c in claude_api.log if c["body"]]
    assert len(bodies) == len(set(bodies)) >= 1  # no request sent twice: a 401 is not retried


# ---------------------------------------------------------------------------------------------
# local OpenAI-compatible server


def test_local_backend_same_contract_rejects_retries_and_cache(tmp_path, openai_server):
    openai_server.faults.extend(["429:0", "503", "duplicates", "fenced", "malformed", "refusal"])
    params = local_params(tmp_path, openai_server.url + "/v1", max_reject_fraction=0.9)
    stats = generate_negatives(params, tmp_path / "neg", tmp_path / "innocuous.jsonl", categories=["adult_content", "threats"])
    for name, n in (("neg/adult_content.jsonl", 10), ("neg/threats.jsonl", 10), ("innocuous.jsonl", 10)):
        records = read_records(tmp_path / name).records
        assert len(records) == n and all(sum(r.label_vector()) == 0 for r in records)
        assert all(r.source == "local_llm" for r in records)
    llm = stats["llm"]
    assert {"refusal", "malformed", "duplicate"} <= set(llm["rejected_by_reason"])
    assert llm["retries"] == 2 and llm["cost_usd"] == 0 and llm["input_tokens"] > 0
    assert set(llm["per_category"]) == {"adult_content", "threats", "innocuous"}
    body = openai_server.requests("/v1/chat/completions")[0]["body"]
    assert body["response_format"]["type"] == "json_schema" and body["messages"][0]["role"] == "system"

    openai_server.reset()
    again = generate_negatives(params, tmp_path / "neg2", tmp_path / "innocuous2.jsonl", categories=["adult_content", "threats"])
    assert openai_server.log == [] and again["llm"]["requests"] == 0
    assert (tmp_path / "neg/threats.jsonl").read_bytes() == (tmp_path / "neg2/threats.jsonl").read_bytes()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_local_server_is_a_clear_error_and_nothing_is_written(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as err:
        generate_positives(local_params(tmp_path, url, retries=2), tmp_path / "pos", categories=["threats"])
    message = str(err.value)
    assert url in message and "could not be reached" in message and "3 tries" in message
    assert "llama-server" in message and "generate.local.base_url" in message
    assert time.monotonic() - started < 10
    assert not (tmp_path / "pos").exists()


def test_a_slow_local_server_times_out_after_bounded_retries(tmp_path, openai_server):
    openai_server.delay_s = 1.0
    with pytest.raises(BackendUnavailableError, match="timeout_s=0.2"):
        generate_positives(local_params(tmp_path, openai_server.url + "/v1", timeout_s=0.2, retries=1),
                           tmp_path / "pos", categories=["threats"])
    assert len(openai_server.log) == 2
    assert not (tmp_path / "pos").exists()


def test_the_backend_also_runs_inside_a_running_event_loop(tmp_path, openai_server):
    backend = make_backend(local_params(tmp_path, openai_server.url + "/v1"))

    async def in_a_flow():
        return backend.positives("spam", 5)

    drafts = asyncio.run(in_a_flow())
    assert len(drafts) == 5 and all(d.labels == ("spam",) for d in drafts)


# ---------------------------------------------------------------------------------------------
# prompts, validation, keys, prices


@pytest.mark.parametrize("name", LABELS)
def test_every_category_builds_positive_multi_label_and_negative_prompts(name):
    for job in (Job("positives", name, 50), Job("negatives", name, 50)):
        prompts = [build_prompt(job, i, 25, 13) for i in range(6)]
        assert len({p.user for p in prompts}) == 6
        assert all(name in p.system[1] and "Return exactly 25 examples" in p.user for p in prompts)
    p = build_prompt(Job("positives", name, 50, ("contact_info",) if name != "contact_info" else ("spam",)), 0, 10, 13)
    assert len(p.expected) == 2 and "AND clearly" in p.user


def test_csam_prompts_ask_only_for_abstract_patterns():
    general = build_prompt(Job("positives", "threats", 10), 0, 10, 13).system[0]
    assert "Never write sexual content involving anyone under 18" in general
    for kind in ("positives", "negatives"):
        block = build_prompt(Job(kind, "csam", 10), 0, 10, 13).system[1]
        assert "ONLY the abstract grooming and solicitation patterns" in block
        assert "Never describe" in block and "sexual act" in block


def test_validation_rejects_with_reasons():
    prompt = build_prompt(Job("positives", "harassment", 10, ("profanity",)), 0, 10, 13)
    good = {"text": "you are a damn joke, everyone report her", "subtype": "x", "categories": ["harassment", "profanity"]}
    examples = [
        good,
        {**good, "text": "You are a DAMN joke - everyone report her!"},  # duplicate once normalised
        {**good, "text": "  "},
        {**good, "text": "[GENERAL][MESSAGE] blocked me? new account, same messages"},  # prefix stripped, kept
        {**good, "text": "another one", "categories": ["harassment"]},
        {**good, "text": "and another", "categories": ["harassment", "profanity", "threats"]},
        {**good, "text": "I'm sorry, but I can't help with that request."},
        {"categories": []},
        {**good, "text": "x" * 2000},
    ]
    seen: set[str] = set()
    accepted, rejects = validate_answer(Answer(examples, Usage()), prompt, seen)
    assert [t for t, _ in accepted] == [good["text"], "blocked me? new account, same messages"]
    assert [r.reason for r in rejects] == ["duplicate", "empty", "off_category", "off_category", "refusal",
                                           "malformed", "too_long"]
    assert rejects[2].detail == "not profanity" and rejects[3].detail == "also threats"
    whole = validate_answer(Answer(None, Usage(), refusal="no"), prompt, set())[1]
    assert [(r.reason, r.examples_lost) for r in whole] == [("refusal", 10)]


def test_request_keys_address_model_prompt_parameters_and_seed():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    assert request_key("claude", body, 13) == request_key("claude", json.loads(json.dumps(body)), 13)
    assert len({request_key("claude", body, 13), request_key("claude", {**body, "model": "n"}, 13),
                request_key("claude", {**body, "max_tokens": 11}, 13), request_key("claude", body, 14),
                request_key("local_llm", body, 13)}) == 5


def test_cache_writes_are_atomic_and_a_corrupt_entry_is_asked_again(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put("ab" * 32, {"response": {"x": 1}})
    assert cache.get("ab" * 32)["response"] == {"x": 1}
    assert not list(tmp_path.rglob("*.tmp"))
    cache.path("cd" * 32).parent.mkdir(parents=True)
    cache.path("cd" * 32).write_text('{"response": ')
    assert cache.get("cd" * 32) is None


def test_prices_come_from_the_table_or_params():
    assert (SONNET.input, SONNET.output, SONNET.cache_read, SONNET.cache_write) == pytest.approx((3.0, 15.0, 0.3, 3.75))
    assert price_for("claude-opus-4-1-20250805").input == 15.0 and price_for("claude-opus-4-5").input == 5.0
    assert price_for("claude-haiku-4-5-20251001").output == 5.0
    assert price_for("some-future-model") is None
    assert price_for("some-future-model", {"input": 2, "output": 8}).cache_read == pytest.approx(0.2)
    schema = tool_schema()
    assert schema["properties"]["examples"]["items"]["properties"]["categories"]["items"]["enum"] == list(LABELS)


# ---------------------------------------------------------------------------------------------
# the CLI command


@pytest.fixture
def project(tmp_path, monkeypatch):
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_generate_command_writes_what_review_reads(project, claude_api):
    from flows.cli import app as main_app
    from flows.cli.generate import generate

    app = typer.Typer()
    app.command()(generate)
    app.command(name="noop")(lambda: None)  # two commands: `generate` stays a subcommand, as in flows/cli.py
    runner = CliRunner()
    result = runner.invoke(app, ["generate", "--backend", "claude", "--category", "threats", "--category", "spam",
                                 "--count", "12", "--kind", "positives"])
    assert result.exit_code == 0, result.output
    assert "requests" in result.output and "spent $" in result.output
    assert len(read_records(project / "data/generated/positives/threats.jsonl").records) == 12
    assert (project / "data/.llm-cache").is_dir()  # the cache under the project root
    review = runner.invoke(main_app, ["review", "threats", "positives", "-n", "3"])
    assert review.exit_code == 0 and "sample" in review.output

    result = runner.invoke(app, ["generate", "--backend", "offline", "--kind", "innocuous", "--count", "7"])
    assert result.exit_code == 0, result.output
    assert len(read_records(project / "data/generated/innocuous.jsonl").records) == 7

    bad = runner.invoke(app, ["generate", "--backend", "claude", "--category", "violence"])
    assert bad.exit_code == 1 and "valid categories" in bad.output


def test_generate_command_without_a_key_says_how_to_set_one(project, monkeypatch):
    from flows.cli.generate import generate

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    app = typer.Typer()
    app.command()(generate)
    app.command(name="noop")(lambda: None)
    result = CliRunner().invoke(app, ["generate", "--backend", "claude", "-c", "threats"])
    assert result.exit_code == 1 and "ANTHROPIC_API_KEY" in result.output
    assert not (project / "data").exists()
