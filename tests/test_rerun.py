"""--rerun on runs written by clowdr and by the original tool, and ``clowdr task``: attempts are never lost."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, EXAMPLES, ROOT, write_json

ECHO = EXAMPLES / "echo-tool.json"


def snapshot(directory: Path) -> dict[str, tuple[bytes, float]]:
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_rerun_failed_keeps_the_earlier_attempt(clowdr, provdir):
    first = clowdr("local", ECHO, DATA / "echo-invocations", provdir)
    assert first.returncode == 1
    meta = first.meta
    run_id = meta.parent.name
    before = snapshot(meta)
    again = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--rerun", "failed", "--run_id", run_id)
    assert again.returncode == 1 and again.meta == meta
    after = snapshot(meta)
    for n in range(3):    # the tasks that succeeded are untouched
        for kind in ("summary.json", "stdout.txt", "usage.csv"):
            assert after[f"task-{n}-{kind}"] == before[f"task-{n}-{kind}"]
    summary = again.summary(3)
    assert summary["attempt"] == 2 and summary["exitcode"] == 3
    history = meta / "attempts" / "task-3" / "attempt-1"
    assert json.loads((history / "summary.json").read_text())["attempt"] == 1
    assert (history / "stdout.txt").read_bytes() == before["task-3-stdout.txt"][0]
    run = json.loads((meta / "run.json").read_text())
    assert [launch["mode"] for launch in run["launches"]] == ["new", "rerun-failed"]
    assert run["launches"][1]["tasks"] == [3]
    third = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "-R", "failed", "--run_id", run_id)
    assert third.summary(3)["attempt"] == 3
    assert sorted(p.name for p in (meta / "attempts" / "task-3").iterdir()) == ["attempt-1", "attempt-2"]


def test_rerun_incomplete_after_a_crash(clowdr, provdir):
    first = clowdr("local", ECHO, DATA / "echo-invocations", provdir)
    meta = first.meta
    (meta / "task-1-summary.json").unlink()          # as if the client died while task 1 ran
    again = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--rerun", "incomplete", "--run_id",
                   meta.parent.name)
    assert again.returncode == 0, again.stderr
    assert again.summary(1)["attempt"] == 2          # its logs from the lost attempt 1 were kept
    assert (meta / "attempts" / "task-1" / "attempt-1" / "stdout.txt").exists()
    run = json.loads((meta / "run.json").read_text())
    assert run["launches"][-1]["tasks"] == [1]


def test_rerun_incomplete_after_a_setup_killed_while_recording(clowdr, provdir, tmp_path):
    """kill -9 while --setup writes its tasks' files: each file written is whole, none half-written or left under
    a temporary name, and --rerun incomplete runs every task, those whose files never got written included."""
    count = 2000
    invocations = tmp_path / "invocations"
    invocations.mkdir()
    for n in range(count):
        write_json(invocations / f"inv-{n:04d}.json", {"number": n})
    descriptor = tmp_path / "trivial.json"
    write_json(descriptor, {"name": "trivial", "tool-version": "1", "schema-version": "0.5",
                            "description": "echo a number", "command-line": "echo [NUMBER]",
                            "inputs": [{"id": "number", "name": "n", "type": "Number", "integer": True,
                                        "value-key": "[NUMBER]"}]})
    setup = subprocess.Popen([sys.executable, "-m", "clowdr", "local", descriptor, invocations, provdir, "--setup"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not list(provdir.glob("*/clowdr/task-0.json")) and setup.poll() is None:
            assert time.monotonic() < deadline, "--setup recorded no task in 120 s"
            time.sleep(0.001)
        setup.kill()
    finally:
        setup.kill()
        setup.wait(timeout=30)
    assert setup.returncode == -signal.SIGKILL, "--setup ended before it was killed: record more tasks"
    [meta] = provdir.glob("*/clowdr")
    written = {int(p.name[5:-5]) for p in meta.glob("task-*.json")}
    assert 0 in written and len(written) < count
    leftovers = [p.name for p in meta.iterdir() if p.name.startswith(".")]
    assert not leftovers
    for path in meta.glob("*.json"):
        json.loads(path.read_text())                 # whole, every one
    again = clowdr("local", descriptor, invocations, provdir, "--rerun", "incomplete", "--run_id", meta.parent.name)
    assert again.returncode == 0, again.stderr
    summaries = again.summaries()
    assert sorted(summaries) == list(range(count))
    assert all(s["exitcode"] == 0 for s in summaries.values())
    assert (meta / f"task-{count - 1}-stdout.txt").read_text() == f"{count - 1}\n"
    assert json.loads((meta / "run.json").read_text())["launches"][-1]["tasks"] == list(range(count))


def test_rerun_incomplete_reads_a_plan_written_whole(clowdr, provdir):
    """plan.json as earlier versions wrote it (the same object on one line) still names the unrecorded tasks."""
    first = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--setup")
    meta = first.meta
    plan = meta / "plan.json"
    assert plan.read_text().count("\n") == 6                  # a task per line, between the head and the end
    plan.write_text(json.dumps(json.loads(plan.read_text())))
    for n in (2, 3):
        (meta / f"task-{n}.json").unlink()                   # as if --setup was cut short after task 1
    again = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--rerun", "incomplete", "--run_id",
                   meta.parent.name)
    assert again.returncode == 1                             # one of the four echo tasks fails by design
    assert sorted(again.summaries()) == [0, 1, 2, 3]
    assert json.loads((meta / "task-3.json").read_text())["invocation"].endswith(".json")


def test_rerun_all_with_other_options(clowdr, provdir, tmp_path):
    first = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--setup")
    workdir = tmp_path / "elsewhere"
    again = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--rerun", "all", "--run_id",
                   first.meta.parent.name, "-g", "2", "-w", workdir)
    assert again.returncode == 1
    assert sorted(again.summaries()) == [0, 1, 2, 3]
    assert all(s["attempt"] == 1 and s["workdir"] == str(workdir) for s in again.summaries().values())
    assert (workdir / "planet.txt").exists()


@pytest.fixture
def original_run(tmp_path: Path) -> tuple[Path, str]:
    """A run directory in the original tool's format, its paths from another machine (see legacy-clowdr.md)."""
    provdir = tmp_path / "oldprov"
    run_id = "2019-03-04_10-11-12-ABCD1234"
    meta = provdir / run_id / "clowdr"
    meta.mkdir(parents=True)
    old = f"/home/someone/prov/{run_id}/clowdr"
    shutil.copy(ECHO, meta / "echo-tool.json")
    for n, message in enumerate(["first", "second", "third"]):
        write_json(meta / f"invocation-{n}.json", {"message": message})
        write_json(meta / f"task-{n}.json", {"tool": f"{old}/echo-tool.json", "invocation": f"{old}/invocation-{n}.json",
                                             "dataloc": ["localhost"], "taskloc": f"/home/someone/work/{n}"})
    for n, code in ((0, 0), (1, 1)):
        write_json(meta / f"task-{n}-summary.json", {
            "duration": 4.0, "exitcode": code, "launchtime": "2019-03-04 10:11:13", "outputs": [],
            "stdout": f"{old}/task-{n}-stdout.txt", "stderr": f"{old}/task-{n}-stderr.txt", "usage": f"{old}/task-{n}-usage.csv"})
        (meta / f"task-{n}-usage.csv").write_text("time,cpu,ram\n0,0.0,90.1\n")
        (meta / f"task-{n}-stdout.txt").write_text(f"old output {n}\n")
        (meta / f"task-{n}-stderr.txt").write_text("")
    return provdir, run_id


