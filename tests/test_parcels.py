"""Short tasks travel in parcels (several task groups per Dask future), yet each is recorded as it ends, and a
stopped launch starts no task of a parcel already handed to a worker."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque

from clowdr.parcels import Parcels, take
from conftest import ROOT, write_json


def test_nothing_is_parcelled_before_tools_are_seen_to_end_nor_long_tools_ever():
    parcels = Parcels(slots=2, target=0.5)
    assert parcels.in_flight == 4 and parcels.size(waiting=1000) == 1
    for _ in range(3):
        parcels.ended(0.005)
    assert parcels.size(waiting=1000) == 100          # half a second of 5 ms tools
    assert parcels.size(waiting=10) == 3               # a fair share of what waits: the last parcels are small
    long = Parcels(slots=2, target=0.5)
    long.ended(30.0)
    assert long.size(waiting=1000) == 1
    off = Parcels(slots=2, target=0)
    off.ended(0.001)
    assert off.size(waiting=1000) == 1


def test_a_parcel_holds_whole_groups():
    ready = deque([[1, 2], [3], [4, 5, 6], [7]])
    assert take(ready, 3) == [1, 2, 3]
    assert take(ready, 1) == [4, 5, 6]                # one group at least, never split
    assert list(ready) == [[7]]


def sleeper(tmp_path):
    return write_json(tmp_path / "sleeper.json", {
        "name": "sleeper", "tool-version": "1", "schema-version": "0.5", "description": "notes its start, sleeps",
        "command-line": f"echo [N] >> {tmp_path}/started; sleep [S]",
        "inputs": [{"id": "n", "name": "n", "type": "Number", "integer": True, "value-key": "[N]"},
                   {"id": "s", "name": "s", "type": "String", "value-key": "[S]"}]})


def test_short_tasks_travel_together_and_each_is_recorded_as_it_ends(tmp_path, provdir):
    long = {20, 30, 40, 50}
    directory = tmp_path / "invocations"
    directory.mkdir()
    for n in range(60):
        write_json(directory / f"i{n:02d}.json", {"n": n, "s": "1" if n in long else "0"})
    done = subprocess.run([sys.executable, "-m", "clowdr", "local", str(sleeper(tmp_path)), str(directory),
                           str(provdir), "-V"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    meta = provdir / next(os.scandir(provdir)).name / "clowdr"
    parcels = [[int(i) for i in found.split(",")] for found in re.findall(r"tasks ([\d,]+) travel together",
                                                                          done.stderr)]
    assert parcels, done.stderr                   # 56 of 60 trivial tools: they do not go one future each
    summaries = {n: json.loads((meta / f"task-{n}-summary.json").read_text()) for n in range(60)}
    assert all(s["status"] == "succeeded" and s["start_time"] and s["worker"] for s in summaries.values())
    checked = 0
    for parcel in parcels:
        for position, n in enumerate(parcel):
            if n not in long:
                continue
            ended = os.stat(meta / f"task-{n}-summary.json").st_mtime
            for earlier in parcel[:position]:      # recorded while the long tool still ran, not with the parcel
                assert os.stat(meta / f"task-{earlier}-summary.json").st_mtime < ended - 0.5
                checked += 1
    assert checked, parcels


def test_a_stopped_launch_starts_nothing_more_and_rerun_runs_each_task_once(tmp_path, provdir):
    directory = tmp_path / "invocations"
    directory.mkdir()
    for n in range(300):
        write_json(directory / f"i{n:03d}.json", {"n": n, "s": "0.05"})
    process = subprocess.Popen([sys.executable, "-m", "clowdr", "local", str(sleeper(tmp_path)), str(directory),
                                str(provdir), "-V"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    started = tmp_path / "started"
    deadline = time.monotonic() + 120
    while (not started.exists() or len(started.read_text().split()) < 40) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "travel together" in stderr                       # the stop came while parcels were out
    after_stop = started.read_text()
    time.sleep(1.0)
    assert started.read_text() == after_stop                 # no tool started once the client had gone
    meta = provdir / next(os.scandir(provdir)).name / "clowdr"
    # every tool that ran is in the record: ended (a summary), or cut short by the stop (an archived attempt)
    for n in {int(n) for n in after_stop.split()}:
        archived = meta / "attempts" / f"task-{n}" / "attempt-1" / "summary.json"
        assert (meta / f"task-{n}-summary.json").exists() or (
            json.loads(archived.read_text())["failure"] == "cancelled"), n
    again = subprocess.run([sys.executable, "-m", "clowdr", "local", str(tmp_path / "sleeper.json"), str(directory),
                            str(provdir), "--rerun", "incomplete", "--run_id", meta.parent.name],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    for n in range(300):
        assert json.loads((meta / f"task-{n}-summary.json").read_text())["status"] == "succeeded"
    runs = [int(n) for n in started.read_text().split()]
    finished_first = {n for n in range(300) if json.loads((meta / f"task-{n}-summary.json").read_text())
                      ["attempt"] == 1}
    # a task the first launch finished never ran again; every other ran once more, at most twice in all
    assert all(runs.count(n) == 1 for n in finished_first)
    assert all(runs.count(n) <= 2 for n in range(300))
