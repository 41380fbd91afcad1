"""The report step: the run's page (reports/report.html) from realistic and older reports, checked in a real
headless Chromium, written by the stage in a project layout, logged to MLflow, and named by `status`.

Fixtures (tests/components/fixtures/report/): ``full`` has every section, a failing gate with checks from
every tier and a behavioural case whose text holds a ``<script>``; ``old`` is the checkout's real reports
from before the tiers (no generated/real/behaviour/co-occurrence sections, no plots).

The browser is Debian's chromium at /usr/bin/chromium (``make browser`` installs it; ``make test`` runs
that first), driven by playwright with no browser download of its own.
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.core.taxonomy import LABELS
from components.report import SECTIONS, real, report, verdict
from tests.project import BIN, clean_env, make_project

FIXTURES = Path(__file__).parent / "fixtures" / "report"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SCRIPT_CASE = "I'm not going to hurt you, I promise. <script>window.__pwned = 1</script>"
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


def _render(name: str, out_dir: Path) -> tuple[Path, dict]:
    src = FIXTURES / name
    out = out_dir / f"{name}.html"
    return out, report(src, out, data_dir=src / "data", model_name="content-moderation")


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Each fixture's page, rendered once for the module (an empty reports folder too)."""
    out = tmp_path_factory.mktemp("pages")
    empty = out / "empty-reports"
    empty.mkdir()
    rendered = {name: _render(name, out) for name in ("full", "old")}
    path = out / "empty.html"
    rendered["empty"] = (path, report(empty, path, data_dir=empty / "data", model_name="content-moderation"))
    return rendered


def _metrics(name: str) -> dict:
    return json.loads((FIXTURES / name / "metrics.json").read_text("utf-8"))


# ------------------------------------------------------------------------------ the page's content


def test_the_full_report_measures_every_section_and_names_every_check(pages):
    path, stats = pages["full"]
    page = path.read_text("utf-8")
    assert stats["sections"] == {s: True for s in SECTIONS} and stats["problems"] == []
    checks = _metrics("full")["gate"]["checks"]
    assert {c["tier"] for c in checks} == {"generated", "real", "behaviour", "release"}
    for check in checks:
        assert html.escape(check["name"]) in page, check["name"]
    for name in ("generated:f1_floor:threats", "real:roc_auc:threatgram:threats", "behaviour:regression:negated_threat",
                 "real:pr_auc_regression:email:scam_patterns", "behaviour:pass_rate:negated_threat", "parity",
                 "no_regression"):
        assert f"<td>{name}</td>" in page
    assert "Not measured" not in page


def test_failing_checks_come_first_within_their_tier_and_failing_tiers_first(pages):
    judged = verdict(_metrics("full"))
    groups = judged["groups"]
    assert [g["tier"] for g in groups] == ["generated", "real", "behaviour", "release"]  # all four fail here
    for g in groups:
        flags = [c["passed"] for c in g["checks"]]
        assert flags == sorted(flags) and not flags[0]
    assert judged["champion"]["text"] == "version 2, macro F1 0.9130" and judged["served"] == "fp32"


def test_case_texts_are_escaped_never_injected(pages):
    page = pages["full"][0].read_text("utf-8")
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page and SCRIPT_CASE in html.unescape(page)
    assert "<script" not in page.lower()
    assert html.escape("Nobody here wants to kill anyone & nobody will.") in page


def test_the_page_is_self_contained(pages):
    for name, (path, _) in pages.items():
        page = path.read_text("utf-8")
        assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= NAMESPACES, name
        targets = re.findall(r"(?:src|href)=\"([^\"]*)\"", page)
        assert all(t.startswith(("#", "data:")) for t in targets), name
        ids = re.findall(r"\bid=\"([^\"]+)\"", page)
        assert len(ids) == len(set(ids)), f"{name}: duplicate element ids"
        assert "Content-Security-Policy" in page and "<style>" in page


def test_categories_without_real_support_come_from_the_data():
    for name in ("full", "old"):
        unsupported = real(_metrics(name))["unsupported"]
        assert "adult_content" in unsupported and "csam" in unsupported
        assert "hate_speech" not in unsupported and "profanity" not in unsupported
        assert unsupported == [c for c in LABELS if c in unsupported]
    assert "threats" not in real(_metrics("full"))["unsupported"]  # threatgram is real text with threats
    assert "threats" in real(_metrics("old"))["unsupported"]  # no real source of threats then


def test_an_older_report_is_shown_with_what_it_has(pages):
    path, stats = pages["old"]
    page = path.read_text("utf-8")
    assert stats["problems"] == []
    measured = {s for s, ok in stats["sections"].items() if ok}
    assert {"verdict", "categories", "calibration", "robustness", "real", "environment", "sizes", "lineage"} <= measured
    assert {"curves", "cooccurrence", "behaviour"}.isdisjoint(measured)
    assert "Not measured: the behavioural suite was not run" in page
    assert "An older report" in page
    for check in _metrics("old")["gate"]["checks"]:
        assert f"<td>{html.escape(check['name'])}</td>" in page


def test_an_empty_reports_folder_still_gives_a_page(pages):
    path, stats = pages["empty"]
    page = path.read_text("utf-8")
    assert not any(stats["sections"].values())
    assert page.count("Not measured") == len(SECTIONS)
    assert stats["mlflow"] == {"logged": False, "run_id": None, "reason": stats["mlflow"]["reason"]}
    assert "registry.json" in stats["mlflow"]["reason"]


