"""The example notebook, executed headless (nbclient) and live in JupyterLab in a real browser: it launches a run,
shows the dashboard (whose counts change while the run goes on), reads the record."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT
from test_share_app import CHROMIUM, CHROMIUM_ARGS, browser_ready  # noqa: F401 - fixture: Debian chromium + playwright


def test_the_example_notebook_runs_headless(provdir, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the test extras install nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the test extras install nbclient")
    monkeypatch.setenv("CLOWDR_EXAMPLE_PROVDIR", str(provdir))
    monkeypatch.setenv("CLOWDR_EXAMPLES", str(EXAMPLES))
    notebook = nbformat.read(EXAMPLES / "clowdr-notebook.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=180, kernel_name="python3").execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    text = "\n".join(str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", "")) for output in outputs)
    assert "3 succeeded, 0 failed" in text
    dashboard = [o for o in outputs if "application/vnd.holoviews_load.v0+json" in o.get("data", {})
                 or "text/html" in o.get("data", {}) or "application/vnd.bokehjs_exec.v0+json" in o.get("data", {})]
    assert dashboard, "the dashboard cell displayed nothing"
    assert list(provdir.glob("*/clowdr/task-2-summary.json"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def jupyter_server(tmp_path: Path):
    """A real JupyterLab server on 127.0.0.1 serving a copy of the example notebook, killed by its pid at the end.

    Its kernels run this checkout's clowdr, their runs written to a provdir of the test's, over invocations that
    take 4, 8 and 12 s so that the dashboard has time to show the counts change."""
    pytest.importorskip("jupyterlab", reason="the test extras install jupyterlab")
    root = tmp_path / "lab"
    examples = tmp_path / "examples"
    for directory in (root, examples / "invocations", tmp_path / "prov"):
        directory.mkdir(parents=True)
    shutil.copy(EXAMPLES / "clowdr-notebook.ipynb", root / "clowdr-notebook.ipynb")
    shutil.copy(EXAMPLES / "echo-tool.json", examples / "echo-tool.json")
    for number, seconds in enumerate((4, 8, 12)):
        (examples / "invocations" / f"task{number}.json").write_text(
            json.dumps({"message": f"task {number}", "seconds": seconds}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "CLOWDR_EXAMPLE_PROVDIR": str(tmp_path / "prov"), "CLOWDR_EXAMPLES": str(examples),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
                               "--ServerApp.port_retries=0", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
                               "jupyterlab.NeverCheckForUpdate"],
                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "jupyter.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "JupyterLab did not answer within 120 s"
                time.sleep(0.5)
        yield base, token, tmp_path / "prov"
    finally:
        server.terminate()                       # its own pid: the kernels it started end with it
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        log.close()


def _start_kernel(base: str, token: str, path: str) -> None:
    """A python3 kernel session for the notebook, through the server's REST API."""
    body = json.dumps({"path": path, "name": path, "type": "notebook", "kernel": {"name": "python3"}}).encode()
    request = urllib.request.Request(f"{base}/api/sessions?token={token}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        assert answer.status == 201


def _succeeded(text: str) -> int | None:
    found = re.search(r"succeeded: (\d+)", text)
    return int(found.group(1)) if found else None


def test_the_example_notebook_live_in_jupyterlab_in_a_real_browser(browser_ready, jupyter_server):
    """Run All in JupyterLab, in Debian chromium: the dashboard's counts change as the run goes (while the next
    cell waits for the run), no reload."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    base, token, provdir = jupyter_server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        external: list[str] = []
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("crash", lambda _: console.append("the page crashed (chromium's renderer)"))
        browser.on("disconnected", lambda _: console.append("the browser went away (chromium crashed or was killed)"))

        def only_loopback(route) -> None:
            if route.request.url.startswith((base, base.replace("http", "ws"), "data:", "blob:")):
                route.continue_()
            else:
                external.append(route.request.url)
                route.abort()

        page.route("**/*", only_loopback)
        loads: list[str] = []
        page.on("load", lambda p: loads.append(p.url))
        _start_kernel(base, token, "clowdr-notebook.ipynb")      # the page finds its kernel: no "Select Kernel"
        page.goto(f"{base}/lab/tree/clowdr-notebook.ipynb?token={token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        select = page.locator(".jp-Dialog button", has_text="Select")   # JupyterLab may ask which kernel to use
        try:
            select.click(timeout=20_000)
        except PlaywrightTimeout:
            pass
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=120_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.locator("li[data-command='runmenu:run-all']").click()
        page.locator(".jp-InputArea-prompt", has_text="[1]").first.wait_for(timeout=120_000)   # the cells run
        stats = page.locator(".jp-OutputArea-output .clowdr-stat", has_text="by status")   # inside Bokeh's shadow DOM
        try:
            stats.first.wait_for(timeout=120_000)
        except PlaywrightError as exc:      # a time-out, or the page or browser gone: say what the browser said
            raise AssertionError(f"no dashboard ({type(exc).__name__}); the browser said: {console[-20:]}; "
                                 f"refused: {external}") from None
        seen: list[str] = []                     # each text the "by status" cell showed, in turn
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            text = " ".join(stats.first.inner_text().split())
            if not seen or seen[-1] != text:
                seen.append(text)
            if _succeeded(text) == 3:
                break
            page.wait_for_timeout(250)
        assert _succeeded(seen[-1]) == 3, f"the dashboard's counts went {seen}"
        assert {1, 2} & {_succeeded(text) for text in seen}, f"the dashboard did not follow the run as it went: {seen}"
        assert len(loads) == 1, f"the page was loaded again: {loads}"
        page.locator(".jp-OutputArea-output", has_text="3 succeeded, 0 failed").first.wait_for(timeout=60_000)
        browser.close()
    assert len(list(provdir.glob("*/clowdr/task-*-summary.json"))) == 3
