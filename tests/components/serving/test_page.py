"""The service's page (/) in a real headless Chromium against the real service: type texts, pick a
context, submit; one card per text with its action, 18 bars against their thresholds (flagged ones
marked), the language verdict and the model; a shared link (?text=...) runs by itself; text is
shown as text, never run; nothing is fetched from elsewhere and the console stays clean.

The browser is Debian's chromium, driven by playwright as the report's test does (``make browser``).
The screenshot goes to reports/service_page.png when the tests run in the project itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlencode

import pytest

from components.core.taxonomy import LABELS
from tests.components.serving.support import SMALL, Served, holder_for, release
from tests.components import test_report
from tests.conftest import ROOT

chromium = test_report.browser  # the report test's fixture: Debian's chromium, headless, driven by playwright

SCRIPT = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script> you are lovely"


@pytest.fixture(scope="module")
def service(tiny_exported, tmp_path_factory):
    """The service over the tiny model with spam always flagged and every other threshold at 0.25."""
    folder = release(tiny_exported[0] / "onnx", tmp_path_factory.mktemp("page") / "release", "spam", others=0.25)
    with Served(holder_for(str(folder), tmp_path_factory.mktemp("cache")), SMALL) as s:
        s.ready()
        yield s


def _open(chromium, url: str):
    page = chromium.new_page()
    page.set_viewport_size({"width": 1100, "height": 860})
    seen = {"console": [], "errors": [], "requests": []}
    page.on("console", lambda m: seen["console"].append((m.type, m.text)))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(url, wait_until="load")
    return page, seen


def _wait_done(page) -> None:
    page.wait_for_selector("#results[data-state=done], #results[data-state=error]", state="attached", timeout=60_000)
    assert page.get_attribute("#results", "data-state") == "done", page.inner_text("#status")


def test_typing_texts_and_submitting_shows_each_result(chromium, service, tmp_path):
    page, seen = _open(chromium, service.url + "/")
    try:
        page.locator("#audience option").first.wait_for(state="attached")  # no wait_for_function: the CSP forbids eval
        page.fill("#texts", f"I am going to hurt you tonight\n\n{SCRIPT}")
        page.select_option("#audience", "ADULT")
        page.select_option("#surface", "MESSAGE")
        page.click("#submit")
        _wait_done(page)

        expected = service.moderate({"items": ["I am going to hurt you tonight", SCRIPT],
                                     "context": {"audience": "ADULT", "surface": "MESSAGE"}}).json()
        cards = page.locator("article.result")
        assert cards.count() == 2
        for i, result in enumerate(expected["results"]):
            card = cards.nth(i)
            assert card.locator(".action").inner_text().lower() == result["action"]
            assert card.locator("li.bar").count() == len(LABELS)
            flagged = [card.locator("li.bar.flagged .name").nth(j).inner_text()
                       for j in range(card.locator("li.bar.flagged").count())]
            assert sorted(flagged) == sorted(f["category"] for f in result["flags"])
            meta = card.locator(".meta").inner_text()
            assert f"language: {result['language']['code']}" in meta and "context: ADULT/MESSAGE" in meta
            assert "model: release version –" in meta
        assert "spam" in cards.nth(0).locator("li.bar.flagged .name").all_inner_texts()
        # the text is shown as text: its markup neither renders nor runs
        assert cards.nth(1).locator(".text").inner_text() == SCRIPT
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.locator("article img, article script").count() == 0
        assert "2 texts moderated" in page.inner_text("#status")
        assert "?text=" in page.url  # the form is now a link that can be shared

        errors = [text for kind, text in seen["console"] if kind in ("error", "warning")]
        assert not errors and not seen["errors"], (errors, seen["errors"])
        assert all(url.startswith(service.url) for url in seen["requests"]), seen["requests"]

        shot = tmp_path / "service_page.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        if Path.cwd().resolve() == ROOT and (ROOT / "reports").is_dir():
            shutil.copy(shot, ROOT / "reports" / "service_page.png")
    finally:
        page.close()


def test_a_shared_link_fills_the_form_and_runs_by_itself(chromium, service):
    query = urlencode([("text", "hello there, how are you?"), ("text", "selling my bike"), ("audience", "ADULT"),
                       ("surface", "BIO")])
    page, seen = _open(chromium, f"{service.url}/?{query}")
    try:
        _wait_done(page)
        assert page.locator("article.result").count() == 2
        assert page.input_value("#texts") == "hello there, how are you?\nselling my bike"
        assert page.input_value("#audience") == "ADULT" and page.input_value("#surface") == "BIO"
        assert "context: ADULT/BIO" in page.locator("article.result .meta").first.inner_text()
        assert not seen["errors"]
    finally:
        page.close()


def test_refused_input_is_shown_with_the_service_s_reason(chromium, service):
    page, seen = _open(chromium, service.url + "/")
    try:
        page.locator("#audience option").first.wait_for(state="attached")  # no wait_for_function: the CSP forbids eval
        page.uncheck("#per-line")
        page.fill("#texts", "x" * (SMALL.max_text_chars + 1))
        page.click("#submit")
        page.wait_for_selector("#results[data-state=error]", state="attached", timeout=60_000)
        assert page.inner_text("#status").startswith("422: invalid request: items[0]: String should have at most")
        assert page.locator("article.result").count() == 0 and not seen["errors"]
    finally:
        page.close()
