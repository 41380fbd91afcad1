"""The HTTP service on a real exported MiniLM and a real SQLite MLflow registry, run by uvicorn on
127.0.0.1 and spoken to over HTTP: the answers are moderate()'s own; bad input of every kind gets a
short 413/422 that never quotes it; no champion, loading by alias or version (both model layouts),
an alias moved while clients keep sending, a registry outage, and the metrics."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

mlflow = pytest.importorskip("mlflow")

from components import tracking  # noqa: E402
from components.core.taxonomy import LABELS, ContextPrefix  # noqa: E402
from components.model.folder import VARIANT_FILES  # noqa: E402
from components.model.onnx_runtime import OnnxClassifier  # noqa: E402
from components.serving.loader import SOURCE_MARKER, ModelRef, ModelRefError  # noqa: E402
from components.serving.moderate import default_policy, moderate  # noqa: E402
from components.serving.service import ServiceSettings  # noqa: E402
from tests.components.serving.support import SMALL, Served, holder_for, release, wait_for  # noqa: E402
from tests.components.tracking.support import FAST, MODEL  # noqa: E402

TEXTS = ["I am going to hurt you tonight", "lovely weather for the picnic", "[ADULT][BIO] looking for friends"]
NO_CHAMPION = "no model has the alias 'champion' yet; promote one (content-moderation promote <version> --why ...)"


# ------------------------------------------------------------------------------ real model and registry


@pytest.fixture(scope="module")
def releases(tiny_exported, tmp_path_factory) -> dict[str, Path]:
    """Two releases of the same model: ``a`` flags spam on every text, ``b`` flags threats."""
    root = tmp_path_factory.mktemp("releases")
    return {"a": release(tiny_exported[0] / "onnx", root / "a" / "release", "spam"),
            "b": release(tiny_exported[0] / "onnx", root / "b" / "release", "threats")}


def _run_with(uri: str, artifacts: str) -> str:
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("serving-test")
    exp_id = exp.experiment_id if exp else client.create_experiment("serving-test",
                                                                    artifact_location=Path(artifacts).as_uri())
    return client.create_run(exp_id).info.run_id


def register(store: tuple[str, str], release: Path) -> str:
    """A version as the register step makes it today: the run's ``model/`` artifacts are the release folder."""
    uri, artifacts = store
    run_id = _run_with(uri, artifacts)
    mlflow.MlflowClient(tracking_uri=uri).log_artifacts(run_id, str(release), "model")
    return tracking.register_version(uri, run_id, MODEL, retry=FAST)


class _Release(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # pragma: no cover - never loaded here
        return model_input


def register_pyfunc(store: tuple[str, str], release: Path, source_is_model_uri: bool) -> str:
    """A version that is an MLflow 3 pyfunc model (``MLmodel``, ``artifacts/release``), registered by
    ``runs:/<id>/model`` or by the logged model's own ``models:/m-...`` URI."""
    uri, artifacts = store
    run_id = _run_with(uri, artifacts)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # MLflow's fluent logging and its models:/m-... lookups read it
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name="model", python_model=_Release(), artifacts={"release": str(release)},
                                           pip_requirements=["onnxruntime"])
        source = info.model_uri if source_is_model_uri else f"runs:/{run_id}/model"
        mv = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).create_model_version(MODEL, source, run_id=run_id)
    finally:
        mlflow.set_tracking_uri(before)  # the service must not need the process-wide URI
    return str(mv.version)


def promote(store, version: str) -> None:
    tracking.promote(store[0], version, "tester", "serving test", MODEL, retry=FAST)


