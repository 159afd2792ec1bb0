"""The ``clowdr share`` dashboard on real runs: the app's views and selection, live refresh after a real rerun,
I/O series and distributions by parameter value, the single-file export, escaping of tool output, the served app
in a real browser (Debian chromium), and the app under ``panel serve``."""
from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, SCRIPTS

pn = pytest.importorskip("panel")

from test_share_table import original_format_run

from clowdr.errors import InputError
from clowdr.share.app import USAGE_SOURCE, build_app
from clowdr.share.static import static_view

ECHO = EXAMPLES / "echo-tool.json"
XSS = "<script>alert(1)</script>"
MESSAGES = {"fails.json": "this one fails on purpose", "xss.json": XSS}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def make_run(clowdr, provdir: Path, invocations) -> Path:
    """examples/invocations plus a failing invocation and one whose message is a script tag; returns clowdr/."""
    files = {path.name: json.loads(path.read_text()) for path in (EXAMPLES / "invocations").glob("*.json")}
    files["fails.json"] = {"message": MESSAGES["fails.json"], "fail": True}
    files["xss.json"] = {"message": XSS}
    result = clowdr("local", ECHO, invocations(files), provdir)
    assert result.returncode == 1, result.stderr          # one task fails on purpose
    return result.meta


def rerun_failed(clowdr, provdir: Path, meta: Path) -> None:
    result = clowdr("local", ECHO, meta, provdir, "--rerun", "failed", "--run_id", meta.parent.name)
    assert result.returncode == 1, result.stderr          # it fails again, with its first attempt kept


def row_of(page, message: str) -> int:
    """The table row (and timeline bar) of the task printing MESSAGE."""
    return int(page.dashboard.frame.index[page.dashboard.frame["param.message"] == message][0])


def test_the_app_views_selection_and_live_refresh(clowdr, provdir, invocations):
    meta = make_run(clowdr, provdir, invocations)
    page = build_app(provdir, live=False)
    dash = page.dashboard
    table = dash.table.value
    assert len(table) == 5 and sorted(table["status"]) == ["failed"] + ["succeeded"] * 4
    assert {"status", "exitcode", "param.message", "param.repeat", "param.fail"} <= set(dash.table.header_filters)
    assert "tasks</div><div class='clowdr-stat-value'>5<" in dash.overview_pane.object
    assert "tool-error: 1" in dash.overview_pane.object
    assert list(dash.timeline_source.data["status"]) == list(dash.frame["status"])

    slow = row_of(page, "taking my time")
    dash.table.selection = [slow]                                      # a click in the table ...
    assert list(dash.timeline_source.selected.indices) == [slow]        # ... selects the bar
    assert dash.usage_source.data["label"] == [f"{meta.parent.name}/task-{dash.frame['task'][slow]}"]
    assert len(dash.usage_source.data["cpu"][0]) >= 2
    assert "taking my time" in dash.stdout_pane.object
    assert list(dash.attempts_pane.object["status"]) == ["succeeded"]

    xss = row_of(page, XSS)
    dash.timeline_source.selected.indices = [xss]                        # a tap on a bar selects the row
    assert dash.table.selection == [xss]
    assert html.escape(XSS) in dash.stdout_pane.object and XSS not in dash.stdout_pane.object

    failed = row_of(page, MESSAGES["fails.json"])
    dash.select([failed])
    rerun_failed(clowdr, provdir, meta)
    dash.refresh()
    assert int(dash.table.value["attempts"][failed]) == 2
    assert dash.table.selection == [failed]                               # still selected after the reload
    assert [a["attempt"] for a in dash.attempts_pane.object.to_dict("records")] == ["1", "2"]
    assert "wall time" in dash.overview_pane.object


def test_a_bad_location_is_an_input_error(tmp_path, clowdr):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError):
        build_app(tmp_path / "file.txt")
    result = clowdr("share", tmp_path / "missing")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


