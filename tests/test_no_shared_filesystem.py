"""Workers that share no filesystem with the client: the local back-end with ``shared-filesystem: false``, its
workers started in a mount namespace where the provenance directory is hidden (tests/preloads/hide_path.py).

Whatever a worker wrote into the provenance directory would land in a private tmpfs the client never sees, so
every file checked here can only have come from the client, through the events the workers sent.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, Result, hidden_from_workers, write_json

UNUSED = [{"id": "unused", "name": "unused", "type": "String", "value-key": "[UNUSED]", "optional": True}]

PROBE = {
    "name": "probe", "tool-version": "1", "schema-version": "0.5", "description": "what a worker can see",
    "command-line": "if [ -e [MARKER] ]; then echo visible; else echo hidden; fi; printf 'err-[MSG]' >&2; "
                    "echo [MSG] > out.txt; sleep [SECONDS]",
    "inputs": [{"id": "marker", "name": "marker", "type": "String", "value-key": "[MARKER]"},
               {"id": "msg", "name": "msg", "type": "String", "value-key": "[MSG]"},
               {"id": "seconds", "name": "seconds", "type": "Number", "value-key": "[SECONDS]"}],
    "output-files": [{"id": "out", "name": "out", "path-template": "out.txt"}],
}


@pytest.fixture
def hidden(tmp_path: Path):
    """Environment for a run whose workers cannot see ``provdir`` (their scratch space is in tmp_path)."""
    return lambda provdir: hidden_from_workers(provdir, tmp_path / "scratch")


def probe_run(clowdr, tmp_path: Path, provdir: Path, env: dict[str, str], name: str) -> Result:
    marker = provdir / "marker"
    marker.touch()
    descriptor = write_json(tmp_path / "probe.json", PROBE)
    directory = tmp_path / f"{name}-invocations"
    for n in range(3):
        write_json(directory / f"i{n}.json", {"marker": str(marker), "msg": f"m{n}", "seconds": 0.6})
    result = clowdr("local", descriptor, directory, provdir, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_every_record_is_complete_and_shaped_as_with_a_shared_filesystem(clowdr, tmp_path, hidden):
    shared_dir, hidden_dir = tmp_path / "shared", tmp_path / "hidden"
    shared_dir.mkdir(), hidden_dir.mkdir()
    shared = probe_run(clowdr, tmp_path, shared_dir, {}, "shared")
    apart = probe_run(clowdr, tmp_path, hidden_dir, hidden(hidden_dir), "hidden")
    assert sorted(p.name for p in apart.meta.iterdir()) == sorted(p.name for p in shared.meta.iterdir())
    for n in range(3):
        summary, reference = apart.summary(n), shared.summary(n)
        assert set(summary) - set(reference) == {"outputs_host"} and set(reference) <= set(summary)
        assert summary["status"] == "succeeded" and summary["samples"] >= 1
        assert (apart.meta / f"task-{n}-stdout.txt").read_text() == "hidden\n"        # the worker could not see it
        assert (shared.meta / f"task-{n}-stdout.txt").read_text() == "visible\n"
        assert (apart.meta / f"task-{n}-stderr.txt").read_text() == f"err-m{n}"
        with open(apart.meta / f"task-{n}-usage.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == summary["samples"] and float(rows[0]["time"]) > 0
        # outputs stay where the task ran, named with the host
        assert summary["outputs_host"] == summary["hostname"]
        assert summary["workdir"].startswith(str(tmp_path / "scratch"))
        assert Path(summary["outputs"][0]).read_text() == f"m{n}\n"
        assert json.loads((apart.meta / f"task-{n}.json").read_text())["taskloc"] is None
    assert not (hidden_dir / apart.meta.parent.name / "work").exists()      # nothing in the client's run
    run = json.loads((apart.meta / "run.json").read_text())
    assert run["launches"][0]["shared_filesystem"] is False


def test_a_rerun_keeps_every_attempt_complete(clowdr, tmp_path, hidden):
    provdir = tmp_path / "prov"
    provdir.mkdir()
    first = probe_run(clowdr, tmp_path, provdir, hidden(provdir), "first")
    again = clowdr("local", tmp_path / "probe.json", tmp_path / "first-invocations", provdir, "--rerun", "all",
                   "--run_id", first.meta.parent.name, env=hidden(provdir))
    assert again.returncode == 0, again.stderr
    for n in range(3):
        assert again.summary(n)["attempt"] == 2
        archived = first.meta / "attempts" / f"task-{n}" / "attempt-1"
        assert (archived / "stdout.txt").read_text() == "hidden\n"
        assert json.loads((archived / "summary.json").read_text())["status"] == "succeeded"
        assert (first.meta / f"task-{n}-stderr.txt").read_text() == f"err-m{n}"


def test_100_mb_of_stdout_arrives_whole_and_byte_identical(clowdr, tmp_path, provdir, hidden):
    size = 100 * 1024 * 1024
    descriptor = write_json(tmp_path / "big.json", {
        "name": "big", "tool-version": "1", "schema-version": "0.5", "description": "random bytes to stdout",
        "command-line": f"head -c {size} /dev/urandom | tee copy.bin [UNUSED]", "inputs": UNUSED, "output-files": [{"id": "copy", "name": "copy", "path-template": "copy.bin"}]})
    result = clowdr("local", descriptor, write_json(tmp_path / "i.json", {}), provdir, env=hidden(provdir))
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    received = result.meta / "task-0-stdout.txt"
    assert received.stat().st_size == size
    copy = Path(summary["outputs"][0])
    assert hashlib.sha256(received.read_bytes()).digest() == hashlib.sha256(copy.read_bytes()).digest()
    scratch_logs = copy.parent.parent
    assert not (scratch_logs / "stdout.txt").exists()          # the worker's copy is gone once shipped


def test_logs_reach_the_client_while_the_task_runs(tmp_path, provdir, hidden):
    descriptor = write_json(tmp_path / "slow.json", {
        "name": "slow", "tool-version": "1", "schema-version": "0.5", "description": "talks, then waits",
        "command-line": "echo first line; sleep 6; echo second line [UNUSED]", "inputs": UNUSED})
    process = subprocess.Popen([sys.executable, "-m", "clowdr", "local", str(descriptor),
                                str(write_json(tmp_path / "i.json", {})), str(provdir)], cwd=ROOT,
                               env={**os.environ, **hidden(provdir)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    seen_while_running = None
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        logs = list(provdir.glob("*/clowdr/task-0-stdout.txt"))
        if logs and logs[0].read_text() == "first line\n" and not list(provdir.glob("*/clowdr/task-0-summary.json")):
            seen_while_running = logs[0]
            break
        time.sleep(0.1)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert seen_while_running is not None, "the first line never arrived before the task ended"
    assert seen_while_running.read_text() == "first line\nsecond line\n"
