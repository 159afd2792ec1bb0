"""The terminal progress line: shown on a terminal, silent otherwise; --verbose adds per-task lines."""
from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys

from conftest import DATA, ROOT
from clowdr.progress import Progress


def test_progress_line_counts_and_eta():
    stream = io.StringIO()
    progress = Progress(10, stream=stream, enabled=True)
    progress.update(3, 1, 2)
    text = stream.getvalue()
    assert "4/10 finished (3 ok, 1 failed), 2 running" in text and "elapsed 0:00:0" in text and "ETA" in text
    assert "--:--:--" in Progress(10, stream=io.StringIO(), enabled=True).line(0, 0, 0)


def test_progress_is_silent_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(10, stream=stream)
    progress.update(1, 0, 1)
    progress.close()
    assert stream.getvalue() == ""


def _run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "clowdr", *args], cwd=ROOT, stdin=follower, stdout=follower,
                               stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal_and_verbose_detail(invocations, provdir):
    directory = invocations({f"i{n}.json": {"seconds": 0.7} for n in range(4)})
    status, output = _run_on_a_terminal(["local", str(DATA / "sleep.json"), str(directory), str(provdir)])
    assert status == 0, output
    assert "4/4 finished (4 ok, 0 failed), 0 running" in output and "ETA" in output
    status, output = _run_on_a_terminal(["local", str(DATA / "sleep.json"), str(directory), str(provdir), "-V"])
    assert status == 0
    assert "task 3 attempt 1 succeeded" in output and "Dask dashboard: http://127.0.0.1:" in output


def test_log_lines_go_above_the_progress_line():
    import logging

    from clowdr.progress import ProgressLogHandler

    stream = io.StringIO()
    progress = Progress(4, stream=stream, enabled=True)
    progress.update(1, 0, 1)
    line = progress.line(1, 0, 1)
    handler = ProgressLogHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(logging.LogRecord("clowdr", logging.INFO, __file__, 1, "task 2 started", None, None))
    progress.close()
    text = stream.getvalue()
    cleared = "\r" + " " * len(line) + "\r"
    assert text.endswith(cleared + "task 2 started\n" + line + "\n")