class _Resources(HTMLParser):
    """Every URL a page would load by itself: script src, link href, img/iframe src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src", "iframe": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def test_export_is_one_self_contained_file(clowdr, provdir, invocations, tmp_path):
    meta = make_run(clowdr, provdir, invocations)
    out = tmp_path / "export"
    out.mkdir()
    result = clowdr("share", provdir, "--export", out / "run.html")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["run.html"]
    text = (out / "run.html").read_text(encoding="utf-8")
    parser = _Resources()
    parser.feed(text)
    remote = [u for u in parser.urls if u.lower().startswith(("http:", "https:", "//"))]
    assert remote == [], remote
    assert not re.search(r"https?://[^\s\"'<>]+\.css", text)            # no stylesheet linked from inside the models
    assert "Bokeh" in text and "Tabulator" in text                    # the libraries are inlined, not linked
    assert "I/O (MiB, cumulative" in text and "Peak RAM (MiB)" in text  # I/O and distributions are exported too
    data = html.unescape(html.unescape(text))
    for message in ("hello", "taking my time", "world", MESSAGES["fails.json"]):
        assert message in data
    assert meta.parent.name in data
    assert XSS not in text                                              # never as live markup in the file


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def browser_ready() -> None:
    """Debian chromium and the playwright package, from scripts/browser-up.sh; skip only if they cannot be had."""
    done = subprocess.run(["bash", str(SCRIPTS / "browser-up.sh")], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHON": sys.executable})
    if done.returncode != 0 or not Path(CHROMIUM).exists():
        reason = f"chromium/playwright cannot be installed: {done.stderr.strip()[-500:]}"
        print(reason)
        pytest.skip(reason)


def _stop(server: subprocess.Popen) -> None:
    """Stop a server this test started, by its own pid (TERM, then KILL after 15 s)."""
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=15)


def _wait_for_server(proc: subprocess.Popen, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"clowdr share exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"clowdr share did not answer at {url} within {timeout} s")


def test_the_served_app_in_a_real_browser(browser_ready, clowdr, provdir, invocations, tmp_path):
    from playwright.sync_api import sync_playwright

    meta = make_run(clowdr, provdir, invocations)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = (tmp_path / "share.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "clowdr", "share", str(provdir), "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    external: list[str] = []
    dialogs: list[str] = []
    try:
        _wait_for_server(server, url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1700})

            def only_loopback(route) -> None:
                if route.request.url.startswith((f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/", "data:",
                                                 "blob:")):
                    route.continue_()
                else:
                    external.append(route.request.url)
                    route.abort()

            page.route("**/*", only_loopback)
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(url)
            rows = page.locator(".clowdr-tasks .tabulator-row")
            rows.first.wait_for(timeout=60_000)
            assert rows.count() == 5

            rows.filter(has_text="taking my time").first.click()
            page.locator(".clowdr-stdout pre", has_text="taking my time").wait_for(timeout=20_000)
            page.locator(".clowdr-usage canvas").first.wait_for(timeout=20_000)
            task = meta.parent.name + "/task-"
            drawn = page.wait_for_function(
                """([name, task]) => { for (const doc of window.Bokeh.documents) {
                       const source = doc.get_model_by_name(name);
                       if (source && source.data.label.length && source.data.label[0].startsWith(task)
                           && source.data.cpu[0].length >= 2) return source.data.label; }
                     return false; }""", arg=[USAGE_SOURCE, task], timeout=20_000).json_value()
            assert len(drawn) == 1
            page.wait_for_timeout(800)                       # let the plots finish drawing before the picture
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            rows.filter(has_text="alert(1)").first.click()
            shown = page.locator(".clowdr-stdout pre", has_text="alert(1)")
            shown.wait_for(timeout=20_000)
            assert shown.inner_text().strip() == XSS                   # shown as text, not run
            cell = rows.filter(has_text="alert(1)").first.locator("[tabulator-field='param.message']")
            assert cell.inner_text().strip() == XSS

            rerun_failed(clowdr, provdir, meta)                        # live: the page updates by itself
            failed_row = rows.filter(has_text=MESSAGES["fails.json"]).first
            attempts = failed_row.locator("[tabulator-field='attempts']")
            deadline = time.monotonic() + 30
            while attempts.inner_text().strip() != "2" and time.monotonic() < deadline:
                page.wait_for_timeout(500)
            assert attempts.inner_text().strip() == "2"
            page.screenshot(path=str(tmp_path / "dashboard-live.png"), full_page=True)
            browser.close()
    finally:
        _stop(server)
        log.close()
    assert external == [], external
    assert dialogs == [], dialogs
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


def test_io_of_the_selected_tasks(clowdr, provdir, invocations, tmp_path):
    meta = make_run(clowdr, provdir, invocations)
    page = build_app(provdir, live=False)
    dash = page.dashboard
    dash.select([])
    assert dash.io_source.data["label"] == []                          # nothing selected, nothing drawn
    slow = row_of(page, "taking my time")                              # sleeps 2 s: sampled several times
    dash.select([slow])
    key = f"{meta.parent.name}/task-{dash.frame['task'][slow]}"
    data = dash.io_source.data
    assert data["label"] == [key] and data["read_label"] == [f"{key} read"]
    assert len(data["xs"][0]) == len(data["read"][0]) == len(data["write"][0]) >= 2
    for series in (data["read"][0], data["write"][0]):
        assert all(value >= 0 for value in series)
        assert series == sorted(series)                                   # cumulative MiB never go down
    assert data["color"] == dash.usage_source.data["color"]              # a task keeps its colour across plots

    original_format_run(tmp_path / "oldprov")                            # time,cpu,ram only: no I/O columns
    old = build_app(tmp_path / "oldprov", live=False).dashboard
    old.select([int(row) for row in old.frame.index[old.frame["task"].isin([0, 1])]])   # both have samples
    assert len(old.usage_source.data["label"]) == 2
    assert old.io_source.data["label"] == [] and old.io_source.data["read"] == []
    static_view(tmp_path / "oldprov")                                     # and the export does not fail on it


def test_distributions_by_parameter_value_on_a_sweep(clowdr, provdir, tmp_path):
    result = clowdr("local", ECHO, EXAMPLES / "sweep.json", provdir, "--sweep", "message", "--sweep", "repeat")
    assert result.returncode == 0, result.stderr
    page = build_app(provdir, live=False)
    dash = page.dashboard
    assert len(dash.frame) == 6
    assert dash.param_select.options == {"message": "param.message", "repeat": "param.repeat"}
    assert dash.param_select.value == "param.message"
    boxes = dash.box_source.data
    assert list(boxes["value"]) == ["alpha", "beta", "gamma"] and list(boxes["tasks"]) == [2, 2, 2]
    assert list(dash.duration_figure.x_range.factors) == ["alpha", "beta", "gamma"]
    for column in ("duration", "peak_rss"):
        for low, q1, median, q3, high in zip(*(boxes[f"{column}_{part}"]
                                               for part in ("low", "q1", "median", "q3", "high"))):
            assert 0 <= low <= q1 <= median <= q3 <= high
    assert max(boxes["peak_rss_high"]) < 4096                          # MiB, not bytes
    assert len(dash.point_source.data["row"]) == 6

    dash.param_select.value = "param.repeat"                           # another parameter: one box per value
    assert list(dash.box_source.data["value"]) == ["1", "2"]
    assert list(dash.duration_figure.x_range.factors) == ["1", "2"]
    assert dash.duration_figure.xaxis[0].axis_label == "repeat"

    dash.point_source.selected.indices = [4]                            # a tap on a point selects the task
    assert dash.table.selection == [4] and list(dash.timeline_source.selected.indices) == [4]

    sweep = tmp_path / "messages.json"
    sweep.write_text(json.dumps({"message": ["delta", "epsilon", "zeta"]}))
    again = clowdr("local", ECHO, sweep, provdir, "--sweep", "message")
    assert again.returncode == 0, again.stderr                          # a second run: repeat unset on 3 tasks
    dash.refresh()
    assert len(dash.frame) == 9
    assert dash.param_select.value == "param.repeat"                    # the choice survives a refresh
    assert list(dash.box_source.data["value"]) == ["1", "2", "(unset)"]
    assert list(dash.box_source.data["tasks"]) == [3, 3, 3]
    assert dash.table.selection == [4]                                  # the earlier run's rows stay first

    exported = {pane.object.title.text: pane.object for pane in static_view(provdir).select(pn.pane.Bokeh)}
    duration = exported["Duration (s)"]                                  # the export draws the first parameter
    assert list(duration.x_range.factors) == ["alpha", "beta", "delta", "epsilon", "gamma", "zeta"]
    assert duration.xaxis[0].axis_label == "message"


def test_panel_serve_serves_the_app(clowdr, provdir, invocations, tmp_path):
    make_run(clowdr, provdir, invocations)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/panel_app"
    log = (tmp_path / "panel-serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", str(ROOT / "clowdr" / "share" / "panel_app.py"),
         "--address", "127.0.0.1", "--port", str(port), "--allow-websocket-origin", f"127.0.0.1:{port}",
         "--args", str(provdir)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        _wait_for_server(server, url)
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert answer.status == 200
            text = answer.read().decode("utf-8")
        assert "<title>clowdr share</title>" in text
    finally:
        _stop(server)
        log.close()
    output = (tmp_path / "panel-serve.log").read_text()
    assert "Traceback" not in output, output                              # the session was built without error