def test_rerun_failed_on_an_original_tool_run(clowdr, original_run):
    provdir, run_id = original_run
    meta = provdir / run_id / "clowdr"
    result = clowdr("local", ECHO, meta / "invocation-0.json", provdir, "--rerun", "failed", "--run_id", run_id)
    assert result.returncode == 0, result.stderr
    assert sorted(result.summaries()) == [0, 1]                 # task 2 never ran: not "failed"
    summary = result.summary(1)
    assert summary["attempt"] == 2 and summary["exitcode"] == 0
    assert (meta / "task-1-stdout.txt").read_text() == "second\n"
    archived = meta / "attempts" / "task-1" / "attempt-1"
    assert json.loads((archived / "summary.json").read_text())["exitcode"] == 1
    assert (archived / "stdout.txt").read_text() == "old output 1\n"
    assert json.loads((meta / "task-0-summary.json").read_text())["duration"] == 4.0   # untouched


def test_rerun_incomplete_on_an_original_tool_run(clowdr, original_run):
    provdir, run_id = original_run
    result = clowdr("local", ECHO, "unused.json", provdir, "--rerun", "incomplete", "--run_id", run_id)
    assert result.returncode == 0, result.stderr
    summary = result.summary(2)
    assert summary["attempt"] == 1 and (result.meta / "task-2-stdout.txt").read_text() == "third\n"


def test_clowdr_task_reruns_one_task_file_here(clowdr, provdir, tmp_path):
    first = clowdr("local", ECHO, DATA / "echo-invocations", provdir, "--setup")
    task_file = first.meta / "task-2.json"
    result = clowdr("task", task_file)
    assert result.returncode == 0, result.stderr
    summary = json.loads((first.meta / "task-2-summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["attempt"] == 1
    assert (first.meta / "task-2-stdout.txt").read_text() == "world\nworld\n"
    again = clowdr("task", task_file)
    assert again.returncode == 0
    assert json.loads((first.meta / "task-2-summary.json").read_text())["attempt"] == 2

    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    moved = clowdr("task", task_file, first.meta / "task-3.json", "-p", elsewhere, "-w", tmp_path / "w")
    assert moved.returncode == 1                                  # task 3 fails on purpose
    run = next(elsewhere.iterdir()) / "clowdr"
    assert json.loads((run / "task-2-summary.json").read_text())["attempt"] == 1
    assert json.loads((run / "task-3-summary.json").read_text())["exitcode"] == 3
    assert (tmp_path / "w" / "planet.txt").exists()


def test_clowdr_task_on_an_original_tool_task_file(clowdr, original_run):
    provdir, run_id = original_run
    meta = provdir / run_id / "clowdr"
    result = clowdr("task", meta / "task-2.json", "-V")
    assert result.returncode == 0, result.stderr
    assert (meta / "task-2-stdout.txt").read_text() == "third\n"


def test_sleep_rerun_uses_the_recorded_descriptor(clowdr, provdir, tmp_path):
    """The rerun reads the descriptor copy in the run, whatever descriptor path is given now."""
    descriptor = tmp_path / "sleep.json"
    shutil.copy(DATA / "sleep.json", descriptor)
    first = clowdr("local", descriptor, write_json(tmp_path / "i.json", {"seconds": 0, "code": 7}), provdir)
    descriptor.write_text("not json any more")
    again = clowdr("local", descriptor, tmp_path / "i.json", provdir, "-R", "failed", "--run_id", first.meta.parent.name)
    assert again.returncode == 1 and again.summary(0)["attempt"] == 2
