"""Regenerate docs/dashboard.png: real runs of the example tool, ``clowdr share`` served on loopback, Chromium.

Run from the repository:  python scripts/screenshot-dashboard.py [OUT.png]
Needs Debian chromium and the playwright package (scripts/browser-up.sh installs both). Three runs are made in a
temporary provenance directory (examples/invocations; a sweep; tests/data/echo-invocations, whose failing task is
run twice); the picture shows the runs table with the last run picked: its failed task first, with its command,
exit description, requested against used resources and attempts.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def clowdr(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clowdr", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def make_runs(provdir: Path) -> str:
    """Three runs; returns the id of the last one (which has a failed task with two attempts)."""
    echo = "examples/echo-tool.json"                     # relative to the repository: as a person types them
    clowdr("local", echo, "examples/invocations", provdir)
    clowdr("local", echo, "examples/sweep.json", provdir, "--sweep", "message", "--sweep", "repeat")
    last = clowdr("local", echo, "tests/data/echo-invocations", provdir)
    meta = Path(last.stdout.strip().splitlines()[-1])
    clowdr("local", echo, meta, provdir, "--rerun", "failed", "--run_id", meta.parent.name)
    return meta.parent.name


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    from clowdr.share.serve import free_port

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png"
    with tempfile.TemporaryDirectory() as tmp:
        provdir = Path(tmp) / "prov"
        provdir.mkdir()
        run_id = make_runs(provdir)
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        server = subprocess.Popen([sys.executable, "-m", "clowdr", "share", str(provdir), "--port", str(port)],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(url, timeout=5).close()
                    break
                except OSError:
                    time.sleep(0.3)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                page = browser.new_page(viewport={"width": 1400, "height": 1500})
                page.goto(url)
                runs = page.locator(".clowdr-runs .tabulator-row")
                runs.first.wait_for(timeout=60_000)
                runs.filter(has_text=run_id).first.click()
                expect(page.locator(".clowdr-tasks .tabulator-row")).to_have_count(4, timeout=30_000)
                page.locator(".clowdr-task-facts", has_text="The user asked the tool to fail").wait_for()
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1400, "height": 1500})
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(out)


if __name__ == "__main__":
    main()