def close(a, b, path: str = "") -> None:
    """Equal, floats within 1e-5 (a batch pads texts differently; to_dict rounds to 6 decimals)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-5), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def served(releases, tmp_path_factory):
    """One service over release ``a`` (a folder), shared by the tests that only send requests."""
    with Served(holder_for(str(releases["a"]), tmp_path_factory.mktemp("cache"))) as s:
        s.ready()
        yield s


# ------------------------------------------------------------------------------ answers


def test_the_answers_are_moderate_s_own(served, releases):
    body = {"items": [TEXTS[0], {"text": TEXTS[1], "context": {"audience": "ADULT", "surface": "MESSAGE"}},
                      {"text": TEXTS[2]}, TEXTS[2]],
            "context": {"audience": "GENERAL", "surface": "REVIEW"}}
    r = served.moderate(body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == {"name": "release", "version": None, "alias": None,
                               "variant": OnnxClassifier(releases["a"]).variant}
    review, adult = ContextPrefix("GENERAL", "REVIEW"), ContextPrefix("ADULT", "MESSAGE")
    expected = moderate(OnnxClassifier(releases["a"]), [TEXTS[0], TEXTS[1], TEXTS[2], TEXTS[2]],
                        [review, adult, review, review])
    assert all(r.pop("model") == answer["model"] for r in answer["results"])  # each item names its model too
    close(answer["results"], [json.loads(json.dumps(e.to_dict(include_text=False))) for e in expected])
    assert answer["results"][0]["flags"][0]["category"] == "spam"  # release a flags spam on what it judges
    assert {f["category"] for r in answer["results"] for f in r["flags"]} == {"spam"}
    assert all("text" not in r for r in answer["results"])

    # no context anywhere: a text's own [AUDIENCE][SURFACE] prefix, else GENERAL/GENERAL
    plain = [{k: v for k, v in r.items() if k != "model"}
             for r in served.moderate({"items": [TEXTS[2], TEXTS[0]]}).json()["results"]]
    assert [p["context"] for p in plain] == [{"audience": "ADULT", "surface": "BIO"},
                                             {"audience": "GENERAL", "surface": "GENERAL"}]
    close(plain, [json.loads(json.dumps(e.to_dict(include_text=False)))
                  for e in moderate(OnnxClassifier(releases["a"]), [TEXTS[2], TEXTS[0]])])


MARK = "ZQXJ"  # in every bad input: no answer may quote it back
BAD = [
    ("too many items", {"items": [f"{MARK} {i}" for i in range(9)]}, "items"),
    ("text too long", {"items": [MARK * 100]}, "items[0]"),
    ("too long in an object", {"items": [{"text": MARK * 100}]}, "items[0].text"),
    ("no items", {"items": []}, "items"),
    ("no body keys", {}, "items"),
    ("lone surrogate in text", '{"items": ["%s \\ud83d"]}' % MARK, "items[0]: not valid UTF-8: lone surrogate U+D83D"),
    ("low surrogate first", '{"items": [{"text": "%s \\udc00\\ud800"}]}' % MARK, "items[0].text: not valid UTF-8"),
    ("surrogate in audience", '{"items": [{"text": "%s", "context": {"audience": "\\ud800"}}]}' % MARK,
     "items[0].context.audience"),
    ("surrogate in surface", '{"items": ["%s"], "context": {"surface": "BIO\\udfff"}}' % MARK, "context.surface"),
    ("surrogate in a key", '{"items": ["%s"], "\\ud800%s": 1}' % (MARK, MARK), "not valid UTF-8"),
    ("bytes not UTF-8", b'{"items": ["' + MARK.encode() + b' \xff\xfe"]}', "items[0]: not valid UTF-8: byte 0xff"),
    ("empty text", {"items": [MARK, ""]}, "items[1]"),
    ("spaces only", {"items": [{"text": "   \t "}]}, "items[0].text: text is empty"),
    ("invisible only", {"items": ["\u200b\u2060\ufeff"]}, "items[0]: text is empty"),
    ("unknown audience", {"items": [{"text": MARK, "context": {"audience": "KIDS" + MARK}}]},
     "items[0].context.audience: Input should be 'GENERAL' or 'ADULT'"),
    ("unknown surface", {"items": [MARK], "context": {"surface": "FORUM" + MARK}}, "context.surface"),
    ("unknown prefix in text", {"items": [f"[KIDS][BIO] {MARK}"]}, "items[0]: the text starts with an [AUDIENCE]"),
    ("unknown field", {"items": ["a"], "lang": MARK}, "lang: Extra inputs are not permitted"),
    ("items not a list", {"items": MARK}, "items: Input should be a valid list"),
    ("item a number", {"items": [MARK, 5]}, "items[1]"),
    ("text a number", {"items": [{"text": 5}]}, "items[0].text: Input should be a valid string"),
    ("context a string", {"items": [MARK], "context": "ADULT/BIO" + MARK}, "context"),
    ("audience a number", {"items": [{"text": MARK, "context": {"audience": 1}}]}, "items[0].context.audience"),
    ("body a list", [MARK], "body"),
    ("body a string", f'"{MARK}"', "body"),
    ("malformed JSON", '{"items": ["%s"' % MARK, "body: not valid JSON"),
    ("not JSON at all", f"{MARK} hello", "body: not valid JSON"),
    ("empty body", b"", "body: empty"),
    ("duplicate key", '{"items": ["%s"], "items": ["b"]}' % MARK, "body: duplicate key: the record names 'items' 2"),
    ("duplicate in context", '{"items": ["%s"], "context": {"surface": "BIO", "surface": "MESSAGE"}}' % MARK,
     "body: duplicate key: context names 'surface' 2 times"),
    ("nested too deep", "[" * 20000, "body: not valid JSON"),
    ("a number of 5000 digits", '{"items": [%s]}' % ("9" * 5000), "body: not valid JSON"),
    ("NaN", '{"items": [NaN]}', "items[0]"),
]


@pytest.mark.parametrize("name,body,named", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_briefly_never_with_a_500(served, name, body, named):
    data = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass") if isinstance(body, str) \
        else json.dumps(body).encode()
    r = served.client.post("/v1/moderate", content=data, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and named in detail, detail
    assert MARK not in r.text and len(r.text) < 1200, r.text


def test_a_body_over_the_limit_is_413_with_or_without_a_length(served):
    limit = SMALL.body_limit
    big = json.dumps({"items": ["x" * (limit + 10)]}).encode()
    r = served.client.post("/v1/moderate", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and f"over {limit} bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while reading
        yield b'{"items": ["'
        for _ in range(limit // 4096 + 2):
            yield b"y" * 4096
        yield b'"]}'

    r = served.client.post("/v1/moderate", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "y" * 50 not in r.text
    assert served.moderate({"items": ["still fine"]}).status_code == 200


def test_the_probes_the_docs_and_the_model_info(served, releases):
    assert served.client.get("/health").json() == {"status": "ok"}
    ready = served.client.get("/ready").json()
    assert ready["status"] == "ready" and ready["registry"] == "not used" and ready["model"]["name"] == "release"
    info = served.client.get("/v1/model").json()
    assert [c["name"] for c in info["categories"]] == list(LABELS)
    assert info["thresholds"]["spam"] == 0.0 and info["limits"] == {"max_batch_items": 8, "max_text_chars": 300}
    spec = served.client.get("/openapi.json").json()
    assert "/v1/moderate" in spec["paths"] and "Context" in spec["components"]["schemas"]
    docs = served.client.get("/docs")
    assert docs.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert assets and all(a.startswith("/docs-assets/") for a in assets), assets  # nothing from a CDN: works offline
    assert all(served.client.get(a).status_code == 200 for a in assets)


def test_model_references():
    assert ModelRef.parse("models:/content-moderation@champion") == ModelRef(name="content-moderation",
                                                                             alias="champion")
    assert ModelRef.parse("models:/content-moderation/12") == ModelRef(name="content-moderation", version="12")
    for bad in ("models:/content-moderation", "models:/x/latest", "runs:/abc/model", "s3://bucket/x", "/no/such"):
        with pytest.raises(ModelRefError):
            ModelRef.parse(bad)


# ------------------------------------------------------------------------------ the registry


def test_no_champion_yet_starts_anyway_and_says_how_to_fix_it(mlflow_store, releases, tmp_path):
    register(mlflow_store, releases["a"])  # version 1: a candidate, not champion
    with Served(holder_for(f"models:/{MODEL}@champion", tmp_path, mlflow_store[0])) as s:
        wait_for(lambda: s.holder.checked, 60, "never checked the registry")
        ready = s.client.get("/ready")
        assert ready.status_code == 503 and ready.json()["reason"].startswith(NO_CHAMPION)
        assert f"--model models:/{MODEL}/<version> or a folder" in ready.json()["reason"]
        assert s.client.get("/health").status_code == 200
        r = s.moderate({"items": ["hello"]})
        assert r.status_code == 503 and r.json()["detail"].startswith(NO_CHAMPION)
        assert s.client.get("/v1/model").status_code == 503
        assert s.moderate({"items": [""]}).status_code == 422  # bad input is still bad input

        promote(mlflow_store, "1")  # the poll finds it: no restart needed
        assert s.ready()["model"] == {"name": MODEL, "version": "1", "alias": "champion", "variant": "int8"
                                      if (releases["a"] / VARIANT_FILES["int8"]).exists() else "fp32"}
        assert s.moderate({"items": ["hello"]}).json()["model"]["version"] == "1"


def test_loading_by_alias_by_version_and_both_model_layouts(mlflow_store, releases, tmp_path):
    uri = mlflow_store[0]
    assert register(mlflow_store, releases["a"]) == "1"
    assert register_pyfunc(mlflow_store, releases["b"], source_is_model_uri=False) == "2"
    assert register_pyfunc(mlflow_store, releases["b"], source_is_model_uri=True) == "3"
    promote(mlflow_store, "1")
    for spec, version, flagged in [(f"models:/{MODEL}@champion", "1", "spam"), (f"models:/{MODEL}/2", "2", "threats"),
                                   (f"models:/{MODEL}/3", "3", "threats")]:
        with Served(holder_for(spec, tmp_path, uri)) as s:
            ready = s.ready()
            assert ready["model"]["version"] == version and ready["registry"] == "ok", ready
            answer = s.moderate({"items": [TEXTS[0]]}).json()
            assert answer["model"]["version"] == version and answer["results"][0]["flags"][0]["category"] == flagged
    cache = tmp_path / "serving-cache" / MODEL
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == ["1", "2", "3"]  # no temporary folder left
    assert (cache / "1" / "manifest.json").exists()  # the run's model/ artifacts are the release folder
    assert (cache / "2" / "MLmodel").exists() and (cache / "2" / "artifacts" / "release" / "manifest.json").exists()
    assert json.loads((cache / "3" / SOURCE_MARKER).read_text())["source"].startswith("models:/m-")


def test_an_alias_moved_under_load_fails_no_request(mlflow_store, releases, tmp_path):
    register(mlflow_store, releases["a"])  # flags spam
    register(mlflow_store, releases["b"])  # flags threats
    promote(mlflow_store, "1")
    expected_flag = {"1": "spam", "2": "threats"}
    with Served(holder_for(f"models:/{MODEL}@champion", tmp_path, mlflow_store[0])) as s:
        s.ready()
        seen: dict[int, list[str]] = {n: [] for n in range(4)}
        failures: list[str] = []
        sent, deadline = threading.Semaphore(0), time.monotonic() + 240

        def client(n: int) -> None:
            """At least 50 requests each, and on until this client has had 5 answers from version 2."""
            with httpx.Client(base_url=s.url, timeout=60) as c:
                i = 0
                while (i < 50 or seen[n][-5:] != ["2"] * 5) and time.monotonic() < deadline:
                    texts = [f"message {n}-{i}: {TEXTS[i % 2]}"] * (1 + i % 3)
                    r = c.post("/v1/moderate", json={"items": texts})
                    i += 1
                    sent.release()
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    answer = r.json()
                    version = answer["model"]["version"]
                    if {f["category"] for res in answer["results"] for f in res["flags"]} - {expected_flag[version]}:
                        failures.append(f"version {version} answered with another model's flags")
                    if any(res["model"] != answer["model"] for res in answer["results"]):
                        failures.append(f"an item of version {version}'s answer names another model")
                    seen[n].append(version)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for _ in range(40):  # clients are busy: now move the alias under them
            assert sent.acquire(timeout=120)
        promote(mlflow_store, "2")
        for t in threads:
            t.join(300)
        assert not failures, failures[:5]
        assert sum(len(v) for v in seen.values()) >= 200
        for versions in seen.values():  # each client: version 1, then version 2, never back
            assert versions[-1] == "2" and versions == sorted(versions, key=int), versions
        assert {v for versions in seen.values() for v in versions} == {"1", "2"}
        assert s.client.get("/ready").json()["model"]["version"] == "2" and s.holder.swaps == 1


def test_a_registry_outage_keeps_the_model_serving(mlflow_store, releases, tmp_path, caplog):
    register(mlflow_store, releases["a"])
    promote(mlflow_store, "1")
    db = Path(mlflow_store[0].removeprefix("sqlite:///"))
    with Served(holder_for(f"models:/{MODEL}@champion", tmp_path, mlflow_store[0])) as s:
        s.ready()
        saved = db.read_bytes()
        with open(db, "r+b") as fh:  # the store's file is no database any more: every query fails
            fh.write(b"not a database, " * 256)
        try:
            wait_for(lambda: s.client.get("/ready").json()["registry"].startswith("unreachable"), 60,
                     lambda: s.client.get("/ready").text)
            time.sleep(4 * SMALL.poll_s)  # several failed polls: still one warning
            ready = s.client.get("/ready")
            assert ready.status_code == 200 and ready.json()["model"]["version"] == "1", ready.text
            answer = s.moderate({"items": [TEXTS[0]]})
            assert answer.status_code == 200 and answer.json()["model"]["version"] == "1"
            families = metric_families(s.client.get("/metrics").text)
            assert sample(families, "moderation_registry_reachable") == 0
        finally:
            db.write_bytes(saved)
        wait_for(lambda: s.client.get("/ready").json()["registry"] == "ok", 60, "the registry never came back")
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "still serving version 1" in warnings[0], warnings
    assert any("reachable again" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------ metrics and the command


def metric_families(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict, family: str, suffix: str = "", **labels) -> float:
    return sum(s.value for s in families[family].samples
               if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_requests_batches_flags_and_actions(releases, tmp_path):
    slow = ServiceSettings(max_batch_items=8, max_text_chars=300, batch_wait_ms=300)
    with Served(holder_for(str(releases["a"]), tmp_path), slow) as s:
        s.ready()
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(s.moderate({"items": [TEXTS[0]]})))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        answers.append(s.moderate({"items": ["a", "b"]}))
        s.client.post("/v1/moderate", content=b"{")
        s.client.get("/nowhere")
        families = metric_families(s.client.get("/metrics").text)
    assert [a.status_code for a in answers] == [200] * 7
    results = [r for a in answers for r in a.json()["results"]]
    requests = "moderation_http_requests"
    assert sample(families, requests, "_total", route="/v1/moderate", status="200") == 7
    assert sample(families, requests, "_total", route="/v1/moderate", status="422") == 1
    assert sample(families, requests, "_total", route="unmatched", status="404") == 1
    assert sample(families, requests, "_total", route="/ready", status="200") >= 1
    assert sample(families, "moderation_http_request_seconds", "_count", route="/v1/moderate") == 8
    assert sample(families, "moderation_texts_scored", "_total") == 8
    batches = sample(families, "moderation_batch_items", "_count")
    assert sample(families, "moderation_batch_items", "_sum") == 8 and batches < 7  # requests were batched together
    assert sample(families, "moderation_flags", "_total", category="spam") == sum(len(r["flags"]) for r in results) >= 6
    assert sample(families, "moderation_flags", "_total", category="threats") == 0
    for action in default_policy().actions:
        assert sample(families, "moderation_actions", "_total", action=action) == sum(r["action"] == action
                                                                                      for r in results)
    assert sample(families, "moderation_model_info", name="release",
                  variant=OnnxClassifier(releases["a"]).variant) == 1
    assert sample(families, "moderation_model_loaded") == 1


def test_requests_that_arrive_together_share_a_batch_wider_than_one_request(releases, tmp_path):
    """max_batch_items limits a request; max_scored_items how many texts of several requests score together."""
    wide = ServiceSettings(max_batch_items=8, max_scored_items=24, max_text_chars=300, batch_wait_ms=400)
    with Served(holder_for(str(releases["a"]), tmp_path), wide) as s:
        s.ready()
        answers = []
        threads = [threading.Thread(target=lambda i=i: answers.append(s.moderate({"items": [f"{TEXTS[0]} {i}"] * 8})))
                   for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert s.moderate({"items": ["x"] * 9}).status_code == 422  # the per-request limit still holds
        families = metric_families(s.client.get("/metrics").text)
    assert [a.status_code for a in answers] == [200] * 3
    assert sample(families, "moderation_batch_items", "_sum") == 24
    assert sample(families, "moderation_batch_items", "_count") == 1  # three requests of 8, one batch of 24


def test_the_serve_command_refuses_a_model_it_cannot_read(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such folder" in result.output
    result = CliRunner().invoke(app, ["serve", "--model", "models:/content-moderation"])
    assert result.exit_code == 2 and "models:/<name>@<alias>" in result.output