def test_an_unreadable_input_is_named_and_left_out(tmp_path):
    src = tmp_path / "reports"
    shutil.copytree(FIXTURES / "old", src)
    (src / "benchmark_env.json").write_text("{not json")
    stats = report(src, tmp_path / "r.html", data_dir=src / "data", model_name="content-moderation")
    assert stats["sections"]["environment"] is False and stats["sections"]["verdict"] is True
    assert any("benchmark_env.json" in p for p in stats["problems"])
    assert "benchmark_env.json could not be read" in (tmp_path / "r.html").read_text("utf-8")


def test_the_same_reports_give_the_same_page(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, _ = _render("old", tmp_path / "a")
    second, _ = _render("old", tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()


# ------------------------------------------------------------------------------ in a real browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A fresh headless Debian chromium (its own user-data-dir), driven by playwright."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the report's browser test needs Debian's chromium. Install it with "
                    "`make browser` (apt-get, as root or through sudo; `make test` runs it first), or as root "
                    "`apt-get install chromium`.", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e '.[dev]'` (or `make install`)", pytrace=False)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 900})
        try:
            yield context
        finally:
            context.close()


def _open(browser, path: Path):
    page = browser.new_page()
    seen = {"console": [], "errors": [], "requests": []}
    page.on("console", lambda m: seen["console"].append((m.type, m.text)))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    return page, seen


@pytest.mark.parametrize("name", ["full", "old", "empty"])
def test_the_page_renders_in_chromium_without_console_errors(browser, pages, name):
    import numpy as np
    from matplotlib.image import imread

    path, _ = pages[name]
    page, seen = _open(browser, path)
    try:
        shot = page.screenshot(full_page=True)
        assert page.locator("section > h2").count() == len(SECTIONS)
        assert "run report" in page.title()
        errors = [text for kind, text in seen["console"] if kind in ("error", "warning")]
        assert not errors and not seen["errors"], (errors, seen["errors"])
        assert seen["requests"] == [path.as_uri()]  # nothing else fetched: no fonts, images or scripts
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400  # fits the window: no sideways scroll
        pixels = imread(io.BytesIO(shot), format="png")
        assert len(shot) > 10_000 and pixels.shape[0] > 900 and float(np.std(pixels)) > 0.01
        if name == "full":
            assert page.locator("section#curves svg").count() == 2
            assert page.locator("section#calibration svg, section#cooccurrence svg").count() == 2
    finally:
        page.close()


def test_a_script_in_a_case_text_is_shown_as_text_and_never_runs(browser, pages):
    page, seen = _open(browser, pages["full"][0])
    try:
        assert page.evaluate("document.querySelectorAll('script').length") == 0
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("document.body.textContent").count(SCRIPT_CASE) == 1
        verdict = page.locator("section#verdict").inner_text()
        for check in _metrics("full")["gate"]["checks"]:
            assert check["name"] in verdict
        details = page.locator("section#behaviour details").first
        details.locator("summary").click()  # the failing cases open without any script
        assert SCRIPT_CASE in details.inner_text()
        assert not seen["errors"]
    finally:
        page.close()


# ------------------------------------------------------------------------------ the stage and `status`


def _reports_from(fixture: str, root: Path) -> Path:
    """The fixture as the project's reports folder (data statistics under reports/data)."""
    reports = root / "reports"
    if reports.exists():
        shutil.rmtree(reports)
    shutil.copytree(FIXTURES / fixture, reports)
    return reports


def _mlflow_run(root: Path) -> tuple[str, str]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("content-moderation", artifact_location=(root / "mlruns").as_uri())
    return uri, client.create_run(exp).info.run_id


def _set_run(reports: Path, run_id: str | None) -> None:
    registry = json.loads((reports / "registry.json").read_text("utf-8"))
    registry["run_id"] = run_id
    (reports / "registry.json").write_text(json.dumps(registry))


def test_the_stage_writes_the_page_and_logs_it_to_the_registered_run(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from components.core.params import Params
    from flows.stages import STAGES

    reports = _reports_from("old", tmp_path)
    uri, run_id = _mlflow_run(tmp_path)
    _set_run(reports, run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    stats = STAGES["report"](tmp_path, Params())
    assert (reports / "report.html").is_file() and stats["path"] == "reports/report.html"
    written = json.loads((reports / "report.json").read_text("utf-8"))
    assert written["stage"] == "report" and written["mlflow"]["logged"] is True
    artifacts = [a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id, "report")]
    assert artifacts == ["report/report.html"]
    assert written["mlflow"]["artifact_uri"].endswith("/report/report.html")
    logged = Path(written["mlflow"]["artifact_uri"].removeprefix("file://"))
    assert logged.read_bytes() == (reports / "report.html").read_bytes()


def test_without_a_reachable_store_the_page_is_still_written_and_says_why(tmp_path):
    import socket

    from components.tracking import RetryPolicy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    src = _reports_from("old", tmp_path)
    stats = report(src, src / "report.html", data_dir=src / "data", model_name="content-moderation",
                   tracking_uri=dead, retry=RetryPolicy(attempts=1, initial_wait=0))
    assert (src / "report.html").is_file()
    assert stats["mlflow"]["logged"] is False and "unavailable" in stats["mlflow"]["reason"]


def test_status_names_the_report_and_its_mlflow_copy(tmp_path):
    repo = make_project(tmp_path)
    reports = _reports_from("old", repo)
    _, run_id = _mlflow_run(repo)
    _set_run(reports, run_id)
    cli = str(BIN / "content-moderation")
    proc = subprocess.run([cli, "stage", "report"], cwd=repo, env=clean_env(repo), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([cli, "status"], cwd=repo, env=clean_env(repo), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"report: {(repo / 'reports' / 'report.html').resolve().as_uri()}" in proc.stdout
    assert re.search(rf"report in MLflow: file://\S+/report/report\.html \(run {run_id}\)", proc.stdout), proc.stdout
