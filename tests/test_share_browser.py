"""The served dashboard and its static export in a real browser (Debian chromium through Playwright): the runs
table, drilling into a run, failed tasks first, a task's command and exit description, its attempts, empty plots
that say why, and a console with no error or warning."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, EXAMPLES, ROOT, run_clowdr

pytest.importorskip("panel")

from test_share_app import CHROMIUM, CHROMIUM_ARGS, _free_port, _stop, _wait_for_server, browser_ready  # noqa: F401

ECHO = EXAMPLES / "echo-tool.json"
EXIT_MEANING = "3: The user asked the tool to fail."
FAILING_COMMAND = "exit 3"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A provenance directory: a run of examples/invocations, then one of tests/data/echo-invocations whose
    failing task ran twice (``--rerun failed``). Returns it and both runs' ``clowdr/`` directories."""
    provdir = tmp_path_factory.mktemp("browser") / "prov"
    provdir.mkdir()
    first = run_clowdr("local", ECHO, EXAMPLES / "invocations", provdir)
    second = run_clowdr("local", ECHO, DATA / "echo-invocations", provdir)
    assert first.returncode == 0 and second.returncode == 1, second.stderr
    again = run_clowdr("local", ECHO, second.meta, provdir, "--rerun", "failed", "--run_id", second.meta.parent.name)
    assert again.returncode == 1, again.stderr
    return provdir, first.meta, second.meta


class Console:
    """What the page said on its console (errors and warnings) and any uncaught exception."""

    def __init__(self, page: Any) -> None:
        self.bad: list[str] = []
        page.on("console", lambda message: message.type in ("error", "warning") and self.bad.append(
            f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.bad.append(f"uncaught: {error}"))


def _open(playwright: Any, allowed: tuple[str, ...]) -> tuple[Any, Any, Console, list[str]]:
    """A headless chromium page that may load only ALLOWED URL prefixes (everything else is refused, listed)."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    refused: list[str] = []

    def only_allowed(route: Any) -> None:
        if route.request.url.startswith((*allowed, "data:", "blob:")):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_allowed)
    return browser, page, Console(page), refused


def _check_runs_table(page: Any, first: Path, second: Path) -> Any:
    runs = page.locator(".clowdr-runs .tabulator-row")
    runs.first.wait_for(timeout=60_000)
    assert runs.count() == 2
    assert second.parent.name in runs.nth(0).inner_text() and first.parent.name in runs.nth(1).inner_text()
    for n in range(2):
        text = runs.nth(n).inner_text()
        assert "echo-tool" in text and "1.0.0" in text and "clowdr local" in text and "local" in text
    assert "1 failed, 3 succeeded" in runs.nth(0).inner_text() and "3 succeeded" in runs.nth(1).inner_text()
    return runs


def test_the_served_app_shows_runs_and_what_failed(browser_ready, two_runs, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    provdir, first, second = two_runs
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = (tmp_path / "share.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "clowdr", "share", str(provdir), "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_for_server(server, url)
        with sync_playwright() as playwright:
            browser, page, console, refused = _open(playwright, (url, f"ws://127.0.0.1:{port}/"))
            page.goto(url)
            runs = _check_runs_table(page, first, second)
            tasks = page.locator(".clowdr-tasks .tabulator-row")
            tasks.first.wait_for(timeout=30_000)
            assert tasks.count() == 7                                     # every run's tasks at first
            assert "failed" in tasks.first.inner_text()                   # failed first

            runs.filter(has_text=second.parent.name).first.click()        # drill into the run that failed
            expect(tasks).to_have_count(4, timeout=20_000)
            overview = page.locator(".clowdr-overview h2", has_text=f"clowdr share: run {second.parent.name}")
            overview.wait_for(timeout=20_000)                             # every view follows the run picked
            row = tasks.first.inner_text()
            assert "failed" in row and "The user asked the tool to fail." in row and FAILING_COMMAND in row

            facts = page.locator(".clowdr-task-facts")                   # the failed task, shown at once
            facts.filter(has_text=EXIT_MEANING).wait_for(timeout=20_000)
            assert FAILING_COMMAND in facts.locator("pre").inner_text()
            assert "tool-error" in facts.locator(".clowdr-facts").inner_text()
            resources = facts.locator(".clowdr-resources").inner_text()
            assert "requested" in resources and "used" in resources and "MiB peak" in resources
            attempts = page.locator(".clowdr-attempts tbody tr")
            assert attempts.count() == 2 and "failed" in attempts.nth(0).inner_text()
            note = page.locator(".clowdr-usage-note i")
            assert "ended before its first usage sample" in note.inner_text()   # the empty plots say why

            tasks.filter(has_text="taking my time").first.click()         # a task sampled for 2 s
            note.filter(has_text="1 of 1 selected task(s) plotted").wait_for(timeout=20_000)
            page.locator(".clowdr-task-facts", has_text="0: success").wait_for(timeout=20_000)
            page.wait_for_timeout(500)                                   # let the plots finish drawing
            browser.close()
    finally:
        _stop(server)
        log.close()
    assert refused == [], refused
    assert console.bad == [], console.bad
    output = (tmp_path / "share.log").read_text()
    assert "Traceback" not in output and "Exception" not in output, output     # no callback failed either


def test_the_export_shows_runs_and_what_failed(browser_ready, two_runs, tmp_path):
    from playwright.sync_api import sync_playwright

    provdir, first, second = two_runs
    out = tmp_path / "share.html"
    result = run_clowdr("share", provdir, "--export", out)
    assert result.returncode == 0, result.stderr
    with sync_playwright() as playwright:
        browser, page, console, refused = _open(playwright, (out.as_uri(),))
        page.goto(out.as_uri())
        _check_runs_table(page, first, second)
        tasks = page.locator(".clowdr-tasks .tabulator-row")
        tasks.first.wait_for(timeout=30_000)
        assert tasks.count() == 7
        row = tasks.first.inner_text()
        assert "failed" in row and "The user asked the tool to fail." in row and FAILING_COMMAND in row
        assert all("failed" not in tasks.nth(n).inner_text() for n in range(1, 7))
        chosen = page.locator(".clowdr-chosen i").inner_text()
        assert chosen.split("In this order: ")[1].startswith(f"{second.parent.name}/task-3: failed")
        detail = page.locator(".clowdr-task-detail").first               # the first tab: the failed task
        assert EXIT_MEANING in detail.locator(".clowdr-facts").inner_text()
        assert FAILING_COMMAND in detail.locator("pre").first.inner_text()
        assert detail.locator("b", has_text="Attempts (2)").count() == 1
        assert detail.locator(".clowdr-attempts tbody tr").count() == 2
        assert "ended before its first usage sample" in page.locator(".clowdr-usage-note i").inner_text()
        page.wait_for_timeout(1000)                                      # every plot drawn
        browser.close()
    assert refused == [], refused
    assert console.bad == [], console.bad
