"""The non-blocking Python API: clowdr.launch returns a handle at once; the run goes on in the background."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import clowdr
from clowdr.errors import InputError
from conftest import DATA, write_json


def test_launch_returns_at_once_and_the_handle_follows_the_run(provdir, invocations):
    directory = invocations({f"i{n}.json": {"seconds": 4} for n in range(2)})
    handle = clowdr.launch(str(DATA / "sleep.json"), str(directory), str(provdir))
    assert not handle.done()
    assert handle.run_dir.is_dir() and handle.run_dir.name == "clowdr"
    outcome = handle.wait(timeout=120)
    assert handle.done() and outcome.exit_status == 0 and outcome.succeeded == 2
    assert handle.dask_dashboard_link.startswith("http://127.0.0.1:")
    for n in range(2):
        assert json.loads((handle.run_dir / f"task-{n}-summary.json").read_text())["status"] == "succeeded"
    run = json.loads((handle.run_dir / "run.json").read_text())
    assert run["command"][0] == "clowdr.launch"
    assert "done" in repr(handle)


def test_bad_input_raises_before_anything_is_written(provdir, tmp_path):
    with pytest.raises(InputError, match="seconds"):
        clowdr.launch(str(DATA / "sleep.json"), str(write_json(tmp_path / "bad.json", {"seconds": "x"})), str(provdir))
    assert list(provdir.iterdir()) == []


def test_cancel_stops_the_tools_ends_wait_with_a_cancelled_outcome_and_leaves_the_rest_for_rerun(provdir, tmp_path):
    pidfile = tmp_path / "tool.pid"
    descriptor = write_json(tmp_path / "long.json", {
        "name": "long", "tool-version": "1", "schema-version": "0.5", "description": "sleeps a minute",
        "command-line": f"echo $$ > {pidfile}; sleep 60 [X]",
        "inputs": [{"id": "x", "name": "x", "type": "String", "value-key": "[X]", "optional": True}]})
    handle = clowdr.launch(str(descriptor), str(write_json(tmp_path / "e.json", {})), str(provdir))
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    tool_pid = int(pidfile.read_text())
    handle.cancel()
    outcome = handle.wait(timeout=60)        # an outcome that says it was cancelled, not a LaunchStopped traceback
    assert outcome.cancelled and outcome.exit_status == 130 and (outcome.succeeded, outcome.failed) == (0, 0)
    time.sleep(0.5)
    assert not Path(f"/proc/{tool_pid}").exists() or "zombie" in Path(f"/proc/{tool_pid}/status").read_text().lower()
    assert not (handle.run_dir / "task-0-summary.json").exists()
    assert json.loads((handle.run_dir / "run.json").read_text())["launches"][-1]["status"] == "interrupted"
